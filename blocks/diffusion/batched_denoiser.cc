#include "blocks/diffusion/batched_denoiser.h"

#include <ATen/ATen.h>
#include <glog/logging.h>

#include <chrono>
#include <deque>
#include <exception>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace loopserve {
namespace {

using Clock = std::chrono::steady_clock;

// What a call must share with others to join their forward (Note [step
// batching]): everything about its tensors but the batch dimension, and
// the identity of a shared argument.
std::string CompatibilityKey(const at::Tensor& sample,
                             std::span<const ModelArgument> arguments,
                             std::span<const at::Tensor> conditioning) {
  auto describe = [](std::string& key, const at::Tensor& t) {
    absl::StrAppend(&key, c10::toString(t.scalar_type()), "@", t.device().str(),
                    "[");
    for (int64_t d = 1; d < t.dim(); ++d) absl::StrAppend(&key, t.size(d), ",");
    absl::StrAppend(&key, "]");
  };
  std::string key;
  describe(key, sample);
  for (size_t i = 0; i < conditioning.size(); ++i) {
    const at::Tensor& value = conditioning[i];
    if (!value.defined()) {
      absl::StrAppend(&key, "|-");
    } else if (i < arguments.size() && arguments[i].shared) {
      // Passed as given, not concatenated: only the same tensor fits.
      absl::StrAppend(
          &key, "|=", reinterpret_cast<uintptr_t>(value.unsafeGetTensorImpl()));
    } else {
      absl::StrAppend(&key, "|", value.dim(), ":");
      describe(key, value);
    }
  }
  return key;
}

}  // namespace

