// Run: one run's whole life, from the request a front accepted to the
// outcome its client hears: queueing, decoding its inputs, executing the
// pipeline's block tree, streaming its iterations and result (RunStream),
// its stats, its metrics and its log line, timed on one clock.
//
//   // The engine creates runs (Engine::StartRun); a front drives them:
//   ASSIGN_OR_RETURN(std::shared_ptr<Run> run,
//                    engine.StartRun(request, &front_writer));
//   ... front_writer.OnWriteDone → run->OnWriteDone(ok)
//   ... the client cancelled   → run->Cancel(absl::CancelledError(...))
//   ... the front is done      → engine.Release(run)
//
// Timing (Note [one clock]): every duration of a run comes from one
// steady clock, read when it was accepted, when a worker started it and
// when it ended. RunStarted.queue_ms, RunStats.queue_ms and
// loopserve_queue_duration_seconds are the same interval; RunStats.run_ms
// and loopserve_run_duration_seconds too.
//
// Outcome: Finish is reached exactly once (Note [finishing] in
// run_stream.h) and hands the front the status to send. When the front is
// done with the call it tells the engine what its client was told
// (Engine::Release), and the run is counted and logged with that: a client
// that cancelled while our status was on its way saw CANCELLED, not it.
//
// Thread-safety: Execute runs on an executor thread; OnWriteDone and Cancel
// may be called from any thread (the front's). A Run must outlive the
// task that executes it and every call the front makes; hold it by
// shared_ptr.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "engine/checkpoint.h"
#include "engine/pipeline_catalog.h"
#include "engine/run_executor.h"
#include "engine/run_stream.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

class Metrics;

// What a run uses of the engine that made it, fixed for the engine's life
// (Engine::StartRun fills it): the server's metrics, its streams' options,
// its input limits and device, and the key its checkpoints are signed with.
struct RunEnvironment {
  Metrics& metrics;
  RunStreamOptions stream;
  const DecodeLimits& limits;
  c10::Device device;
  const CheckpointKey& checkpoint_key;
};

// Who sent a run: what --max_runs_per_client counts by, and what its log
// line names.
struct RunClient {
  // The authenticated principal (a token's, a client certificate's); empty
  // when the server authenticates no one.
  std::string principal{};
  // The peer's address as gRPC reports it: ipv4:10.0.0.7:51234.
  std::string peer{};
  // What runs are counted by: the principal, else the peer's host (its
  // address without the port: one client's connections are one client).
  std::string Key() const;
};

class Run final : public std::enable_shared_from_this<Run>,
                  private RunEventWriter {
 public:
  using Clock = std::chrono::steady_clock;

  // A validated run of `pipeline`, streaming to `front`. `accepted`: when
  // its front took the request. `resume`: where a resumed run continues
  // (PrepareResume).
  Run(const RunEnvironment& environment, std::string id,
      std::shared_ptr<const v1::RunRequest> request, const Pipeline& pipeline,
      PipelineMetrics& metrics, StreamSelection selection,
      RunEventWriter* front, Clock::time_point accepted, RunClient client = {},
      std::optional<ResumeSpec> resume = {});

  // Queues the run on `executor`; RESOURCE_EXHAUSTED (or UNAVAILABLE)
  // when it takes no more. A refused run never reaches Finish.
  absl::Status Submit(RunExecutor& executor);

  // ---- The front's side. ----
  void OnWriteDone(bool ok) { stream_.OnWriteDone(ok); }
  // Stops the run at its next iteration boundary (or before it starts).
  void Cancel(absl::Status status) { stream_.Cancel(std::move(status)); }
  // Note [stalled readers] in run_stream.h.
  bool CancelIfStalled(absl::Time now, absl::Duration timeout) {
    return stream_.CancelIfStalled(now, timeout);
  }

  // "run-7": what RunStarted.run_id and the log line say.
  const std::string& id() const { return id_; }
  const RunClient& client() const { return client_; }

  // Counts and logs the run's outcome (ReportOutcome): `seen` is what its
  // client was told. Once, after Finish; Engine::Release calls it.
  void Report(const absl::Status& seen);

 private:
  // On an executor thread: decode, execute, end.
  void Execute();

  // RunEventWriter, for the stream: writes and the Finish go to the front.
  void StartWrite(std::shared_ptr<const v1::RunEvent> event) override;
  void Finish(const absl::Status& status) override;
  void Abort() override { front_->Abort(); }

  static double Milliseconds(Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
  }

  const RunEnvironment environment_;
  const std::string id_;
  const std::shared_ptr<const v1::RunRequest> request_;
  const Pipeline& pipeline_;
  PipelineMetrics& metrics_;
  RunEventWriter* const front_;
  const RunClient client_;
  const std::optional<ResumeSpec> resume_;
  RunStream stream_;

  // Note [one clock]. Written on the run's thread before the stream can
  // finish, and `finish_time_` in Finish, so Report reads them safely.
  const Clock::time_point accepted_;
  bool started_ = false;
  Clock::time_point start_time_{};
  Clock::time_point end_time_{};
  Clock::time_point finish_time_{};
  // RunStats.mean_batch_size; written on the run's thread, as the times.
  double mean_batch_size_ = 0;
};

}  // namespace loopserve
