// Step-level batching (Note [step batching] in
// blocks/diffusion/batched_denoiser.h): runs executed at once share their
// denoiser calls and end exactly where they end alone — bit for bit with the
// Gaussian-mixture oracle, within 1e-4 of the trajectory's scale with the
// digits UNet — across samplers, step counts, guidance, cancellation, runs
// joining mid-way; incompatible runs never share a call; --max_batch_size=1
// is the unbatched server.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "app/default_pipelines.h"
#include "blocks/core/block.h"
#include "blocks/core/loop.h"
#include "blocks/core/run_scope.h"
#include "blocks/diffusion/batched_denoiser.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;

using Inputs = std::map<std::string, c10::IValue>;

// Long enough that every run in flight arrives before a batch launches
// without it, however slow the machine: the test then does not depend on
// timing to batch.
constexpr std::chrono::microseconds kPatientWindow = std::chrono::seconds(5);

// One run of a pipeline: its inputs, and optionally an observer that may
// stop it or signal its progress.
struct RunSpec {
  std::string pipeline;
  Inputs inputs;
  IterationObserver* observer = nullptr;
  // Waited for before the run starts (a run joining mid-way).
  absl::Notification* start_after = nullptr;
};

struct RunEnd {
  absl::Status status;
  at::Tensor latents;
  double mean_batch_size = 0;
  int64_t model_calls = 0;
};

RunEnd Execute(const PipelineCatalog& catalog, const RunSpec& spec) {
  if (spec.start_after != nullptr) spec.start_after->WaitForNotification();
  RunEnd outcome;
  const Pipeline* pipeline = catalog.Find(spec.pipeline);
  if (pipeline == nullptr) {
    outcome.status = absl::NotFoundError(spec.pipeline);
    return outcome;
  }
  PipelineState state;
  for (const auto& [key, value] : spec.inputs) state.SetInput(key, value);
  RunContext context{.observer = spec.observer, .device = c10::kCPU};
  {
    RunScope scope;
    outcome.status =
        RunBlock(*pipeline->root, pipeline->components, state, context);
    outcome.mean_batch_size = scope.mean_batch_rows();
    outcome.model_calls = scope.model_calls();
  }
  if (const c10::IValue* latents = state.GetIntermediate("latents")) {
    outcome.latents = latents->toTensor();
  }
  return outcome;
}

// Every spec at once, one thread each, as the server's workers run them.
std::vector<RunEnd> ExecuteTogether(const PipelineCatalog& catalog,
                                    const std::vector<RunSpec>& specs) {
  std::vector<RunEnd> outcomes(specs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < specs.size(); ++i) {
    threads.emplace_back([&, i] {
      c10::InferenceMode inference;
      outcomes[i] = Execute(catalog, specs[i]);
    });
  }
  for (std::thread& thread : threads) thread.join();
  return outcomes;
}

// Stops its run after `stop_after` iterations, and says when `signal_at`
// have finished.
class IterationGate final : public IterationObserver {
 public:
  IterationGate(int64_t stop_after, int64_t signal_at,
                absl::Notification* signal)
      : stop_after_(stop_after), signal_at_(signal_at), signal_(signal) {}

  absl::Status OnIteration(const LoopIteration& iteration) override {
    const int64_t done = iteration.index.i + 1;
    if (signal_ != nullptr && done == signal_at_) signal_->Notify();
    if (stop_after_ > 0 && done >= stop_after_) {
      return absl::CancelledError("the client cancelled");
    }
    return absl::OkStatus();
  }

 private:
  const int64_t stop_after_;
  const int64_t signal_at_;
  absl::Notification* const signal_;
};

class BatchingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_OK_AND_ASSIGN(PipelineCatalog unbatched,
                         LoadDefaultPipelines(c10::kCPU));
    ASSERT_OK_AND_ASSIGN(
        PipelineCatalog batched,
        LoadDefaultPipelines(c10::kCPU,
                             {.max_batch_size = 64, .window = kPatientWindow}));
    ASSERT_OK_AND_ASSIGN(
        PipelineCatalog two_lanes,
        LoadDefaultPipelines(
            c10::kCPU,
            {.max_batch_size = 64, .window = kPatientWindow, .lanes = 2}));
    unbatched_ = new PipelineCatalog(std::move(unbatched));
    batched_ = new PipelineCatalog(std::move(batched));
    two_lanes_ = new PipelineCatalog(std::move(two_lanes));
  }

  // Each spec run alone on the unbatched catalog.
  static std::vector<RunEnd> Alone(const std::vector<RunSpec>& specs) {
    std::vector<RunEnd> outcomes;
    for (RunSpec spec : specs) {
      spec.observer = nullptr;
      spec.start_after = nullptr;
      outcomes.push_back(Execute(*unbatched_, spec));
    }
    return outcomes;
  }

  // Runs `specs` at once on `catalog`, and checks that each ends OK with
  // the latents it ends with alone, bit for bit. The outcomes together.
  static std::vector<RunEnd> TogetherAsAlone(
      const PipelineCatalog& catalog, const std::vector<RunSpec>& specs) {
    const std::vector<RunEnd> alone = Alone(specs);
    std::vector<RunEnd> together = ExecuteTogether(catalog, specs);
    for (size_t i = 0; i < specs.size(); ++i) {
      SCOPED_TRACE(absl::StrCat("run ", i, " ", specs[i].pipeline));
      EXPECT_OK(alone[i].status);
      EXPECT_OK(together[i].status);
      EXPECT_TRUE(together[i].latents.defined() && alone[i].latents.defined() &&
                  at::equal(together[i].latents, alone[i].latents));
    }
    return together;
  }

  static PipelineCatalog* unbatched_;
  // One lane: every compatible run in flight shares each call.
  static PipelineCatalog* batched_;
  // Two lanes (the server's default): two batches may run side by side.
  static PipelineCatalog* two_lanes_;
};
PipelineCatalog* BatchingTest::unbatched_ = nullptr;
PipelineCatalog* BatchingTest::batched_ = nullptr;
PipelineCatalog* BatchingTest::two_lanes_ = nullptr;

RunSpec Gmm(const std::string& scheduler, int64_t steps, int64_t seed,
            int64_t batch_size = 1) {
  return {.pipeline = "gmm-ddim",
          .inputs = {{"scheduler", scheduler},
                     {"num_inference_steps", steps},
                     {"seed", seed},
                     {"batch_size", batch_size}}};
}

// Every sampler, several step counts and batch sizes, two pipelines sharing
// the `gmm` component: one call per step for all of them, and each run's
// latents are the unbatched run's, bit for bit.
TEST_F(BatchingTest, MixedSamplersAndStepCountsEqualUnbatchedBitForBit) {
  const std::vector<RunSpec> specs = {
      Gmm("ddim", 20, 1),
      Gmm("euler", 25, 2),
      Gmm("euler-karras", 12, 3),
      Gmm("euler-a", 20, 4, 2),
      Gmm("dpmpp-2m", 15, 5),
      Gmm("dpmpp-2m-karras", 20, 6),
      Gmm("dpmpp-2m-sde-karras", 18, 7, 3),
      Gmm("dpmpp-3m", 20, 8),
      Gmm("unipc", 22, 9),
      Gmm("unipc-3", 20, 10),
      {.pipeline = "gmm-euler",
       .inputs = {{"num_inference_steps", int64_t{16}}, {"seed", int64_t{11}}}},
  };
  const std::vector<RunEnd> together = TogetherAsAlone(*batched_, specs);
  for (size_t i = 0; i < specs.size(); ++i) {
    // Batched with the others: more rows per call than its own.
    const auto batch_size = specs[i].inputs.find("batch_size");
    const int64_t own_rows =
        batch_size == specs[i].inputs.end() ? 1 : batch_size->second.toInt();
    EXPECT_GT(together[i].mean_batch_size, own_rows);
  }
}

// Two batches side by side: which runs share which call depends on who
// arrives when, yet no run's result does.
TEST_F(BatchingTest, TwoLanesEqualUnbatchedBitForBit) {
  std::vector<RunSpec> specs;
  const char* samplers[] = {
      "ddim", "euler", "euler-a", "dpmpp-2m", "dpmpp-2m-sde-karras", "unipc"};
  for (int64_t i = 0; i < 12; ++i) {
    specs.push_back(Gmm(samplers[i % 6], 10 + i, 100 + i, 1 + i % 2));
  }
  double most_rows = 0;
  for (const RunEnd& outcome : TogetherAsAlone(*two_lanes_, specs)) {
    most_rows = std::max(most_rows, outcome.mean_batch_size);
  }
  EXPECT_GT(most_rows, 2);  // with two lanes busy, the others batch
}

