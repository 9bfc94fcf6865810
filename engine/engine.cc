#include "engine/engine.h"

#include <torch/version.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/run_log.h"
#include "util/status_macros.h"
#include "util/user_text.h"

#ifndef LOOPSERVE_VERSION
#define LOOPSERVE_VERSION "unknown"
#endif

namespace loopserve {

Engine::Engine(EngineOptions options)
    : options_(std::move(options)),
      checkpoint_key_(options_.checkpoint_key.has_value()
                          ? *options_.checkpoint_key
                          : CheckpointKey::Random()),
      metrics_(BuildInfo{.version = LOOPSERVE_VERSION,
                         .torch_version = TORCH_VERSION,
                         .device = options_.device.str()}),
      encoder_(options_.stream_encoder_threads),
      executor_(options_.executor) {
  if (options_.stream_idle_timeout > absl::ZeroDuration()) {
    watchdog_ = std::thread([this] { WatchForStalledReaders(); });
  }
}

Engine::~Engine() { Shutdown(); }

void Engine::WatchForStalledReaders() {
  // A quarter of the timeout between looks (at most a second): a stalled
  // run is ended within 1.25 timeouts.
  const absl::Duration tick =
      std::min(options_.stream_idle_timeout / 4, absl::Seconds(1));
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), tick)) {
    std::vector<std::shared_ptr<Run>> runs;
    for (const auto& [run, bytes] : active_) runs.push_back(run);
    mu_.Unlock();
    const absl::Time now = absl::Now();
    for (const auto& run : runs) {
      run->CancelIfStalled(now, options_.stream_idle_timeout);
    }
    mu_.Lock();
  }
}

void Engine::Serve(PipelineCatalog catalog) {
  catalog_ = std::move(catalog);
  for (const auto& pipeline : catalog_.pipelines()) {
    metrics_.AddPipeline(*pipeline);
  }
  serving_.store(true, std::memory_order_release);
}

absl::StatusOr<const PipelineCatalog*> Engine::catalog() const {
  if (!serving_.load(std::memory_order_acquire)) {
    return absl::UnavailableError("the server is still loading its pipelines");
  }
  return &catalog_;
}

absl::StatusOr<v1::ListPipelinesResponse> Engine::ListPipelines() const {
  ASSIGN_OR_RETURN(const PipelineCatalog* catalog, this->catalog());
  v1::ListPipelinesResponse response;
  for (const auto& pipeline : catalog->pipelines()) {
    v1::PipelineSummary* summary = response.add_pipelines();
    summary->set_name(pipeline->name);
    summary->set_description(pipeline->description);
  }
  return response;
}

absl::StatusOr<const Pipeline*> Engine::FindPipeline(
    absl::string_view name) const {
  ASSIGN_OR_RETURN(const PipelineCatalog* catalog, this->catalog());
  if (const Pipeline* pipeline = catalog->Find(name); pipeline != nullptr) {
    return pipeline;
  }
  std::vector<std::string> names;
  for (const auto& pipeline : catalog->pipelines()) {
    names.push_back(pipeline->name);
  }
  return absl::NotFoundError(
      absl::StrCat("pipeline ", QuoteUserText(name),
                   " is not served; available: ", absl::StrJoin(names, ", ")));
}

