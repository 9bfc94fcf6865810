// Metrics: what loopserve tells Prometheus (docs/operations.md lists every
// series and what it means).
//
//   Metrics metrics({.version = "0.1.0", .torch_version = "1.13.0",
//                    .device = "cpu"});
//   metrics.AddPipeline(pipeline);             // once, before it serves
//   PipelineMetrics& m = metrics.For("digits-ddim");
//   RunRecorder recorder(m, accepted);          // the run's BlockTimer
//   ...
//   metrics.RunFinished(m, status.code());
//   prometheus::Exposer exposer("0.0.0.0:9464");
//   exposer.RegisterCollectable(metrics.registry());
//   exposer.RegisterCollectable(metrics.process());
//
// Labels stay few: pipeline (a served pipeline's name, or "unknown" for a
// name nobody serves, so a client cannot mint series), code (a gRPC status
// name), block (a leaf block's path, fixed by the configuration) and reason.
// Never a run id.
//
// Note [metrics off the loop]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A block can take nanoseconds (the seed loop's x += 1), so the loop must
// neither take a shared histogram's lock per block nor read the clock around
// every block of a fast loop.
//   - A run's RunRecorder counts into buckets of its own (a binary search
//     and two adds) and publishes them with one ObserveMultiple per
//     histogram: at the run's end, and whenever a second of iterations has
//     passed, so long runs show up between scrapes.
//   - Iterations of 50 us or more are all timed. Faster ones are sampled:
//     one timed iteration in kSampleEvery, and the iterations skipped after
//     it are counted with its durations. Counts stay exact; a fast loop's
//     distribution is an estimate from 1 in 64 iterations.
// Every series handle is created before the pipeline serves; a run looks
// nothing up by name. metrics_bench measures what recording costs.
//
// Thread-safety: Metrics may be used from any thread; AddPipeline races
// with nothing but itself (call it at start-up). A RunRecorder belongs to
// its run's thread.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "blocks/core/run_context.h"
#include "blocks/core/run_scope.h"

namespace loopserve {

struct Pipeline;

struct BuildInfo {
  std::string version;
  std::string torch_version;
  std::string device;  // the server's --device, resolved ("cpu", "cuda:0")
};

// One pipeline's series, created when it is added.
struct PipelineMetrics {
  std::string name;
  prometheus::Histogram* run_duration = nullptr;
  prometheus::Histogram* queue_duration = nullptr;
  prometheus::Histogram* time_to_first_iteration = nullptr;
  prometheus::Histogram* iteration_duration = nullptr;
  prometheus::Gauge* active_runs = nullptr;
  prometheus::Counter* iterations_streamed = nullptr;
  prometheus::Counter* iterations_dropped = nullptr;
  prometheus::Counter* stream_bytes = nullptr;
  // The leaf blocks (plain blocks and loop blocks), in tree order, and each
  // one's loopserve_block_duration_seconds series.
  absl::flat_hash_map<const void*, int> leaf_index;
  std::vector<prometheus::Histogram*> block_duration;
};

// Also every run's RunScope::Observer: the batched model calls
// (loopserve_batch_rows, loopserve_batch_wait_seconds, by component).
class Metrics final : public RunScope::Observer {
 public:
  explicit Metrics(const BuildInfo& build);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Creates `pipeline`'s series, one block series per leaf block.
  void AddPipeline(const Pipeline& pipeline);
  // The series of pipeline `name`, or of "unknown" when none is added.
  PipelineMetrics& For(absl::string_view name);

  // A Run call ended with `code` (loopserve_runs_total). Refusals before
  // the run was queued count here too, and in RunRefused.
  void RunFinished(PipelineMetrics& pipeline, absl::StatusCode code);
  // A run was refused before it was queued (loopserve_rejected_runs_total).
  void RunRefused(absl::StatusCode code);
  // A call was refused as UNAUTHENTICATED (loopserve_auth_failures_total):
  // `reason` is missing_token, unknown_token or plaintext.
  void AuthFailed(absl::string_view reason);
  prometheus::Gauge& queued_runs() { return *queued_runs_; }

  // RunScope::Observer. A component's series are created at its first
  // call (components are fixed by the configuration, so they are few).
  void OnBatchLaunched(absl::string_view component, int64_t rows) override;
  void OnBatchWait(absl::string_view component, double seconds) override;