// The flow model is another component, and latents of another size another
// shape: neither ever shares a call with the 64x64 runs.
TEST_F(BatchingTest, IncompatibleRunsAreNeverBatchedTogether) {
  const std::vector<RunSpec> specs = {
      Gmm("ddim", 20, 1),
      Gmm("euler", 20, 2),
      {.pipeline = "gmm-ddim",
       .inputs = {{"num_inference_steps", int64_t{20}},
                  {"seed", int64_t{3}},
                  {"height", int64_t{256}},
                  {"width", int64_t{256}}}},
      {.pipeline = "gmm-flow",
       .inputs = {{"num_inference_steps", int64_t{20}}, {"seed", int64_t{4}}}},
  };
  const std::vector<RunEnd> together = TogetherAsAlone(*batched_, specs);
  EXPECT_GT(together[0].mean_batch_size, 1);
  EXPECT_GT(together[1].mean_batch_size, 1);
  EXPECT_EQ(together[2].mean_batch_size, 1);  // 32x32 latents
  EXPECT_EQ(together[3].mean_batch_size, 1);  // gmm-flow
}

// A run cancelled at its 5th step leaves: the others go on without waiting
// for it, and end as they end alone.
TEST_F(BatchingTest, CancelledRunLeavesTheBatch) {
  IterationGate cancel_at_5(5, 0, nullptr);
  std::vector<RunSpec> specs = {Gmm("ddim", 30, 1), Gmm("dpmpp-2m", 30, 2),
                                Gmm("euler-a", 30, 3)};
  specs[1].observer = &cancel_at_5;
  const std::vector<RunEnd> alone = Alone(specs);
  const auto started = std::chrono::steady_clock::now();
  const std::vector<RunEnd> together = ExecuteTogether(*batched_, specs);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
          .count();
  EXPECT_THAT(together[1].status,
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  EXPECT_EQ(together[1].model_calls, 5);
  for (size_t i : {0, 2}) {
    ASSERT_OK(together[i].status);
    EXPECT_TRUE(at::equal(together[i].latents, alone[i].latents)) << i;
  }
  // Nobody waited a window for the cancelled run.
  EXPECT_LT(seconds,
            0.9 * std::chrono::duration<double>(kPatientWindow).count());
}

// A run that starts while others are at their 10th step joins their batch
// at its first call.
TEST_F(BatchingTest, RunJoiningMidwayJoinsTheBatch) {
  absl::Notification tenth_step;
  IterationGate signal(0, 10, &tenth_step);
  std::vector<RunSpec> specs = {Gmm("ddim", 40, 1), Gmm("unipc", 40, 2),
                                Gmm("euler", 20, 3)};
  specs[0].observer = &signal;
  specs[2].start_after = &tenth_step;
  const std::vector<RunEnd> together = TogetherAsAlone(*batched_, specs);
  EXPECT_GT(together[2].mean_batch_size, 1);
}

// --max_batch_size=1: no wrapper at all, each call the model's own.
TEST_F(BatchingTest, MaxBatchSizeOneIsTheUnbatchedServer) {
  ASSERT_OK_AND_ASSIGN(
      PipelineCatalog one,
      LoadDefaultPipelines(c10::kCPU,
                           {.max_batch_size = 1, .window = kPatientWindow}));
  ASSERT_OK_AND_ASSIGN(
      const Denoiser* denoiser,
      one.Find("gmm-ddim")->components.Get<Denoiser>("denoiser"));
  EXPECT_EQ(dynamic_cast<const BatchedDenoiser*>(denoiser), nullptr);
  ASSERT_OK_AND_ASSIGN(
      const Denoiser* batched,
      batched_->Find("gmm-ddim")->components.Get<Denoiser>("denoiser"));
  EXPECT_NE(dynamic_cast<const BatchedDenoiser*>(batched), nullptr);

  const std::vector<RunSpec> specs = {Gmm("ddim", 10, 1), Gmm("euler", 10, 2)};
  for (const RunEnd& outcome : TogetherAsAlone(one, specs)) {
    EXPECT_EQ(outcome.model_calls, 0);  // nothing batched, nothing counted
  }
}

// The digits UNet with guidance on and off, several samplers, prompts and
// step counts in one batch: within 1e-4 of each trajectory's scale of the
// run alone (a convolution at another batch size may reassociate its sums).
TEST_F(BatchingTest, DigitsUNetRunsMatchUnbatchedWithMixedGuidance) {
  auto digits = [](const std::string& scheduler, int64_t steps, int64_t seed,
                   const std::string& prompt, double guidance) {
    return RunSpec{.pipeline = "digits-text",
                   .inputs = {{"scheduler", scheduler},
                              {"num_inference_steps", steps},
                              {"seed", seed},
                              {"prompt", prompt},
                              {"guidance_scale", guidance}}};
  };
  const std::vector<RunSpec> specs = {
      digits("ddim", 20, 1, "a handwritten seven", 3.0),
      digits("euler", 25, 2, "a handwritten three", 1.0),
      digits("dpmpp-2m-karras", 15, 3, "a handwritten zero", 5.0),
      digits("euler-a", 20, 4, "", 1.0),
      digits("unipc", 20, 5, "a handwritten one", 2.0),
      {.pipeline = "digits-ddim",
       .inputs = {{"num_inference_steps", int64_t{20}}, {"seed", int64_t{6}}}},
  };
  const std::vector<RunEnd> alone = Alone(specs);
  const std::vector<RunEnd> together = ExecuteTogether(*batched_, specs);
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("run ", i));
    ASSERT_OK(alone[i].status);
    ASSERT_OK(together[i].status);
    const double scale = alone[i].latents.abs().max().item<double>();
    const double error =
        (together[i].latents - alone[i].latents).abs().max().item<double>();
    std::cout << "run " << i << ": max |batched - alone| " << error
              << " (scale " << scale << "), mean batch "
              << together[i].mean_batch_size << "\n";
    EXPECT_LE(error, 1e-4 * scale) << i;
    EXPECT_GT(together[i].mean_batch_size, 2);
  }
}

