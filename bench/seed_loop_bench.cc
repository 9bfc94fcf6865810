// The seed loop in-process: cost per iteration and fixed cost per run, for an
// int x with one and two loop blocks and a [1,4,64,64] FP32 tensor x.
//
//   build/bench/seed_loop_bench
//
// Google Benchmark times whole runs for N = 1 .. 10000 steps; the summary at
// the end derives, per case, the cost of one step (the slope between the two
// largest N) and the fixed cost of one run (the N = 1 time less one step).
// Runs also take a no-op IterationObserver, to show what the streaming hook
// costs per step.
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>
#include <c10/core/InferenceMode.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "blocks/builtin_blocks.h"
#include "blocks/core/block.h"
#include "blocks/examples/seed_blocks.h"

namespace loopserve {
namespace {

enum class XKind { kInt, kTensor };

class NoOpObserver : public IterationObserver {
 public:
  absl::Status OnIteration(const LoopIteration&) override {
    return absl::OkStatus();
  }
};

void BM_SeedLoop(benchmark::State& bench, XKind x_kind, int blocks,
                 bool observed) {
  const int64_t num_steps = bench.range(0);
  BlockRegistry registry;
  if (!RegisterBuiltinBlocks(registry).ok()) std::abort();
  absl::StatusOr<std::unique_ptr<Block>> pipeline =
      blocks == 1 ? MakeSeedLoop(registry) : MakeSeedLoop2(registry);
  if (!pipeline.ok()) std::abort();
  const Components components;
  NoOpObserver observer;
  const c10::IValue x0 = x_kind == XKind::kInt
                             ? c10::IValue(int64_t{0})
                             : c10::IValue(at::zeros({1, 4, 64, 64}));
  c10::InferenceMode inference_mode;  // as on the server's executor threads

  for (auto _ : bench) {
    PipelineState state;
    state.SetInput("num_steps", num_steps);
    state.SetInput("x", x0);
    RunContext context{.observer = observed ? &observer : nullptr};
    absl::Status status = RunBlock(**pipeline, components, state, context);
    if (!status.ok()) {
      bench.SkipWithError(std::string(status.message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(state.GetIntermediate("x"));
  }
}

void Steps(benchmark::internal::Benchmark* b) {
  b->ArgName("steps");
  for (int64_t n : {1, 10, 100, 1000, 10000}) b->Arg(n);
}

BENCHMARK_CAPTURE(BM_SeedLoop, int_1block, XKind::kInt, 1, false)->Apply(Steps);
BENCHMARK_CAPTURE(BM_SeedLoop, int_2blocks, XKind::kInt, 2, false)
    ->Apply(Steps);
BENCHMARK_CAPTURE(BM_SeedLoop, int_1block_observed, XKind::kInt, 1, true)
    ->Apply(Steps);
BENCHMARK_CAPTURE(BM_SeedLoop, tensor_1block, XKind::kTensor, 1, false)
    ->Apply(Steps);
BENCHMARK_CAPTURE(BM_SeedLoop, tensor_2blocks, XKind::kTensor, 2, false)
    ->Apply(Steps);

// Prints the console table, then per case: the cost per step and per run.
class FitReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred || run.run_type != Run::RT_Iteration) continue;
      const std::string name = run.benchmark_name();
      const size_t slash = name.rfind("/steps:");
      if (slash == std::string::npos) continue;
      const int64_t steps = std::stoll(name.substr(slash + 7));
      // GetAdjustedRealTime is in the run's time unit.
      times_[name.substr(0, slash)][steps] =
          run.GetAdjustedRealTime() /
          benchmark::GetTimeUnitMultiplier(run.time_unit);
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n%-36s %14s %18s\n", "case", "per step (us)",
                "fixed per run (us)");
    for (const auto& [family, by_steps] : times_) {
      if (by_steps.size() < 3) continue;
      auto last = by_steps.rbegin();
      auto second = std::next(last);
      const double per_step =
          (last->second - second->second) / (last->first - second->first);
      const double fixed =
          by_steps.begin()->second - by_steps.begin()->first * per_step;
      std::printf("%-36s %14.4f %18.3f\n", family.c_str(), per_step * 1e6,
                  fixed * 1e6);
    }
  }

 private:
  // family -> steps -> seconds per run
  std::map<std::string, std::map<int64_t, double>> times_;
};

}  // namespace
}  // namespace loopserve

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  loopserve::FitReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
