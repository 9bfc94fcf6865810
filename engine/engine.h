// Engine: loopserve's run engine, between the block model (blocks/) and the
// fronts that speak a protocol (server/: loopserve.v1 and the Open Inference
// Protocol over gRPC, and HTTP). It holds the pipelines served, admits and
// runs requests on its executor, and counts and logs every run; a front
// only translates its protocol to and from it. No protocol here: every
// front drives the same Engine and gets the same validation, limits,
// metrics and logs.
//
//   Engine engine(options);                 // not serving yet: UNAVAILABLE
//   engine.Serve(std::move(catalog));       // the pipelines; series created
//   // per call:
//   absl::StatusOr<std::shared_ptr<Run>> run =
//       engine.StartRun(request, &writer);  // refused: counted, logged
//   ...
//   engine.Release(*run, told);             // done: counted, logged
//   // shutdown:
//   engine.StartDraining();
//   if (!engine.WaitForIdle(grace)) engine.CancelAll(status);
//
// Thread-safety: Serve once, from one thread; every other method from any
// thread. Runs reference the catalog, so the Engine outlives them.
#pragma once

#include <c10/core/Device.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/checkpoint.h"
#include "engine/metrics.h"
#include "engine/pipeline_catalog.h"
#include "engine/run.h"
#include "engine/run_executor.h"
#include "engine/run_request.h"
#include "engine/run_stream.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

struct EngineOptions {
  RunLimits limits;
  RunStreamOptions stream;
  RunExecutorOptions executor;
  // Threads of the engine's StreamEncoder (--stream_encoder_threads).
  int stream_encoder_threads = 4;
  // Where runs' tensors live: the server's --device.
  c10::Device device = c10::kCPU;
  // A run whose client has taken no message for this long is ended with
  // DEADLINE_EXCEEDED (Note [stalled readers] in run_stream.h); zero or
  // less: never.
  absl::Duration stream_idle_timeout = absl::ZeroDuration();
  // Most runs one client (RunClient::Key) may have queued or running;
  // 0: no limit.
  int max_runs_per_client = 0;
  // Signs and checks checkpoints (--checkpoint_key_file); when unset, a
  // random key: checkpoints then resume only in this process.
  std::optional<CheckpointKey> checkpoint_key{};
  // Most request bytes the server holds at once (--max_request_bytes_in_
  // flight): the requests of runs queued or running, and bodies the HTTP
  // front is reading. Past it a request is RESOURCE_EXHAUSTED. 0: no bound.
  int64_t max_request_bytes_in_flight = int64_t{1} << 30;
};

class Engine;