// A denoiser that refuses any batch holding a row of -1s.
class PickyDenoiser final : public Denoiser {
 public:
  absl::string_view type_name() const override { return "picky"; }
  absl::StatusOr<at::Tensor> Predict(
      const at::Tensor& sample, const at::Tensor& timestep,
      std::span<const at::Tensor>) const override {
    calls_.fetch_add(1);
    if ((sample == -1).any().item<bool>()) {
      return absl::InvalidArgumentError("a row of -1s");
    }
    return sample * 2 + timestep.reshape({-1, 1}).to(at::kFloat);
  }
  mutable std::atomic<int> calls_{0};
};

// One run's input the model refuses fails that run only; each of two runs
// with per-row timesteps gets its own rows back. (The second warm-up waits
// one window for the first run, which waits for it at the barrier; after
// it, each run is a member the other waits for.)
TEST(BatchedDenoiserTest, ARefusedRowFailsOnlyItsRun) {
  auto picky = std::make_shared<PickyDenoiser>();
  BatchedDenoiser batched(
      picky, {.max_batch_size = 8, .window = kPatientWindow}, "picky");
  absl::Mutex mu;
  int members = 0;
  absl::StatusOr<at::Tensor> results[2];
  auto run = [&](int which) {
    RunScope scope;
    const at::Tensor warm = at::zeros({1, 3});
    ASSERT_OK(batched.Predict(warm, at::zeros({1}), {}).status());
    {  // both runs are members before either calls again
      absl::MutexLock lock(&mu);
      ++members;
      mu.Await(absl::Condition(
          +[](int* n) { return *n == 2; }, &members));
    }
    const at::Tensor x = which == 0 ? at::ones({2, 3}) : at::full({1, 3}, -1.0);
    results[which] =
        batched.Predict(x, at::full({x.size(0)}, which == 0 ? 10.0 : 20.0), {});
    // The refused batch is not counted: each call ran alone in the end.
    EXPECT_EQ(scope.mean_batch_rows(), (1.0 + x.size(0)) / 2);
  };
  std::thread a(run, 0);
  std::thread b(run, 1);
  a.join();
  b.join();
  ASSERT_OK(results[0].status());
  EXPECT_TRUE(at::equal(*results[0], at::full({2, 3}, 12.0)));
  EXPECT_THAT(results[1].status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  // Two warm-ups, the batch of 3 rows, then each call alone.
  EXPECT_EQ(picky->calls_.load(), 5);
}

// A call of more rows than max_batch_size goes alone, through the same
// queue and lanes as any other.
TEST(BatchedDenoiserTest, ACallLargerThanTheCapRunsAlone) {
  auto picky = std::make_shared<PickyDenoiser>();
  BatchedDenoiser batched(picky, {.max_batch_size = 4}, "picky");
  RunScope scope;
  ASSERT_OK_AND_ASSIGN(
      at::Tensor out,
      batched.Predict(at::ones({10, 3}), at::full({10}, 5.0), {}));
  EXPECT_TRUE(at::equal(out, at::full({10, 3}, 7.0)));
  EXPECT_EQ(picky->calls_.load(), 1);
  EXPECT_EQ(scope.mean_batch_rows(), 10);
}

}  // namespace
}  // namespace loopserve
