#include "engine/run_stream.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "blocks/core/loop.h"
#include "engine/tensor_codec.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

bool Contains(const std::vector<std::string>& names, absl::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

RunStream::RunStream(std::string run_id, std::string request_id,
                     StreamSelection selection, RunStreamOptions options,
                     RunEventWriter* writer, PipelineMetrics* metrics)
    : run_id_(std::move(run_id)),
      request_id_(std::move(request_id)),
      selection_(std::move(selection)),
      options_(options),
      writer_(writer),
      metrics_(metrics),
      preview_reads_(selection_.preview != nullptr
                         ? selection_.preview->reads()
                         : std::vector<std::string>()) {}

bool RunStream::Begin(double queue_ms, v1::RunStarted started) {
  queue_ms_ = queue_ms;
  started_ = std::move(started);
  Action action;
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kDone) return false;  // cancelled while queued
    phase_ = Phase::kRunning;
    started_pending_ = true;
    action = Pump();
  }
  Act(action);
  return true;
}

absl::Status RunStream::OnIteration(const LoopIteration& iteration) {
  ++iterations_;
  if (cancel_requested_.load(std::memory_order_relaxed)) {
    absl::MutexLock lock(&mu_);
    return cancel_status_;
  }
  const LoopIndex& index = iteration.index;
  const bool last = index.total > 0 && index.i == index.total - 1;
  if (!last && (index.i + 1) % selection_.every != 0) return absl::OkStatus();

  // Note [iteration reuse]
  // ~~~~~~~~~~~~~~~~~~~~~~
  // Iteration messages come back from the writer once written (when no
  // slice of the wire holds them: Note [zero-copy tensors]) and are encoded
  // into again: their values map keeps its nodes, and a tensor keeps its
  // byte buffer, so a streamed CPU value costs no allocation once the
  // stream is warm; a device value's host copy and its Deferred record are
  // made per iteration. Keys this iteration does not set are erased.
  if (next_item_ == nullptr) next_item_ = std::make_unique<v1::Iteration>();
  Filling filling{.item = *next_item_};
  RETURN_IF_ERROR(FillValues(iteration, filling));
  RETURN_IF_ERROR(FillPreview(iteration, filling));
  RETURN_IF_ERROR(FillCheckpoint(iteration, filling));
  if (filling.filled == 0)
    return absl::OkStatus();  // nothing asked of this loop
  v1::Iteration& item = filling.item;
  item.set_index(index.i);
  item.set_total(index.total);
  item.set_loop(iteration.loop.path());
  item.set_dropped_before(0);
  return Enqueue(filling.bytes, std::move(filling.deferred));
}

RunStream::Deferred& RunStream::Filling::Defer() {
  if (deferred == nullptr) deferred = std::make_unique<Deferred>();
  return *deferred;
}

absl::Status RunStream::FillValues(const LoopIteration& iteration,
                                   Filling& filling) {
  // Encoded here (CPU values), or their copies off the device started
  // (Note [deferred encoding]).
  auto& values = *filling.item.mutable_values();
  size_t filled = 0;
  for (const OutputParam& output :
       iteration.loop.signature().intermediate_outputs) {
    if (!Contains(selection_.values, output.name)) continue;
    const c10::IValue* value = iteration.state.Find(output.name);
    if (value == nullptr || value->isNone()) continue;
    v1::Value& encoded = values[output.name];
    ++filled;
    if (value->isTensor() &&
        (!value->toTensor().is_cpu() || options_.defer_cpu_values)) {
      const at::Tensor& tensor = value->toTensor();
      // Refused now, as an inline encoding would be: the encoder's
      // EncodeValue then cannot fail.
      if (absl::StatusOr<std::string> datatype =
              DatatypeFromScalarType(tensor.scalar_type());
          !datatype.ok()) {
        return absl::Status(datatype.status().code(),
                            absl::StrCat("iteration output '", output.name,
                                         "': ", datatype.status().message()));
      }
      filling.bytes += static_cast<int64_t>(tensor.nbytes());
      filling.Defer().values.emplace_back(output.name, HostCopy::Start(tensor));
      continue;
    }
    if (absl::Status s = EncodeValue(*value, encoded); !s.ok()) {
      return absl::Status(
          s.code(),
          absl::StrCat("iteration output '", output.name, "': ", s.message()));
    }
    filling.bytes += EncodedPayloadBytes(encoded);
  }
  // Note [iteration reuse]: what an earlier iteration set and this one did
  // not is erased.
  if (values.size() != filled) {
    for (auto it = values.begin(); it != values.end();) {
      const c10::IValue* value = iteration.state.Find(it->first);
      const bool set = Contains(selection_.values, it->first) &&
                       value != nullptr && !value->isNone();
      it = set ? std::next(it) : values.erase(it);
    }
  }
  filling.filled += filled;
  return absl::OkStatus();
}

