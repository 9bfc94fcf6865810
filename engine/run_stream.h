// RunStream: one run's events, between its loop and the front that writes
// them (a gRPC reactor, an HTTP event stream), owned by the run
// (engine/run.h).
//
// The loop side (an executor thread) calls Begin, then OnIteration after
// every iteration (RunStream is the run's IterationObserver), then End. The
// front calls OnWriteDone and Cancel. RunStream encodes what the client
// selected and turns it into the stream's events: RunStarted,
// IterationBatches, RunResult, and exactly one Finish, with at most one
// write in flight. It keeps no clock: the run says when it was queued and
// how long it took.
//
// Note [backpressure]
// ~~~~~~~~~~~~~~~~~~~
// Between the loop and the writer is a bounded queue of iterations: CPU
// values already encoded, device values on their way to the host and
// previews still to render (Note [deferred encoding]). Only the values the
// client asked for, on the iterations it asked for, are copied at all.
//   BLOCK (lossless): when the queue is full the loop waits. Whenever the
//     writer is free it packs every queued iteration, up to max_batch_bytes,
//     into one IterationBatch, so a fast loop and a slow reader stay
//     lossless without a message per iteration.
//   LATEST: the loop never waits. A new iteration replaces the one still
//     queued; Iteration.dropped_before and RunStats.iterations_dropped count
//     the replaced ones. The result is never dropped.
// Whichever side finds the writer idle with something to send starts the
// write (outside the lock); OnWriteDone picks up what queued meanwhile.
//
// Note [finishing]
// ~~~~~~~~~~~~~~~~
// Finish is called exactly once, when nothing is in flight and the run will
// not touch the stream's writer again: after the result's write completes,
// after the run ended with an error, or, for a run cancelled while still
// queued, at once (its task later sees Begin() return false). The writer
// (the reactor) therefore outlives every call into it.
//
// Note [deferred encoding]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// The loop's thread never waits for the device or draws a preview. For a
// selected value on a device, OnIteration only starts its HostCopy (Note
// [copies off the device] in host_copy.h); for a preview whose
// IterationPreview names what it reads, it starts copies of those values.
// The item is queued with these, unfinished. When Pump packs such items into
// the next write, that write is finished first, on the StreamEncoder's
// thread: wait for each copy, encode it into the item, render the preview
// from the host copies; then StartWrite. Finishing belongs to the write in
// flight, so nothing else touches the batch meanwhile, and a run's
// iterations stay in order. A failure there (a preview that cannot be
// drawn) ends the run with that status, as it would have on the loop.
//
// Thread-safety: as above; all state is under one mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "blocks/core/iteration_preview.h"
#include "blocks/core/run_context.h"
#include "blocks/core/state.h"
#include "engine/host_copy.h"
#include "engine/metrics.h"
#include "engine/stream_encoder.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

// Where a run's events go: a front (a gRPC reactor, an HTTP event stream),
// or a test's fake.
class RunEventWriter {
 public:
  virtual ~RunEventWriter() = default;
  // One write at a time. The stream does not change `event` while anyone
  // else holds it (Note [zero-copy tensors] in run_event_wire.h); the
  // writer must drop its own references before calling OnWriteDone.
  virtual void StartWrite(std::shared_ptr<const v1::RunEvent> event) = 0;
  // Called exactly once, with no write in flight.
  virtual void Finish(const absl::Status& status) = 0;
  // The client stopped taking messages: give up on the write in flight
  // (it completes, failed, with OnWriteDone(false)). Never called after
  // Finish.
  virtual void Abort() {}
};

// What the client asked to receive, validated against the pipeline.
struct StreamSelection {
  // Iteration outputs to send (never empty: empty in the request means all).
  std::vector<std::string> values;
  // Send iterations i with (i + 1) % every == 0, and always a loop's last.
  int64_t every = 1;
  bool latest = false;  // backpressure LATEST, else BLOCK
  // Final outputs to send (never empty when the pipeline has any).
  std::vector<std::string> outputs;
  // When the client asked for previews: the pipeline's IterationPreview,
  // which renders each sent iteration into preview_png.
  const IterationPreview* preview = nullptr;
};

struct RunStreamOptions {
  // An IterationBatch holds iterations up to about this many payload bytes
  // (at least one).
  int64_t max_batch_bytes = 1 << 20;
  // BLOCK: the loop waits while this many iterations, or this many payload
  // bytes, are queued.
  int64_t max_queued_iterations = 4096;
  int64_t max_queued_bytes = 4 << 20;
  // Finishes writes whose iterations were deferred (Note [deferred
  // encoding]); when null, the thread that starts the write does. The
  // engine sets its own.
  StreamEncoder* encoder = nullptr;
  // Tests: CPU tensors take the device's path too (copied, then encoded by
  // the encoder), so that path runs where there is no device.
  bool defer_cpu_values = false;
};

class RunStream : public IterationObserver {
 public:
  // `metrics` (may be null) counts what is streamed and dropped.
  RunStream(std::string run_id, std::string request_id,
            StreamSelection selection, RunStreamOptions options,
            RunEventWriter* writer, PipelineMetrics* metrics = nullptr);

  // ---- The run's side (an executor thread). ----