namespace {

// Note [a checkpoint is a request too]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A checkpoint's signature says this server's key made it, not that what
// it holds is sound: a leaked key forges any content. So its inputs are
// validated as a request's are (ValidateRun: known inputs, types, ranges,
// --max_iterations; the resuming request's own were, already), the
// iteration it continues after must lie inside the loop's count, and its
// carried values must be finite (RestoreCheckpoint).
absl::Status CheckCheckpointRun(const Pipeline& pipeline,
                                v1::Checkpoint& checkpoint,
                                const v1::RunRequest& request,
                                const RunLimits& limits) {
  // The checkpoint's inputs, lent to a request for ValidateRun and given
  // back (no copy on the front's thread). The request's own inputs, which
  // replace some of them, were validated already.
  v1::RunRequest run;
  run.set_pipeline(pipeline.name);
  run.mutable_inputs()->swap(*checkpoint.mutable_inputs());
  const absl::Status valid = ValidateRun(pipeline, run, limits).status();
  run.mutable_inputs()->swap(*checkpoint.mutable_inputs());
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resume_from: the checkpoint's run is not one this server takes: ",
        valid.message()));
  }
  for (const InputParam& param : pipeline.inputs) {
    if (!param.iteration_count) continue;
    // The request's count (a fork may change it), else the checkpoint's.
    const v1::Value* count = nullptr;
    for (const auto* inputs : {&request.inputs(), &checkpoint.inputs()}) {
      if (const auto it = inputs->find(param.name); it != inputs->end()) {
        count = &it->second;
        break;
      }
    }
    const int64_t total =
        count != nullptr && count->kind_case() == v1::Value::kInt64Value
            ? count->int64_value()
            : limits.max_iterations;
    if (checkpoint.iteration() >= total) {
      return absl::InvalidArgumentError(absl::StrCat(
          "resume_from: the checkpoint's iteration ", checkpoint.iteration(),
          " is past the loop's last (input '", param.name, "' is ", total,
          ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<Run>> Engine::StartRun(
    std::shared_ptr<const v1::RunRequest> request, RunEventWriter* writer,
    RunClient client) {
  // A resumed run's pipeline may be left to its checkpoint.
  std::string pipeline = request->pipeline();
  absl::StatusOr<std::shared_ptr<Run>> run =
      [&]() -> absl::StatusOr<std::shared_ptr<Run>> {
    std::optional<v1::Checkpoint> checkpoint;
    if (!request->resume_from().empty()) {
      absl::StatusOr<v1::Checkpoint> opened =
          checkpoint_key_.Open(request->resume_from());
      if (!opened.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("resume_from ", opened.status().message()));
      }
      if (pipeline.empty()) pipeline = opened->pipeline();
      checkpoint = *std::move(opened);
    }
    return CreateRun(request, pipeline, std::move(checkpoint), writer,
                     metrics_.For(pipeline), client);
  }();
  if (!run.ok()) {
    Refuse(run.status(), pipeline, request->request_id(), client);
  }
  return run;
}

absl::StatusOr<std::shared_ptr<Run>> Engine::CreateRun(
    std::shared_ptr<const v1::RunRequest> request,
    absl::string_view pipeline_name, std::optional<v1::Checkpoint> checkpoint,
    RunEventWriter* writer, PipelineMetrics& series, RunClient client) {
  const Run::Clock::time_point accepted = Run::Clock::now();
  ASSIGN_OR_RETURN(const Pipeline* pipeline, FindPipeline(pipeline_name));
  ASSIGN_OR_RETURN(StreamSelection selection,
                   ValidateRun(*pipeline, *request, options_.limits));
  std::optional<ResumeSpec> resume;
  if (checkpoint.has_value()) {
    RETURN_IF_ERROR(
        CheckCheckpointRun(*pipeline, *checkpoint, *request, options_.limits));
    ASSIGN_OR_RETURN(resume, PrepareResume(*pipeline, *std::move(checkpoint),
                                           *request, options_.device));
  }
  const std::string key = client.Key();
  // What the run holds until Release: its request, kept for its life.
  const auto request_bytes = static_cast<int64_t>(request->ByteSizeLong());
  uint64_t number;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) {
      return absl::UnavailableError(
          "the server is shutting down and takes no new runs");
    }
    const int max = options_.max_runs_per_client;
    if (max > 0 && runs_by_client_[key] >= max) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "this client (", QuoteUserText(key), ") already has ", max,
          " runs queued or running, the server's limit per client "
          "(--max_runs_per_client=",
          max, "); retry when one ends"));
    }
    RETURN_IF_ERROR(AddRequestBytesLocked(request_bytes));
    // Counted now, under the same lock as the checks (Untrack uncounts).
    ++runs_by_client_[key];
    number = ++next_run_;
  }
  const RunEnvironment environment{.metrics = metrics_,
                                   .stream = stream_options(),
                                   .limits = options_.limits.decode,
                                   .device = options_.device,
                                   .checkpoint_key = checkpoint_key_};
  auto run = std::make_shared<Run>(environment, absl::StrCat("run-", number),
                                   std::move(request), *pipeline, series,
                                   std::move(selection), writer, accepted,
                                   std::move(client), std::move(resume));
  {
    absl::MutexLock lock(&mu_);
    active_.emplace(run, request_bytes);
  }
  if (absl::Status status = run->Submit(executor_); !status.ok()) {
    Untrack(run);
    return status;
  }
  return run;
}

