#include "engine/metrics.h"

#include <dirent.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "blocks/core/block.h"
#include "engine/device.h"
#include "engine/pipeline_catalog.h"

namespace loopserve {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily GaugeFamily(std::string name, std::string help, double value,
                         std::vector<ClientMetric::Label> labels = {},
                         MetricType type = MetricType::Gauge) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  return MetricFamily{std::move(name), std::move(help), type, {metric}};
}

// Note [process metrics]
// ~~~~~~~~~~~~~~~~~~~~~~
// prometheus-cpp has no process collector; these are the standard
// process_* series every Prometheus client library exports, read from /proc
// at scrape time, plus the device's allocated memory where it reports it
// (CUDA's caching allocator; nothing for the CPU).
class ProcessCollector final : public prometheus::Collectable {
 public:
  explicit ProcessCollector(std::string device) : device_(std::move(device)) {}

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> families;
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    // /proc/self/stat: fields after the parenthesised command name, from
    // field 3 (state) on.
    std::ifstream stat_file("/proc/self/stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)),
                     std::istreambuf_iterator<char>());
    const size_t close = stat.rfind(')');
    if (close != std::string::npos) {
      std::istringstream fields(stat.substr(close + 2));
      std::vector<std::string> f{std::istream_iterator<std::string>(fields),
                                 std::istream_iterator<std::string>()};
      // f[0] is field 3; field N is f[N - 3].
      if (f.size() > 21) {
        const double utime = std::stod(f[14 - 3]);
        const double stime = std::stod(f[15 - 3]);
        const double start_ticks = std::stod(f[22 - 3]);
        families.push_back(
            GaugeFamily("process_cpu_seconds_total",
                        "Total user and system CPU time spent in seconds.",
                        (utime + stime) / ticks, {}, MetricType::Counter));
        families.push_back(GaugeFamily("process_virtual_memory_bytes",
                                       "Virtual memory size in bytes.",
                                       std::stod(f[23 - 3])));
        families.push_back(GaugeFamily("process_resident_memory_bytes",
                                       "Resident memory size in bytes.",
                                       std::stod(f[24 - 3]) * page));
        if (const double boot = BootTime(); boot > 0) {
          families.push_back(GaugeFamily(
              "process_start_time_seconds",
              "Start time of the process since unix epoch in seconds.",
              boot + start_ticks / ticks));
        }
      }
    }
    families.push_back(GaugeFamily(
        "process_open_fds", "Number of open file descriptors.", OpenFds()));
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
      families.push_back(GaugeFamily("process_max_fds",
                                     "Maximum number of open file descriptors.",
                                     static_cast<double>(limit.rlim_cur)));
    }
    if (const std::optional<DeviceMemory> memory =
            DeviceMemoryOf(c10::Device(device_))) {
      MetricFamily family{"loopserve_device_memory_bytes",
                          "Device memory of libtorch's caching allocator: "
                          "in live tensors (allocated), and taken from the "
                          "driver, live or cached (reserved).",
                          MetricType::Gauge,
                          {}};
      for (const auto& [kind, bytes] :
           {std::pair{"allocated", memory->allocated},
            std::pair{"reserved", memory->reserved}}) {
        ClientMetric metric;
        metric.label = {{"device", device_}, {"kind", kind}};
        metric.gauge.value = static_cast<double>(bytes);
        family.metric.push_back(std::move(metric));
      }
      families.push_back(std::move(family));
    }
    return families;
  }

 private:
  static double BootTime() {
    std::ifstream stat("/proc/stat");
    std::string key;
    while (stat >> key) {
      if (key == "btime") {
        double value = 0;
        stat >> value;
        return value;
      }
    }
    return 0;
  }

  static double OpenFds() {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return 0;
    double count = 0;
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++count;
    }
    closedir(dir);
    return count - 1;  // the directory's own descriptor
  }

  const std::string device_;
};

absl::string_view RefuseReason(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
      return "invalid_argument";
    case absl::StatusCode::kNotFound:
      return "not_found";
    case absl::StatusCode::kResourceExhausted:
      return "queue_full";
    case absl::StatusCode::kUnavailable:
      return "unavailable";  // loading or draining
    case absl::StatusCode::kCancelled:
      return "cancelled";  // before its request arrived
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline_exceeded";
    case absl::StatusCode::kUnauthenticated:
      return "unauthenticated";
    default:
      return "other";
  }
}

// Leaf blocks in tree order: plain blocks and loop blocks.
void CollectLeaves(const Block& block, std::vector<const Block*>& leaves) {
  if (block.kind() == BlockKind::kBlock) {
    leaves.push_back(&block);
    return;
  }
  for (const SubBlock& sub : block.sub_blocks()) {
    CollectLeaves(*sub.block, leaves);
  }
}

}  // namespace

const prometheus::Histogram::BucketBoundaries& Metrics::StepBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      1e-5, 5e-5,   1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
      1e-2, 2.5e-2, 5e-2, 0.1,    0.25, 0.5,  1,      2.5};
  return *buckets;
}