// A hold on request bytes under EngineOptions::max_request_bytes_in_flight
// (Engine::HoldRequestBytes), given back when destroyed.
class RequestBytesHold {
 public:
  RequestBytesHold(RequestBytesHold&& other) noexcept
      : engine_(std::exchange(other.engine_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  RequestBytesHold& operator=(RequestBytesHold&& other) noexcept;
  ~RequestBytesHold();

  // Holds `more` bytes too; RESOURCE_EXHAUSTED (holding what it held) past
  // the bound.
  absl::Status Grow(int64_t more);
  int64_t bytes() const { return bytes_; }

 private:
  friend class Engine;
  RequestBytesHold(Engine* engine, int64_t bytes)
      : engine_(engine), bytes_(bytes) {}
  Engine* engine_ = nullptr;
  int64_t bytes_ = 0;
};

class Engine {
 public:
  explicit Engine(EngineOptions options);
  // Shuts down: lets queued runs run, then joins the workers.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Serves `catalog` from now on: its metric series are created first.
  // Once.
  void Serve(PipelineCatalog catalog);

  // The catalog; UNAVAILABLE until Serve.
  absl::StatusOr<const PipelineCatalog*> catalog() const;
  // Every pipeline's name and description (ListPipelines, on any front);
  // UNAVAILABLE until Serve.
  absl::StatusOr<v1::ListPipelinesResponse> ListPipelines() const;
  // The pipeline `name`; UNAVAILABLE until Serve, NOT_FOUND naming the
  // pipelines served.
  absl::StatusOr<const Pipeline*> FindPipeline(absl::string_view name) const;

  // Validates `request` (ValidateRun; with resume_from, the checkpoint:
  // PrepareResume) and queues its run, which streams to
  // `writer` (Note [finishing] in run_stream.h: its Finish is called once,
  // and last); the front then calls Release. The error that refuses it
  // otherwise (UNAVAILABLE while loading or draining, NOT_FOUND,
  // INVALID_ARGUMENT, RESOURCE_EXHAUSTED: the server's or `client`'s
  // share is full), counted and logged already; the front finishes its
  // call with it.
  absl::StatusOr<std::shared_ptr<Run>> StartRun(
      std::shared_ptr<const v1::RunRequest> request, RunEventWriter* writer,
      RunClient client = {});
  // A call that ended before it could become a run (its request never
  // arrived, or did not parse): counted and logged with `status`, for the
  // pipeline `pipeline` names ("unknown" when none is served by that name).
  void Refuse(const absl::Status& status, absl::string_view pipeline = "",
              absl::string_view request_id = "", const RunClient& client = {});
  // The front is done with `run`, whose client was told `seen`: the status
  // the run finished with, or, when the call was cancelled before that
  // reached the client, the client's own CANCELLED or DEADLINE_EXCEEDED.
  // Counts and logs it (Run::Report).
  void Release(const std::shared_ptr<Run>& run, const absl::Status& seen);

  // A hold on `bytes` of a request being received (the HTTP front's body),
  // or RESOURCE_EXHAUSTED naming the bound. Runs hold their requests' own
  // bytes from StartRun to Release.
  absl::StatusOr<RequestBytesHold> HoldRequestBytes(int64_t bytes);
  // Request bytes held now.
  int64_t request_bytes_in_flight() const;

  // From now on, new runs get UNAVAILABLE.
  void StartDraining();
  // Waits until no run is in flight and the executor has nothing queued
  // or running, or `timeout` passes; true when so.
  bool WaitForIdle(absl::Duration timeout);
  // Stops every run in flight at its next iteration boundary.
  void CancelAll(const absl::Status& status);
  // Stops taking runs, lets the queued ones run, and joins the workers and
  // the watchdog.
  void Shutdown();

  const EngineOptions& options() const { return options_; }
  const CheckpointKey& checkpoint_key() const { return checkpoint_key_; }
  Metrics& metrics() { return metrics_; }
  const RunExecutor& executor() const { return executor_; }
  // The options of a run's stream: options().stream, with the engine's
  // StreamEncoder.
  RunStreamOptions stream_options() {
    RunStreamOptions stream = options_.stream;
    stream.encoder = &encoder_;
    return stream;
  }

 private:
  friend class RequestBytesHold;
  void Untrack(const std::shared_ptr<Run>& run);
  // Adds `bytes` to request_bytes_, or RESOURCE_EXHAUSTED past the bound.
  absl::Status AddRequestBytesLocked(int64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseRequestBytes(int64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // StartRun's work; the refusal is reported by StartRun.
  absl::StatusOr<std::shared_ptr<Run>> CreateRun(
      std::shared_ptr<const v1::RunRequest> request,
      absl::string_view pipeline_name, std::optional<v1::Checkpoint> checkpoint,
      RunEventWriter* writer, PipelineMetrics& series, RunClient client);
  // The watchdog's thread: ends stalled runs (Note [stalled readers]).
  void WatchForStalledReaders();

  const EngineOptions options_;
  const CheckpointKey checkpoint_key_;
  Metrics metrics_;
  PipelineCatalog catalog_;
  std::atomic<bool> serving_{false};
  // Before the executor: its runs' writes finish here.
  StreamEncoder encoder_;
  RunExecutor executor_;

  mutable absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // Runs queued or running, and the request bytes each holds.
  absl::flat_hash_map<std::shared_ptr<Run>, int64_t> active_
      ABSL_GUARDED_BY(mu_);
  int64_t request_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Runs queued or running, by RunClient::Key (with max_runs_per_client).
  absl::flat_hash_map<std::string, int> runs_by_client_ ABSL_GUARDED_BY(mu_);
  uint64_t next_run_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watchdog_;
};

}  // namespace loopserve