absl::Status RunStream::FillPreview(const LoopIteration& iteration,
                                    Filling& filling) {
  filling.item.clear_preview_png();
  if (DefersPreviews()) {
    Deferred& later = filling.Defer();
    for (const std::string& name : preview_reads_) {
      const c10::IValue* value = iteration.state.Find(name);
      if (value != nullptr && value->isTensor()) {
        later.preview_inputs.emplace_back(name,
                                          HostCopy::Start(value->toTensor()));
      }
    }
    ++filling.filled;
  } else if (selection_.preview != nullptr) {
    absl::StatusOr<std::string> png =
        selection_.preview->RenderPng(iteration.state);
    if (!png.ok()) {
      return absl::Status(png.status().code(),
                          absl::StrCat("preview: ", png.status().message()));
    }
    filling.bytes += static_cast<int64_t>(png->size());
    if (!png->empty()) {
      filling.item.set_preview_png(*std::move(png));
      ++filling.filled;
    }
  }
  return absl::OkStatus();
}

absl::Status RunStream::FillCheckpoint(const LoopIteration& iteration,
                                       Filling& filling) {
  filling.item.clear_checkpoint();
  if (!checkpointer_) return absl::OkStatus();
  absl::StatusOr<std::string> checkpoint = checkpointer_(iteration);
  if (!checkpoint.ok()) {
    return absl::Status(
        checkpoint.status().code(),
        absl::StrCat("checkpoint of iteration ", iteration.index.i,
                     " of loop '", iteration.loop.path(),
                     "': ", checkpoint.status().message()));
  }
  filling.bytes += static_cast<int64_t>(checkpoint->size());
  filling.item.set_checkpoint(*std::move(checkpoint));
  ++filling.filled;
  return absl::OkStatus();
}

absl::Status RunStream::Enqueue(int64_t bytes,
                                std::unique_ptr<Deferred> deferred) {
  v1::Iteration& item = *next_item_;
  Action action;
  {
    absl::MutexLock lock(&mu_);
    if (selection_.latest) {
      // Note [backpressure]: replace what the writer has not taken yet.
      for (Pending& stale : pending_) {
        item.set_dropped_before(item.dropped_before() +
                                stale.item->dropped_before() + 1);
        ++dropped_;
        Recycle(std::move(stale.item));
      }
      if (metrics_ != nullptr && !pending_.empty()) {
        metrics_->iterations_dropped->Increment(
            static_cast<double>(pending_.size()));
      }
      pending_.clear();
      pending_bytes_ = 0;
    } else {
      mu_.Await(absl::Condition(this, &RunStream::QueueHasRoom));
    }
    if (cancelled_) return cancel_status_;
    pending_bytes_ += bytes;
    pending_.push_back({std::move(next_item_), bytes, std::move(deferred)});
    if (!spare_.empty()) {
      next_item_ = std::move(spare_.back());
      spare_.pop_back();
    }
    action = Pump();
  }
  Act(action);
  return absl::OkStatus();
}