const prometheus::Histogram::BucketBoundaries& Metrics::RunBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600};
  return *buckets;
}

const prometheus::Histogram::BucketBoundaries& Metrics::WaitBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
      0.25, 0.5,  1,      2.5,  5,    10,     30};
  return *buckets;
}

const prometheus::Histogram::BucketBoundaries& Metrics::RowBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      1, 2, 4, 8, 16, 32, 64, 128, 256};
  return *buckets;
}

Metrics::Metrics(const BuildInfo& build)
    : registry_(std::make_shared<prometheus::Registry>()),
      process_(std::make_shared<ProcessCollector>(build.device)),
      runs_(BuildCounter()
                .Name("loopserve_runs_total")
                .Help("Run calls ended, by pipeline and gRPC status code")
                .Register(*registry_)),
      refused_(BuildCounter()
                   .Name("loopserve_rejected_runs_total")
                   .Help("Runs refused before they were queued, by reason")
                   .Register(*registry_)),
      auth_failures_(BuildCounter()
                         .Name("loopserve_auth_failures_total")
                         .Help("Calls refused as UNAUTHENTICATED, by reason")
                         .Register(*registry_)),
      run_duration_(BuildHistogram()
                        .Name("loopserve_run_duration_seconds")
                        .Help("From a run's start on a worker to its end")
                        .Register(*registry_)),
      queue_duration_(BuildHistogram()
                          .Name("loopserve_queue_duration_seconds")
                          .Help("From a run's acceptance to its start")
                          .Register(*registry_)),
      time_to_first_iteration_(
          BuildHistogram()
              .Name("loopserve_time_to_first_iteration_seconds")
              .Help("From a run's acceptance to its first finished iteration")
              .Register(*registry_)),
      iteration_duration_(
          BuildHistogram()
              .Name("loopserve_iteration_duration_seconds")
              .Help("One loop iteration: its loop blocks and its streaming")
              .Register(*registry_)),
      block_duration_(BuildHistogram()
                          .Name("loopserve_block_duration_seconds")
                          .Help("One leaf block's run (host time), by path")
                          .Register(*registry_)),
      active_runs_(BuildGauge()
                       .Name("loopserve_active_runs")
                       .Help("Runs executing now")
                       .Register(*registry_)),
      iterations_streamed_(BuildCounter()
                               .Name("loopserve_iterations_streamed_total")
                               .Help("Iterations sent to clients")
                               .Register(*registry_)),
      iterations_dropped_(
          BuildCounter()
              .Name("loopserve_iterations_dropped_total")
              .Help("Iterations replaced unsent under LATEST backpressure")
              .Register(*registry_)),
      stream_bytes_(BuildCounter()
                        .Name("loopserve_stream_bytes_total")
                        .Help("Tensor and preview payload bytes streamed")
                        .Register(*registry_)),
      batch_rows_(BuildHistogram()
                      .Name("loopserve_batch_rows")
                      .Help("Rows per denoiser call, runs batched together "
                            "(--max_batch_size), by component")
                      .Register(*registry_)),
      batch_wait_(BuildHistogram()
                      .Name("loopserve_batch_wait_seconds")
                      .Help("How long a run's denoiser call waited for its "
                            "batch to launch, by component")
                      .Register(*registry_)),
      queued_runs_(&BuildGauge()
                        .Name("loopserve_queued_runs")
                        .Help("Runs accepted and waiting for a worker")
                        .Register(*registry_)
                        .Add({})) {
  BuildGauge()
      .Name("loopserve_build_info")
      .Help("Always 1; the labels say what is running")
      .Register(*registry_)
      .Add({{"version", build.version},
            {"torch_version", build.torch_version},
            {"device", build.device}})
      .Set(1);
  absl::MutexLock lock(&mu_);
  auto unknown = std::make_unique<PipelineMetrics>();
  unknown->name = "unknown";
  unknown_ = unknown.get();
  pipelines_.emplace("", std::move(unknown));
}

void Metrics::AddPipeline(const Pipeline& pipeline) {
  auto metrics = std::make_unique<PipelineMetrics>();
  metrics->name = pipeline.name;
  const prometheus::Labels labels{{"pipeline", pipeline.name}};
  metrics->run_duration = &run_duration_.Add(labels, RunBuckets());
  metrics->queue_duration = &queue_duration_.Add(labels, WaitBuckets());
  metrics->time_to_first_iteration =
      &time_to_first_iteration_.Add(labels, WaitBuckets());
  metrics->iteration_duration = &iteration_duration_.Add(labels, StepBuckets());
  metrics->active_runs = &active_runs_.Add(labels);
  metrics->iterations_streamed = &iterations_streamed_.Add(labels);
  metrics->iterations_dropped = &iterations_dropped_.Add(labels);
  metrics->stream_bytes = &stream_bytes_.Add(labels);
  std::vector<const Block*> leaves;
  CollectLeaves(*pipeline.root, leaves);
  for (const Block* leaf : leaves) {
    metrics->leaf_index[leaf] =
        static_cast<int>(metrics->block_duration.size());
    metrics->block_duration.push_back(&block_duration_.Add(
        {{"pipeline", pipeline.name}, {"block", leaf->path()}}, StepBuckets()));
  }
  absl::MutexLock lock(&mu_);
  pipelines_[pipeline.name] = std::move(metrics);
}

