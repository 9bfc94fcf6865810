// Resuming a loop from a checkpoint (Note [resuming a loop] in loop.h), in
// the framework alone: the blocks before the loop are skipped or run again,
// the loop starts where it stopped, and PlanResume decides what a fork may
// change.
#include "blocks/core/resume.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "blocks/core/composite.h"
#include "tests/blocks/core/fake_blocks.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::FakeBlock;
using ::loopserve::testing::FakeDeclarations;
using ::loopserve::testing::FakeLoop;
using ::loopserve::testing::FakeStep;
using ::loopserve::testing::Input;
using ::loopserve::testing::Output;
using ::loopserve::testing::RecordingObserver;
using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

// A pipeline shaped like a denoising one:
//   prepare  (reads seed, makes x: a value the loop carries)
//   encode   (reads prompt, makes cond: a value the loop only reads)
//   loop     (5 iterations of x += cond + i)
//   finish   (reads x, makes y = 2x)
// Each block counts its runs.
struct Counts {
  int prepare = 0;
  int encode = 0;
  int finish = 0;
};

std::unique_ptr<Block> MakePipeline(Counts& counts) {
  auto prepare = std::make_unique<FakeBlock>(
      FakeDeclarations{.inputs = {Input("seed", true)},
                       .intermediate_outputs = {Output("x")}},
      [&counts](BlockState& s) {
        ++counts.prepare;
        s.Set("x", s.Find("seed")->toInt() * 100);
        return absl::OkStatus();
      });
  auto encode = std::make_unique<FakeBlock>(
      FakeDeclarations{.inputs = {Input("prompt", true)},
                       .intermediate_outputs = {Output("cond")}},
      [&counts](BlockState& s) {
        ++counts.encode;
        s.Set("cond", s.Find("prompt")->toInt() * 10);
        return absl::OkStatus();
      });
  auto step = std::make_unique<FakeStep>(
      FakeDeclarations{.inputs = {Input("cond", true)},
                       .intermediate_inputs = {Input("x", true)},
                       .intermediate_outputs = {Output("x")}},
      [](BlockState& s, const LoopIndex& index) {
        c10::IValue& x = *s.Find("x");
        x = x.toInt() + s.Find("cond")->toInt() + index.i;
        return absl::OkStatus();
      });
  auto loop = std::make_unique<FakeLoop>(5);
  EXPECT_OK(loop->SetSubBlocks([&] {
    std::vector<SubBlock> steps;
    steps.push_back({"step", std::move(step)});
    return steps;
  }()));
  auto finish = std::make_unique<FakeBlock>(
      FakeDeclarations{.intermediate_inputs = {Input("x", true)},
                       .intermediate_outputs = {Output("y")}},
      [&counts](BlockState& s) {
        ++counts.finish;
        s.Set("y", s.Find("x")->toInt() * 2);
        return absl::OkStatus();
      });
  auto root = std::make_unique<SequentialBlocks>();
  std::vector<SubBlock> blocks;
  blocks.push_back({"prepare", std::move(prepare)});
  blocks.push_back({"encode", std::move(encode)});
  blocks.push_back({"loop", std::move(loop)});
  blocks.push_back({"finish", std::move(finish)});
  EXPECT_OK(root->SetSubBlocks(std::move(blocks)));
  root->SetName("p");
  return root;
}

PipelineState Inputs(int64_t seed, int64_t prompt) {
  PipelineState state;
  state.SetInput("seed", seed);
  state.SetInput("prompt", prompt);
  return state;
}

// What a checkpoint after iteration `k` of a run holds, taken from a run
// stopped there: the intermediates and the loop's x.
struct Stopped {
  PipelineState state;
  int64_t x = 0;
};