  // The loopserve_* series, and the standard process_* series plus
  // loopserve_device_memory_bytes (read at scrape time).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  std::shared_ptr<prometheus::Collectable> process() const { return process_; }
  // Both, in Prometheus' text exposition format: what /metrics serves.
  std::string Scrape() const;

  // The buckets of the duration histograms, in seconds.
  static const prometheus::Histogram::BucketBoundaries& StepBuckets();
  static const prometheus::Histogram::BucketBoundaries& RunBuckets();
  static const prometheus::Histogram::BucketBoundaries& WaitBuckets();
  // Of loopserve_batch_rows: powers of two.
  static const prometheus::Histogram::BucketBoundaries& RowBuckets();

 private:
  const std::shared_ptr<prometheus::Registry> registry_;
  const std::shared_ptr<prometheus::Collectable> process_;
  prometheus::Family<prometheus::Counter>& runs_;
  prometheus::Family<prometheus::Counter>& refused_;
  prometheus::Family<prometheus::Counter>& auth_failures_;
  prometheus::Family<prometheus::Histogram>& run_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Family<prometheus::Histogram>& time_to_first_iteration_;
  prometheus::Family<prometheus::Histogram>& iteration_duration_;
  prometheus::Family<prometheus::Histogram>& block_duration_;
  prometheus::Family<prometheus::Gauge>& active_runs_;
  prometheus::Family<prometheus::Counter>& iterations_streamed_;
  prometheus::Family<prometheus::Counter>& iterations_dropped_;
  prometheus::Family<prometheus::Counter>& stream_bytes_;
  prometheus::Family<prometheus::Histogram>& batch_rows_;
  prometheus::Family<prometheus::Histogram>& batch_wait_;
  prometheus::Gauge* queued_runs_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<PipelineMetrics>> pipelines_
      ABSL_GUARDED_BY(mu_);
  PipelineMetrics* unknown_ = nullptr;
};

// One run's BlockTimer: Note [metrics off the loop].
class RunRecorder final : public BlockTimer {
 public:
  using Clock = std::chrono::steady_clock;

  // `accepted`: when the server took the request, for time to first
  // iteration.
  RunRecorder(PipelineMetrics& pipeline, Clock::time_point accepted);
  // Publishes what is left.
  ~RunRecorder() override { Publish(); }

  bool TimeIteration(const LoopBlocks& loop) override;
  void OnBlockTimed(const Block& block, Duration elapsed) override;
  void OnIterationTimed(const LoopBlocks& loop, Duration elapsed) override;

  // Adds what was counted since the last call to the shared histograms.
  void Publish();

  // Note [metrics off the loop]: iterations faster than this are sampled,
  // one in kSampleEvery.
  static constexpr Duration kFastIteration = std::chrono::microseconds(50);
  static constexpr int kSampleEvery = 64;

 private:
  // A histogram's buckets, counted locally.
  struct Tally {
    explicit Tally(prometheus::Histogram* target, size_t buckets)
        : target(target), counts(buckets + 1, 0.0) {}
    // `seconds`, `weight` times.
    void Observe(const prometheus::Histogram::BucketBoundaries& bounds,
                 double seconds, double weight = 1);
    void Publish();

    prometheus::Histogram* target;
    std::vector<double> counts;  // one per bucket, then +Inf
    double sum = 0;
    bool dirty = false;
  };

  // Counts the iterations skipped since the last timed one with its
  // durations.
  void CountSkipped();

  PipelineMetrics& pipeline_;
  const Clock::time_point accepted_;
  bool first_iteration_ = true;
  Tally iterations_;
  std::vector<Tally> blocks_;
  // Iteration time counted since the last Publish.
  Duration unpublished_{};

  // Sampling: the loop being sampled, iterations to skip before the next
  // timed one, iterations skipped since it, and its durations.
  const LoopBlocks* loop_ = nullptr;
  bool in_iteration_ = false;  // between TimeIteration and OnIterationTimed
  int countdown_ = 0;
  int64_t skipped_ = 0;
  Duration last_iteration_{};
  std::vector<std::pair<int, double>> last_blocks_;  // block index, seconds
};

}  // namespace loopserve