PipelineMetrics& Metrics::For(absl::string_view name) {
  absl::ReaderMutexLock lock(&mu_);
  const auto it = pipelines_.find(name);
  return it == pipelines_.end() || name.empty() ? *unknown_ : *it->second;
}

void Metrics::RunFinished(PipelineMetrics& pipeline, absl::StatusCode code) {
  runs_
      .Add({{"pipeline", pipeline.name},
            {"code", absl::StatusCodeToString(code)}})
      .Increment();
}

void Metrics::OnBatchLaunched(absl::string_view component, int64_t rows) {
  batch_rows_.Add({{"component", std::string(component)}}, RowBuckets())
      .Observe(static_cast<double>(rows));
}

void Metrics::OnBatchWait(absl::string_view component, double seconds) {
  batch_wait_.Add({{"component", std::string(component)}}, StepBuckets())
      .Observe(seconds);
}

void Metrics::RunRefused(absl::StatusCode code) {
  refused_.Add({{"reason", std::string(RefuseReason(code))}}).Increment();
}

void Metrics::AuthFailed(absl::string_view reason) {
  auth_failures_.Add({{"reason", std::string(reason)}}).Increment();
}

std::string Metrics::Scrape() const {
  std::vector<MetricFamily> families = registry_->Collect();
  for (MetricFamily& family : process_->Collect()) {
    families.push_back(std::move(family));
  }
  return prometheus::TextSerializer().Serialize(families);
}

void RunRecorder::Tally::Observe(
    const prometheus::Histogram::BucketBoundaries& bounds, double seconds,
    double weight) {
  // The bucket whose upper bound is the first >= seconds, as
  // prometheus::Histogram::Observe picks it.
  const size_t bucket =
      std::lower_bound(bounds.begin(), bounds.end(), seconds) - bounds.begin();
  counts[bucket] += weight;
  sum += seconds * weight;
  dirty = true;
}

void RunRecorder::Tally::Publish() {
  if (!dirty) return;
  target->ObserveMultiple(counts, sum);
  std::fill(counts.begin(), counts.end(), 0.0);
  sum = 0;
  dirty = false;
}

RunRecorder::RunRecorder(PipelineMetrics& pipeline, Clock::time_point accepted)
    : pipeline_(pipeline),
      accepted_(accepted),
      iterations_(pipeline.iteration_duration, Metrics::StepBuckets().size()) {
  blocks_.reserve(pipeline.block_duration.size());
  for (prometheus::Histogram* histogram : pipeline.block_duration) {
    blocks_.emplace_back(histogram, Metrics::StepBuckets().size());
  }
}

bool RunRecorder::TimeIteration(const LoopBlocks& loop) {
  if (&loop == loop_ && countdown_ > 0) {
    --countdown_;
    ++skipped_;
    return false;
  }
  CountSkipped();
  loop_ = &loop;
  last_blocks_.clear();
  in_iteration_ = true;
  return true;
}

void RunRecorder::CountSkipped() {
  if (skipped_ == 0) return;
  const double weight = static_cast<double>(skipped_);
  iterations_.Observe(Metrics::StepBuckets(),
                      std::chrono::duration<double>(last_iteration_).count(),
                      weight);
  for (const auto& [index, seconds] : last_blocks_) {
    blocks_[index].Observe(Metrics::StepBuckets(), seconds, weight);
  }
  unpublished_ += last_iteration_ * skipped_;
  skipped_ = 0;
}

void RunRecorder::OnBlockTimed(const Block& block, Duration elapsed) {
  const auto it = pipeline_.leaf_index.find(&block);
  if (it == pipeline_.leaf_index.end()) return;
  const double seconds = std::chrono::duration<double>(elapsed).count();
  blocks_[it->second].Observe(Metrics::StepBuckets(), seconds);
  if (in_iteration_) last_blocks_.emplace_back(it->second, seconds);
}

void RunRecorder::OnIterationTimed(const LoopBlocks&, Duration elapsed) {
  if (first_iteration_) {
    first_iteration_ = false;
    pipeline_.time_to_first_iteration->Observe(
        std::chrono::duration<double>(Clock::now() - accepted_).count());
  }
  in_iteration_ = false;
  iterations_.Observe(Metrics::StepBuckets(),
                      std::chrono::duration<double>(elapsed).count());
  last_iteration_ = elapsed;
  countdown_ = elapsed < kFastIteration ? kSampleEvery - 1 : 0;
  unpublished_ += elapsed;
  if (unpublished_ >= std::chrono::seconds(1)) Publish();
}

void RunRecorder::Publish() {
  CountSkipped();
  unpublished_ = Duration::zero();
  iterations_.Publish();
  for (Tally& tally : blocks_) tally.Publish();
}

}  // namespace loopserve