void RunStream::Recycle(std::unique_ptr<v1::Iteration> item) {
  if (static_cast<int64_t>(spare_.size()) < options_.max_queued_iterations) {
    spare_.push_back(std::move(item));
  }
}

bool RunStream::QueueHasRoom() const {
  return cancelled_ || pending_.empty() ||
         (static_cast<int64_t>(pending_.size()) <
              options_.max_queued_iterations &&
          pending_bytes_ < options_.max_queued_bytes);
}

void RunStream::End(const absl::Status& status, const PipelineState& state,
                    const v1::RunStats& stats) {
  std::unique_ptr<v1::RunEvent> result;
  absl::Status end = status;
  if (end.ok()) {
    result = std::make_unique<v1::RunEvent>();
    v1::RunResult* run_result = result->mutable_result();
    for (const std::string& name : selection_.outputs) {
      const c10::IValue* value = state.GetIntermediate(name);
      if (value == nullptr || value->isNone()) continue;
      end = EncodeValue(*value, (*run_result->mutable_outputs())[name]);
      if (!end.ok()) {
        end = absl::Status(
            end.code(), absl::StrCat("output '", name, "': ", end.message()));
        result.reset();
        break;
      }
    }
    if (result != nullptr) *run_result->mutable_stats() = stats;
  }
  Action action;
  {
    absl::MutexLock lock(&mu_);
    phase_ = Phase::kDone;
    end_status_ = std::move(end);
    result_ = std::move(result);
    action = Pump();
  }
  Act(action);
}

void RunStream::OnWriteDone(bool ok) {
  Action action;
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (current_.use_count() > 1) {
      // gRPC still holds slices of it: leave it to them.
      current_ = std::make_shared<v1::RunEvent>();
    } else {
      if (current_->has_iterations()) {
        auto* items = current_->mutable_iterations()->mutable_items();
        while (!items->empty()) {
          Recycle(std::unique_ptr<v1::Iteration>(items->ReleaseLast()));
        }
      }
      current_->Clear();
    }
    if (!ok && !cancelled_) {
      // The client is gone: stop the run as a cancel would.
      cancelled_ = true;
      cancel_status_ = absl::CancelledError("the client stopped reading");
      cancel_requested_.store(true, std::memory_order_relaxed);
    }
    action = Pump();
  }
  Act(action);
}

void RunStream::Cancel(absl::Status status) {
  Action action;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_ || finished_) return;
    cancelled_ = true;
    cancel_status_ = std::move(status);
    cancel_requested_.store(true, std::memory_order_relaxed);
    if (phase_ == Phase::kQueued) {
      phase_ = Phase::kDone;  // Note [finishing]: Begin() will say no
      end_status_ = cancel_status_;
    }
    action = Pump();
  }
  Act(action);
}

bool RunStream::CancelIfStalled(absl::Time now, absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (!write_in_flight_ || finished_ || aborting_ ||
        now - write_started_ < timeout) {
      return false;
    }
    aborting_ = true;
  }
  // What was measured: how long the write in flight has been going, not
  // whether the client read any of it (a slow reader of a large message is
  // as stalled as one that reads nothing).
  Cancel(absl::DeadlineExceededError(absl::StrCat(
      "the message being sent to the client did not finish within ",
      absl::FormatDuration(timeout),
      " (the server's --stream_idle_timeout_s): the client read too slowly "
      "or not at all; the run was ended to free its slot")));
  writer_->Abort();
  Action action;
  {
    absl::MutexLock lock(&mu_);
    aborting_ = false;
    action = Pump();
  }
  Act(action);
  return true;
}

