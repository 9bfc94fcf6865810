// What metric recording costs a run: the same pipeline run in-process with
// and without a RunRecorder (the server's BlockTimer), alternating, in one
// process.
//
//   build/bench/metrics_bench [--repeats=21]
//
// Cases: seed-loop-2 with an int x (two loop blocks of a few nanoseconds
// each: the worst case, where recording is a large share of a step), and
// digits-ddim, 50 steps (a real denoising loop). Prints, per case, the
// median run time of each and the median of the paired ratios, and the
// cost per recorded block.
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "app/default_pipelines.h"
#include "blocks/core/block.h"
#include "engine/metrics.h"
#include "engine/pipeline_catalog.h"

ABSL_FLAG(int32_t, repeats, 21, "Pairs of runs per case");

namespace loopserve {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct Case {
  std::string pipeline;
  std::vector<std::pair<std::string, c10::IValue>> inputs;
  int64_t steps;
  int leaves_per_step;
};

// One run; its wall time in seconds.
double RunOnce(const Pipeline& pipeline, const Case& c, BlockTimer* timer) {
  PipelineState state;
  for (const auto& [name, value] : c.inputs) state.SetInput(name, value);
  RunContext context{.timer = timer};
  const Clock::time_point start = Clock::now();
  const absl::Status status =
      RunBlock(*pipeline.root, pipeline.components, state, context);
  const double seconds =
      std::chrono::duration<double>(Clock::now() - start).count();
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
    std::exit(1);
  }
  return seconds;
}

int Main() {
  absl::StatusOr<PipelineCatalog> catalog = LoadDefaultPipelines(c10::kCPU);
  if (!catalog.ok()) return 1;
  Metrics metrics({.version = "bench", .torch_version = "", .device = "cpu"});
  for (const auto& pipeline : catalog->pipelines())
    metrics.AddPipeline(*pipeline);
  c10::InferenceMode inference_mode;

  const std::vector<Case> cases = {
      {"seed-loop-2",
       {{"num_steps", int64_t{200000}}, {"x", int64_t{0}}},
       200000,
       2},
      {"digits-ddim",
       {{"num_inference_steps", int64_t{50}}, {"seed", int64_t{1}}},
       50,
       3},
  };
  const int repeats = absl::GetFlag(FLAGS_repeats);
  std::printf("%-12s %6s %14s %14s %12s %16s\n", "pipeline", "steps",
              "plain (ms)", "recorded (ms)", "overhead", "per block (ns)");
  for (const Case& c : cases) {
    const Pipeline& pipeline = *catalog->Find(c.pipeline);
    PipelineMetrics& series = metrics.For(c.pipeline);
    RunOnce(pipeline, c, nullptr);  // warm-up
    std::vector<double> plain, recorded, ratios;
    for (int i = 0; i < repeats; ++i) {
      // Alternate which goes first, so drift hits both alike.
      double without, with;
      if (i % 2 == 0) {
        without = RunOnce(pipeline, c, nullptr);
        RunRecorder recorder(series, Clock::now());
        with = RunOnce(pipeline, c, &recorder);
      } else {
        {
          RunRecorder recorder(series, Clock::now());
          with = RunOnce(pipeline, c, &recorder);
        }
        without = RunOnce(pipeline, c, nullptr);
      }
      plain.push_back(without);
      recorded.push_back(with);
      ratios.push_back(with / without);
    }
    const double overhead = Median(ratios) - 1;
    const double per_block_ns = (Median(recorded) - Median(plain)) * 1e9 /
                                (c.steps * c.leaves_per_step);
    std::printf("%-12s %6lld %14.3f %14.3f %+11.2f%% %16.1f\n",
                c.pipeline.c_str(), static_cast<long long>(c.steps),
                Median(plain) * 1e3, Median(recorded) * 1e3, overhead * 100,
                per_block_ns);
  }
  return 0;
}

}  // namespace
}  // namespace loopserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return loopserve::Main();
}