  // The run starts, `queue_ms` after it was accepted: queues `started`
  // (the inputs the server filled, where a resumed run continues), with
  // the ids and queue_ms set here. False when it was cancelled while
  // queued; the run must then not start.
  bool Begin(double queue_ms, v1::RunStarted started = {});
  // Makes the checkpoint each iteration about to be sent carries
  // (StreamOptions.checkpoints), on the run's thread; none when unset.
  using Checkpointer =
      std::function<absl::StatusOr<std::string>(const LoopIteration&)>;
  void set_checkpointer(Checkpointer checkpointer) {
    checkpointer_ = std::move(checkpointer);
  }
  // Streams the iteration if selected; returns the cancellation status once
  // the stream is cancelled, which ends the loop.
  absl::Status OnIteration(const LoopIteration& iteration) override;
  // The run ended with `status`; when OK, `state` holds the final outputs,
  // sent with `stats` (iterations_sent and iterations_dropped are filled
  // in here).
  void End(const absl::Status& status, const PipelineState& state,
           const v1::RunStats& stats);

  // ---- The front's side. ----

  void OnWriteDone(bool ok);
  // Stops the run at its next iteration boundary (or before it starts); the
  // stream finishes with `status` unless it finished already.
  void Cancel(absl::Status status);

  // Note [stalled readers]
  // ~~~~~~~~~~~~~~~~~~~~~~
  // A client that stops reading holds its run: under BLOCK the loop waits
  // for room, and even a finished run keeps its call until the result is
  // taken. When the write in flight has waited longer than `timeout` (the
  // server's --stream_idle_timeout_s), the run is cancelled with
  // DEADLINE_EXCEEDED, saying why, and the writer aborts the write, so
  // its worker and its slot are freed. True when it did. The engine's
  // watchdog calls it for every run, from its own thread.
  bool CancelIfStalled(absl::Time now, absl::Duration timeout);

  // Iterations observed so far: on the run's thread, or after End.
  int64_t iterations() const { return iterations_; }

 private:
  enum class Phase { kQueued, kRunning, kDone };
  // What is left to do to an item once its copies have arrived.
  struct Deferred {
    // Values to encode, by name.
    std::vector<std::pair<std::string, HostCopy>> values;
    // The preview's inputs (IterationPreview::reads), when the stream draws
    // its previews off the loop (DefersPreviews).
    std::vector<std::pair<std::string, HostCopy>> preview_inputs;
  };
  struct Pending {
    std::unique_ptr<v1::Iteration> item;
    int64_t bytes = 0;
    std::unique_ptr<Deferred> deferred;  // null when fully encoded
  };
  struct Completing {
    v1::Iteration* item;  // in current_
    std::unique_ptr<Deferred> deferred;
  };
  struct Action {
    enum Kind { kNone, kWrite, kFinish } kind = kNone;
    absl::Status status;
  };

  // OnIteration's steps: what one streamed iteration is filled with (its
  // values, preview and checkpoint, each counted in `filled` when present),
  // then its place in the queue.
  struct Filling {
    v1::Iteration& item;  // next_item_
    int64_t bytes = 0;
    size_t filled = 0;
    std::unique_ptr<Deferred> deferred{};
    Deferred& Defer();
  };
  absl::Status FillValues(const LoopIteration& iteration, Filling& filling);
  absl::Status FillPreview(const LoopIteration& iteration, Filling& filling);
  absl::Status FillCheckpoint(const LoopIteration& iteration, Filling& filling);
  // Queues next_item_ (Note [backpressure]: waits for room under BLOCK,
  // replaces what is pending under LATEST) and starts the next write.
  absl::Status Enqueue(int64_t bytes, std::unique_ptr<Deferred> deferred)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Decides the next write or the Finish; the caller carries it out after
  // unlocking.
  Action Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Act(const Action& action);
  // Finishes the deferred items of the write in flight, then starts it
  // (Note [deferred encoding]).
  void CompleteWrite();
  absl::Status Complete(v1::Iteration& item, Deferred& deferred) const;
  bool QueueHasRoom() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps `item` for reuse (Note [iteration reuse]), up to a bound.
  void Recycle(std::unique_ptr<v1::Iteration> item)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string run_id_;
  const std::string request_id_;
  const StreamSelection selection_;
  const RunStreamOptions options_;
  RunEventWriter* const writer_;
  PipelineMetrics* const metrics_;

  // Read without the lock on every iteration; set under it.
  std::atomic<bool> cancel_requested_{false};

  // Owned by the run's thread.
  double queue_ms_ = 0;
  v1::RunStarted started_;
  Checkpointer checkpointer_;
  int64_t iterations_ = 0;
  // The message the next streamed iteration is encoded into.
  std::unique_ptr<v1::Iteration> next_item_;
  // What the preview reads (IterationPreview::reads); empty: it is drawn on
  // the run's thread.
  const std::vector<std::string> preview_reads_;
  // Whether previews are drawn off the loop, from copies of preview_reads_.
  bool DefersPreviews() const {
    return selection_.preview != nullptr && !preview_reads_.empty();
  }

  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kQueued;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status cancel_status_ ABSL_GUARDED_BY(mu_);
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  bool started_pending_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  int64_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::unique_ptr<v1::RunEvent> result_ ABSL_GUARDED_BY(mu_);
  bool result_written_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  // When the write in flight started.
  absl::Time write_started_ ABSL_GUARDED_BY(mu_);
  // CancelIfStalled is calling the writer's Abort: no Finish meanwhile, so
  // the writer outlives the call.
  bool aborting_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  // Written iterations, for the loop to encode into again.
  std::vector<std::unique_ptr<v1::Iteration>> spare_ ABSL_GUARDED_BY(mu_);
  // The deferred items of the event being written: filled by Pump, emptied
  // by CompleteWrite while that write is in flight, before it starts.
  std::vector<Completing> completing_;
  // The event being written; touched only while no write is in flight, and
  // replaced rather than reused while something else still holds it.
  std::shared_ptr<v1::RunEvent> current_ = std::make_shared<v1::RunEvent>();
};

}  // namespace loopserve