void Engine::Refuse(const absl::Status& status, absl::string_view pipeline,
                    absl::string_view request_id, const RunClient& client) {
  ReportOutcome(metrics_, {.pipeline = &metrics_.For(pipeline),
                           .request_id = request_id,
                           .principal = client.principal,
                           .peer = client.peer,
                           .status = status,
                           .refused = true});
}

void Engine::Release(const std::shared_ptr<Run>& run,
                     const absl::Status& seen) {
  run->Report(seen);
  Untrack(run);
}

void Engine::Untrack(const std::shared_ptr<Run>& run) {
  absl::MutexLock lock(&mu_);
  const auto active = active_.find(run);
  if (active == active_.end()) return;
  request_bytes_ -= active->second;
  active_.erase(active);
  const auto count = runs_by_client_.find(run->client().Key());
  if (count != runs_by_client_.end() && --count->second == 0) {
    runs_by_client_.erase(count);
  }
}

absl::Status Engine::AddRequestBytesLocked(int64_t bytes) {
  const int64_t max = options_.max_request_bytes_in_flight;
  if (max > 0 && request_bytes_ + bytes > max) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server holds ", request_bytes_,
                     " bytes of requests in flight; "
                     "this request's ",
                     bytes,
                     " would pass its bound "
                     "(--max_request_bytes_in_flight=",
                     max, "); retry when runs end"));
  }
  request_bytes_ += bytes;
  return absl::OkStatus();
}

void Engine::ReleaseRequestBytes(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  request_bytes_ -= bytes;
}

absl::StatusOr<RequestBytesHold> Engine::HoldRequestBytes(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(AddRequestBytesLocked(bytes));
  return RequestBytesHold(this, bytes);
}

int64_t Engine::request_bytes_in_flight() const {
  absl::MutexLock lock(&mu_);
  return request_bytes_;
}

RequestBytesHold& RequestBytesHold::operator=(
    RequestBytesHold&& other) noexcept {
  if (this != &other) {
    if (engine_ != nullptr) engine_->ReleaseRequestBytes(bytes_);
    engine_ = std::exchange(other.engine_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

RequestBytesHold::~RequestBytesHold() {
  if (engine_ != nullptr) engine_->ReleaseRequestBytes(bytes_);
}

absl::Status RequestBytesHold::Grow(int64_t more) {
  absl::MutexLock lock(&engine_->mu_);
  RETURN_IF_ERROR(engine_->AddRequestBytesLocked(more));
  bytes_ += more;
  return absl::OkStatus();
}

void Engine::StartDraining() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool Engine::WaitForIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithDeadline(
            absl::Condition(
                +[](absl::flat_hash_map<std::shared_ptr<Run>, int64_t>*
                        active) { return active->empty(); },
                &active_),
            deadline)) {
      return false;
    }
  }
  // Runs cancelled while queued are released at once, but their tasks hold
  // queue room until a worker skips them: idle means those are gone too.
  return executor_.WaitForIdle(deadline - absl::Now());
}

void Engine::CancelAll(const absl::Status& status) {
  std::vector<std::shared_ptr<Run>> runs;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [run, bytes] : active_) runs.push_back(run);
  }
  for (const auto& run : runs) run->Cancel(status);
}

void Engine::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watchdog_.joinable()) watchdog_.join();
  executor_.Shutdown();
}

}  // namespace loopserve