// The calls waiting to launch and the runs that make them.
class BatchedDenoiser::Batcher final
    : public RunScope::Member,
      public std::enable_shared_from_this<Batcher> {
 public:
  Batcher(std::shared_ptr<const Denoiser> inner, BatchingOptions options,
          std::string name)
      : inner_(std::move(inner)), options_(options), name_(std::move(name)) {}

  absl::StatusOr<at::Tensor> Predict(const at::Tensor& sample,
                                     const at::Tensor& timestep,
                                     std::span<const at::Tensor> conditioning);

  void OnRunEnd(const RunScope& run) override {
    absl::MutexLock lock(&mu_);
    members_.erase(&run);
    arrivals_.SignalAll();  // the runs waiting for it need not any more
  }

 private:
  struct Call {
    const at::Tensor& sample;
    const at::Tensor& timestep;
    std::span<const at::Tensor> conditioning;
    const RunScope* run;
    std::string key;
    int64_t rows;
    Clock::time_point arrived;
    Clock::time_point launched{};
    bool taken = false;
    bool done = false;
    int64_t batch_rows = 0;
    absl::StatusOr<at::Tensor> result{};
  };
  // A run that has called this denoiser: its last call's key, and whether
  // it is away (between calls) rather than waiting or in a running batch.
  struct Member {
    std::string key;
    bool away = false;
  };

  // The calls of the batch with `key` to launch now, oldest first; empty
  // when it should wait, until `deadline` at the latest (when it launches
  // if nobody else arrives).
  std::vector<Call*> TakeIfReady(const std::string& key, Clock::time_point now,
                                 Clock::time_point& deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `batch` (outside the lock) and fills in each call's result;
  // `observer` (may be null) hears of it.
  void Launch(const std::vector<Call*>& batch, RunScope::Observer* observer);
  absl::StatusOr<at::Tensor> Forward(const std::vector<Call*>& batch) const;

  const std::shared_ptr<const Denoiser> inner_;
  const BatchingOptions options_;
  const std::string name_;

  absl::Mutex mu_;
  // Signalled when a call arrives, a batch is done or a run ends.
  absl::CondVar arrivals_;
  std::deque<Call*> pending_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<const RunScope*, Member> members_ ABSL_GUARDED_BY(mu_);
  // Batches running now (at most options_.lanes).
  int running_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::StatusOr<at::Tensor> BatchedDenoiser::Batcher::Predict(
    const at::Tensor& sample, const at::Tensor& timestep,
    std::span<const at::Tensor> conditioning) {
  // A caller outside a run (a test, a benchmark) is a run for this call.
  std::optional<RunScope> transient;
  RunScope* run = RunScope::Current();
  if (run == nullptr) run = &transient.emplace();
  RunScope::Observer* observer = run->observer();

  Call call{
      .sample = sample,
      .timestep = timestep,
      .conditioning = conditioning,
      .run = run,
      .key = CompatibilityKey(sample, inner_->conditioning(), conditioning),
      .rows = sample.dim() > 0 ? sample.size(0) : 1,
      .arrived = Clock::now()};
  {
    absl::MutexLock lock(&mu_);
    auto [member, joined] = members_.try_emplace(run);
    if (joined) run->Join(shared_from_this());
    member->second = {.key = call.key, .away = false};
    pending_.push_back(&call);
    arrivals_.SignalAll();
    while (!call.done) {
      if (call.taken || running_ >= options_.lanes) {
        arrivals_.Wait(&mu_);  // for its batch, or for a free lane
        continue;
      }
      Clock::time_point deadline = call.arrived + options_.window;
      std::vector<Call*> batch = TakeIfReady(call.key, Clock::now(), deadline);
      if (!batch.empty()) {
        ++running_;
        mu_.Unlock();
        Launch(batch, observer);
        mu_.Lock();
        --running_;
        for (Call* c : batch) {
          c->done = true;
          if (auto it = members_.find(c->run); it != members_.end()) {
            it->second.away = true;
          }
        }
        arrivals_.SignalAll();
        continue;
      }
      const absl::Duration left = absl::FromChrono(deadline - Clock::now());
      arrivals_.WaitWithTimeout(&mu_, std::max(left, absl::ZeroDuration()));
    }
  }
  run->CountModelCall(call.batch_rows);
  if (observer != nullptr) {
    observer->OnBatchWait(
        name_,
        std::chrono::duration<double>(call.launched - call.arrived).count());
  }
  return std::move(call.result);
}

std::vector<BatchedDenoiser::Batcher::Call*>
BatchedDenoiser::Batcher::TakeIfReady(const std::string& key,
                                      Clock::time_point now,
                                      Clock::time_point& deadline) {
  int64_t waiting_rows = 0;
  const Call* oldest = nullptr;  // pending_ is in arrival order
  for (const Call* c : pending_) {
    if (c->key != key) continue;
    waiting_rows += c->rows;
    if (oldest == nullptr) oldest = c;
  }
  if (oldest == nullptr) return {};
  deadline = oldest->arrived + options_.window;
  // With more than one lane free, waiting would leave a lane idle.
  bool ready = options_.lanes - running_ > 1 ||
               waiting_rows >= options_.max_batch_size || now >= deadline;
  if (!ready) {
    ready = true;  // unless a compatible run is still to come
    for (const auto& [run, member] : members_) {
      if (member.away && member.key == key) {
        ready = false;
        break;
      }
    }
  }
  std::vector<Call*> batch;
  if (!ready) return batch;
  int64_t batch_rows = 0;
  for (auto it = pending_.begin(); it != pending_.end();) {
    Call* c = *it;
    if (c->key != key) {
      ++it;
      continue;
    }
    // FIFO; a call of max_batch_size rows or more goes alone.
    if (!batch.empty() && batch_rows + c->rows > options_.max_batch_size) {
      break;
    }
    batch_rows += c->rows;
    c->taken = true;
    batch.push_back(c);
    it = pending_.erase(it);
  }
  return batch;
}

void BatchedDenoiser::Batcher::Launch(const std::vector<Call*>& batch,
                                      RunScope::Observer* observer) {
  const Clock::time_point launched = Clock::now();
  int64_t rows = 0;
  for (Call* c : batch) {
    c->launched = launched;
    rows += c->rows;
  }
  if (observer != nullptr) observer->OnBatchLaunched(name_, rows);
  absl::StatusOr<at::Tensor> out = Forward(batch);
  if (out.ok() && (out->dim() == 0 || out->size(0) != rows)) {
    out = absl::InternalError(absl::StrCat("the denoiser returned ",
                                           out->dim() == 0 ? 0 : out->size(0),
                                           " rows for a batch of ", rows));
  }
  if (!out.ok() && batch.size() > 1) {
    // One run's input may be what the model refused: each alone, so that
    // it fails that run only.
    for (Call* c : batch) {
      c->batch_rows = c->rows;
      c->result = Forward({c});
    }
    return;
  }
  int64_t offset = 0;
  for (Call* c : batch) {
    c->batch_rows = rows;
    if (out.ok()) {
      c->result = out->narrow(0, offset, c->rows);
    } else {
      c->result = out.status();
    }
    offset += c->rows;
  }
}

absl::StatusOr<at::Tensor> BatchedDenoiser::Batcher::Forward(
    const std::vector<Call*>& batch) const {
  try {
    if (batch.size() == 1) {
      const Call& c = *batch.front();
      return inner_->Predict(c.sample, c.timestep, c.conditioning);
    }
    std::vector<at::Tensor> samples;
    std::vector<at::Tensor> timesteps;
    samples.reserve(batch.size());
    timesteps.reserve(batch.size());
    at::ScalarType timestep_dtype = batch.front()->timestep.scalar_type();
    for (const Call* c : batch) {
      samples.push_back(c->sample);
      at::Tensor t = c->timestep.reshape({-1});
      if (t.numel() == 1) t = t.expand({c->rows});
      if (t.numel() != c->rows) {
        return absl::InvalidArgumentError(
            absl::StrCat("the timestep has ", t.numel(), " values for ",
                         c->rows, " samples"));
      }
      timestep_dtype = c10::promoteTypes(timestep_dtype, t.scalar_type());
      timesteps.push_back(std::move(t));
    }
    for (at::Tensor& t : timesteps) t = t.to(timestep_dtype);
    const std::span<const ModelArgument> arguments = inner_->conditioning();
    std::vector<at::Tensor> conditioning;
    const size_t count = batch.front()->conditioning.size();
    conditioning.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      const at::Tensor& first = batch.front()->conditioning[i];
      if (!first.defined() || (i < arguments.size() && arguments[i].shared)) {
        conditioning.push_back(first);  // the same in every call (the key)
        continue;
      }
      std::vector<at::Tensor> parts;
      parts.reserve(batch.size());
      for (const Call* c : batch) parts.push_back(c->conditioning[i]);
      conditioning.push_back(at::cat(parts));
    }
    return inner_->Predict(at::cat(samples), at::cat(timesteps), conditioning);
  } catch (const std::exception& e) {
    // Its text may hold source paths: the log has it, the client not.
    LOG(WARNING) << "batched denoiser call: " << e.what();
    return absl::InternalError(
        "the batched denoiser call failed (the error is in the server log)");
  }
}

BatchedDenoiser::BatchedDenoiser(std::shared_ptr<const Denoiser> inner,
                                 BatchingOptions options, std::string name)
    : inner_(std::move(inner)),
      batcher_(std::make_shared<Batcher>(inner_, options, std::move(name))) {}

BatchedDenoiser::~BatchedDenoiser() = default;

absl::StatusOr<at::Tensor> BatchedDenoiser::Predict(
    const at::Tensor& sample, const at::Tensor& timestep,
    std::span<const at::Tensor> conditioning) const {
  return batcher_->Predict(sample, timestep, conditioning);
}

std::shared_ptr<const Denoiser> BatchAcrossRuns(
    std::shared_ptr<const Denoiser> denoiser, const ComponentContext& context) {
  if (denoiser == nullptr || context.batching.max_batch_size <= 1) {
    return denoiser;
  }
  return std::make_shared<BatchedDenoiser>(std::move(denoiser),
                                           context.batching, context.name);
}

}  // namespace loopserve