Stopped RunUntil(const Block& root, int64_t k) {
  Stopped stopped{.state = Inputs(1, 2)};
  RecordingObserver observer;
  observer.stop_at = k;
  RunContext context{.observer = &observer};
  EXPECT_THAT(RunBlock(root, Components(), stopped.state, context),
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  stopped.x = observer.seen.back().x.toInt();
  return stopped;
}

TEST(ResumeTest, ResumedRunSkipsTheBlocksBeforeTheLoopAndEndsTheSame) {
  Counts counts;
  std::unique_ptr<Block> root = MakePipeline(counts);
  PipelineState whole = Inputs(1, 2);
  RecordingObserver all;
  RunContext context{.observer = &all};
  ASSERT_OK(RunBlock(*root, Components(), whole, context));
  // x: 100, then + 20 + i for i = 0..4.
  EXPECT_EQ(whole.GetIntermediate("y")->toInt(), 2 * (100 + 100 + 10));

  for (int64_t k : {0, 2, 4}) {
    Counts before;
    std::unique_ptr<Block> stopped_root = MakePipeline(before);
    Stopped stopped = RunUntil(*stopped_root, k);
    EXPECT_EQ(stopped.x, all.seen[k].x.toInt());

    // A new process: the inputs and the intermediates made before the loop,
    // and the loop's carried x.
    Counts after;
    std::unique_ptr<Block> resumed_root = MakePipeline(after);
    PipelineState resumed = Inputs(1, 2);
    resumed.SetIntermediate("cond", *stopped.state.GetIntermediate("cond"));
    BlockState carried;
    carried.Set("x", stopped.x);
    resumed.SetResume({.loop = "p/loop",
                       .next_iteration = k + 1,
                       .carried = carried,
                       .carried_names = {"x"},
                       .changed = {}});
    RecordingObserver rest;
    RunContext resumed_context{.observer = &rest};
    ASSERT_OK(RunBlock(*resumed_root, Components(), resumed, resumed_context));

    EXPECT_EQ(after.prepare, 0);
    EXPECT_EQ(after.encode, 0);
    EXPECT_EQ(after.finish, 1);
    ASSERT_EQ(rest.seen.size(), static_cast<size_t>(4 - k));
    for (size_t j = 0; j < rest.seen.size(); ++j) {
      EXPECT_EQ(rest.seen[j].i, all.seen[k + 1 + j].i);
      EXPECT_EQ(rest.seen[j].x.toInt(), all.seen[k + 1 + j].x.toInt());
    }
    EXPECT_EQ(resumed.GetIntermediate("y")->toInt(),
              whole.GetIntermediate("y")->toInt());
    EXPECT_EQ(resumed.resume(), nullptr);  // taken by the loop
  }
}

TEST(ResumeTest, ResumingAfterTheLastIterationOnlyFinishes) {
  Counts counts;
  std::unique_ptr<Block> root = MakePipeline(counts);
  PipelineState state = Inputs(1, 2);
  state.SetIntermediate("cond", int64_t{20});
  BlockState carried;
  carried.Set("x", int64_t{210});
  state.SetResume({.loop = "p/loop",
                   .next_iteration = 5,
                   .carried = carried,
                   .carried_names = {"x"},
                   .changed = {}});
  RecordingObserver observer;
  RunContext context{.observer = &observer};
  ASSERT_OK(RunBlock(*root, Components(), state, context));
  EXPECT_THAT(observer.seen, IsEmpty());
  EXPECT_EQ(state.GetIntermediate("y")->toInt(), 420);
}

TEST(ResumeTest, BlocksToRunAgainRunWithTheForkedInputs) {
  Counts counts;
  std::unique_ptr<Block> root = MakePipeline(counts);
  PipelineState state = Inputs(1, 3);  // the fork: prompt 2 -> 3
  state.SetIntermediate("cond", int64_t{20});
  BlockState carried;
  carried.Set("x", int64_t{121});  // after iterations 0 and 1
  state.SetResume({.loop = "p/loop",
                   .next_iteration = 2,
                   .carried = carried,
                   .carried_names = {"x"},
                   .changed = {"prompt"}});
  RecordingObserver observer;
  RunContext context{.observer = &observer};
  ASSERT_OK(RunBlock(*root, Components(), state, context));
  EXPECT_EQ(counts.prepare, 0);
  EXPECT_EQ(counts.encode, 1);
  ASSERT_EQ(observer.seen.size(), 3u);
  EXPECT_EQ(observer.seen[0].x.toInt(), 121 + 30 + 2);  // the new cond
}

TEST(ResumeTest, PlanNamesWhatTheLoopCarriesAndAllowsWhatItDoesNot) {
  Counts counts;
  std::unique_ptr<Block> root = MakePipeline(counts);
  ASSERT_OK_AND_ASSIGN(ResumePlan plan,
                       PlanResume(*root, "p/loop", {"prompt"}, {"gen"}));
  EXPECT_EQ(plan.loop->path(), "p/loop");
  EXPECT_THAT(plan.carried_names, UnorderedElementsAre("x", "gen"));
  ASSERT_OK(PlanResume(*root, "p/loop", {}, {}).status());
  ASSERT_OK(PlanResume(*root, "p/loop", {"cond"}, {}).status());
}

TEST(ResumeTest, PlanRefusesAnInputConsumedIntoWhatTheLoopCarries) {
  Counts counts;
  std::unique_ptr<Block> root = MakePipeline(counts);
  EXPECT_THAT(
      PlanResume(*root, "p/loop", {"seed"}, {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("resuming changes 'seed'"),
                     HasSubstr("block 'p/prepare'"), HasSubstr("'x'"))));
  // A stateful value (a generator) made before the loop counts as carried.
  EXPECT_THAT(PlanResume(*root, "p/loop", {"prompt"}, {"cond"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("resuming changes 'prompt'")));
}

// encode -> cond -> prepare -> x -> loop: when a fork changes the prompt,
// encode runs again, and whether its cond came out different decides
// whether prepare would have to run again, which it may not (it makes x).
std::unique_ptr<Block> MakeChainedPipeline(Counts& counts, int64_t scale) {
  auto encode = std::make_unique<FakeBlock>(
      FakeDeclarations{.inputs = {Input("prompt", true)},
                       .intermediate_outputs = {Output("cond")}},
      [&counts, scale](BlockState& s) {
        ++counts.encode;
        // Prompts up to 9 encode the same.
        s.Set("cond", s.Find("prompt")->toInt() / scale);
        return absl::OkStatus();
      });
  auto prepare = std::make_unique<FakeBlock>(
      FakeDeclarations{.intermediate_inputs = {Input("cond", true)},
                       .intermediate_outputs = {Output("x")}},
      [&counts](BlockState& s) {
        ++counts.prepare;
        s.Set("x", s.Find("cond")->toInt());
        return absl::OkStatus();
      });
  auto step = std::make_unique<FakeStep>(
      FakeDeclarations{.intermediate_inputs = {Input("x", true)},
                       .intermediate_outputs = {Output("x")}},
      [](BlockState& s, const LoopIndex&) {
        c10::IValue& x = *s.Find("x");
        x = x.toInt() + 1;
        return absl::OkStatus();
      });
  auto loop = std::make_unique<FakeLoop>(3);
  std::vector<SubBlock> steps;
  steps.push_back({"step", std::move(step)});
  EXPECT_OK(loop->SetSubBlocks(std::move(steps)));
  auto chained = std::make_unique<SequentialBlocks>();
  std::vector<SubBlock> blocks;
  blocks.push_back({"encode", std::move(encode)});
  blocks.push_back({"prepare", std::move(prepare)});
  blocks.push_back({"loop", std::move(loop)});
  EXPECT_OK(chained->SetSubBlocks(std::move(blocks)));
  chained->SetName("c");
  return chained;
}

TEST(ResumeTest, AValueMadeAnewDecidesWhetherTheBlocksAfterItRunAgain) {
  for (int64_t prompt : {3, 12}) {
    Counts counts;
    std::unique_ptr<Block> root = MakeChainedPipeline(counts, 10);
    PipelineState state;
    state.SetInput("prompt", prompt);  // was 2: cond 0
    state.SetIntermediate("cond", int64_t{0});
    BlockState carried;
    carried.Set("x", int64_t{1});
    state.SetResume({.loop = "c/loop",
                     .next_iteration = 1,
                     .carried = carried,
                     .carried_names = {"x"},
                     .changed = {"prompt"}});
    RunContext context;
    absl::Status status = RunBlock(*root, Components(), state, context);
    EXPECT_EQ(counts.encode, 1);
    EXPECT_EQ(counts.prepare, 0);
    if (prompt == 3) {  // encodes as before: prepare's x stands
      ASSERT_OK(status);
      EXPECT_EQ(state.GetIntermediate("x")->toInt(), 3);
    } else {
      EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                                   AllOf(HasSubstr("resuming changes 'cond'"),
                                         HasSubstr("block 'c/prepare'"))));
    }
  }
}

TEST(ResumeTest, PlanNeedsALoopOfThePipeline) {
  Counts counts;
  std::unique_ptr<Block> root = MakePipeline(counts);
  EXPECT_THAT(PlanResume(*root, "p/elsewhere", {}, {}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("p/elsewhere")));
  EXPECT_THAT(PlanResume(*root, "p/encode", {}, {}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not a loop")));
  EXPECT_THAT(PlanResume(*root, "p/loop/step", {}, {}),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST(ResumeTest, PathWithin) {
  EXPECT_TRUE(PathWithin("p/loop", "p"));
  EXPECT_TRUE(PathWithin("p/loop", "p/loop"));
  EXPECT_FALSE(PathWithin("p/loop2", "p/loop"));
  EXPECT_FALSE(PathWithin("p", "p/loop"));
}

}  // namespace
}  // namespace loopserve