RunStream::Action RunStream::Pump() {
  if (write_in_flight_ || finished_ || aborting_) return {};
  auto finish = [this](absl::Status status) {
    finished_ = true;
    return Action{Action::kFinish, std::move(status)};
  };
  if (cancelled_) {
    // Nothing more is worth sending; finish once the run stops.
    pending_.clear();
    pending_bytes_ = 0;
    if (phase_ != Phase::kDone) return {};
    return finish(end_status_.ok() ? cancel_status_ : end_status_);
  }
  if (started_pending_) {
    started_pending_ = false;
    v1::RunStarted* started = current_->mutable_started();
    *started = std::move(started_);
    started->set_run_id(run_id_);
    started->set_request_id(request_id_);
    started->set_queue_ms(queue_ms_);
  } else if (!pending_.empty()) {
    v1::IterationBatch* batch = current_->mutable_iterations();
    int64_t bytes = 0;
    while (!pending_.empty() &&
           (batch->items_size() == 0 ||
            bytes + pending_.front().bytes <= options_.max_batch_bytes)) {
      Pending& next = pending_.front();
      bytes += next.bytes;
      if (next.deferred != nullptr) {
        completing_.push_back({next.item.get(), std::move(next.deferred)});
      }
      batch->mutable_items()->AddAllocated(next.item.release());
      pending_.pop_front();
    }
    pending_bytes_ -= bytes;
    sent_ += batch->items_size();
    if (metrics_ != nullptr) {
      metrics_->iterations_streamed->Increment(batch->items_size());
      metrics_->stream_bytes->Increment(static_cast<double>(bytes));
    }
  } else if (phase_ != Phase::kDone) {
    return {};  // idle until the run produces more
  } else if (!end_status_.ok()) {
    return finish(end_status_);
  } else if (result_ != nullptr) {
    current_->Swap(result_.get());
    result_.reset();
    v1::RunStats* stats = current_->mutable_result()->mutable_stats();
    stats->set_iterations_sent(sent_);
    stats->set_iterations_dropped(dropped_);
    result_written_ = true;
  } else if (result_written_) {
    return finish(absl::OkStatus());
  } else {
    return {};
  }
  write_in_flight_ = true;
  write_started_ = absl::Now();
  return {Action::kWrite, absl::OkStatus()};
}

void RunStream::Act(const Action& action) {
  switch (action.kind) {
    case Action::kNone:
      return;
    case Action::kWrite:
      if (completing_.empty()) {
        writer_->StartWrite(current_);
      } else if (options_.encoder != nullptr) {
        options_.encoder->Post([this] { CompleteWrite(); });
      } else {
        CompleteWrite();
      }
      return;
    case Action::kFinish:
      writer_->Finish(action.status);
      return;
  }
}

void RunStream::CompleteWrite() {
  absl::Status status;
  for (Completing& completing : completing_) {
    status = Complete(*completing.item, *completing.deferred);
    if (!status.ok()) break;
  }
  completing_.clear();
  if (status.ok()) {
    writer_->StartWrite(current_);
    return;
  }
  // Nothing was written: end the run with the reason, as a failure on the
  // loop's thread would have.
  Action action;
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    current_->Clear();
    if (!cancelled_) {
      cancelled_ = true;
      cancel_status_ = std::move(status);
      cancel_requested_.store(true, std::memory_order_relaxed);
    }
    action = Pump();
  }
  Act(action);
}

absl::Status RunStream::Complete(v1::Iteration& item,
                                 Deferred& deferred) const {
  auto& values = *item.mutable_values();
  for (auto& [name, copy] : deferred.values) {
    RETURN_IF_ERROR(EncodeValue(c10::IValue(copy.Wait()), values[name]));
  }
  if (!DefersPreviews()) return absl::OkStatus();
  BlockState inputs;
  for (auto& [name, copy] : deferred.preview_inputs) {
    inputs.Set(name, copy.Wait());
  }
  absl::StatusOr<std::string> png = selection_.preview->RenderPng(inputs);
  if (!png.ok()) {
    return absl::Status(png.status().code(),
                        absl::StrCat("preview: ", png.status().message()));
  }
  if (metrics_ != nullptr) {
    metrics_->stream_bytes->Increment(static_cast<double>(png->size()));
  }
  item.set_preview_png(*std::move(png));
  return absl::OkStatus();
}

}  // namespace loopserve
