#include "blocks/core/loop.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/blocks/core/fake_blocks.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::FakeBlock;
using ::loopserve::testing::FakeDeclarations;
using ::loopserve::testing::FakeLoop;
using ::loopserve::testing::FakeStep;
using ::loopserve::testing::Input;
using ::loopserve::testing::Names;
using ::loopserve::testing::Output;
using ::loopserve::testing::RecordingObserver;
using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// x += 1 per step.
std::unique_ptr<FakeStep> Increment() {
  return std::make_unique<FakeStep>(
      FakeDeclarations{.inputs = {Input("x", true)},
                       .intermediate_outputs = {Output("x")}},
      [](BlockState& s, const LoopIndex&) {
        c10::IValue& x = *s.Find("x");
        x = x.toInt() + 1;
        return absl::OkStatus();
      });
}

TEST(LoopTest, InputsAreLoopInputsThenUnproducedSubBlockInputs) {
  ASSERT_OK_AND_ASSIGN(
      auto loop,
      FromBlocks<FakeLoop>(
          BlockRegistry(),
          {{"scale", std::make_unique<FakeStep>(FakeDeclarations{
                         .inputs = {Input("latents"), Input("eta")},
                         .intermediate_outputs = {Output("scaled")}})},
           {"predict", std::make_unique<FakeStep>(FakeDeclarations{
                           .inputs = {Input("scaled"), Input("num_steps"),
                                      Input("guidance")},
                           .intermediate_outputs = {Output("noise")}})}},
          /*iterations=*/1,
          FakeDeclarations{.inputs = {Input("num_steps", true)}}));
  EXPECT_THAT(Names(loop->inputs()),
              ElementsAre("num_steps", "latents", "eta", "guidance"));
  EXPECT_TRUE(loop->signature().inputs[0].required);  // the loop's own
}

TEST(LoopTest, IntermediateInputsStartWithTheLoops) {
  ASSERT_OK_AND_ASSIGN(
      auto loop,
      FromBlocks<FakeLoop>(
          BlockRegistry(),
          {{"step", std::make_unique<FakeStep>(FakeDeclarations{
                        .intermediate_inputs = {Input("latents"),
                                                Input("timesteps")}})}},
          1, FakeDeclarations{.intermediate_inputs = {Input("timesteps")}}));
  EXPECT_THAT(Names(loop->intermediate_inputs()),
              ElementsAre("timesteps", "latents"));
}

TEST(LoopTest, OutputsAreSubBlockOutputsThenLoopOutputs) {
  ASSERT_OK_AND_ASSIGN(
      auto loop,
      FromBlocks<FakeLoop>(
          BlockRegistry(),
          {{"a", std::make_unique<FakeStep>(FakeDeclarations{
                     .intermediate_outputs = {Output("latents")}})},
           {"b", std::make_unique<FakeStep>(FakeDeclarations{
                     .intermediate_outputs = {Output("denoised"),
                                              Output("latents")}})}},
          1,
          FakeDeclarations{.intermediate_outputs = {Output("latents"),
                                                    Output("step_count")}}));
  EXPECT_THAT(Names(loop->intermediate_outputs()),
              ElementsAre("latents", "denoised", "step_count"));
}

TEST(LoopTest, HoldsOnlyLoopBlocks) {
  EXPECT_THAT(FromBlocks<FakeLoop>(
                  BlockRegistry(),
                  {{"leaf", std::make_unique<FakeBlock>(FakeDeclarations{})}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sub-block 'leaf' (FakeBlock) is not a loop "
                                 "block")));
}

TEST(LoopTest, ObserverSeesEveryIterationInOrder) {
  ASSERT_OK_AND_ASSIGN(
      auto loop, FromBlocks<FakeLoop>(BlockRegistry(), {{"inc", Increment()}},
                                      /*iterations=*/4));
  loop->SetName("loop");
  PipelineState state;
  state.SetInput("x", int64_t{10});
  RecordingObserver observer;
  RunContext context{.observer = &observer};
  ASSERT_OK(RunBlock(*loop, Components(), state, context));

  ASSERT_EQ(observer.seen.size(), 4u);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(observer.seen[i].loop, "loop");
    EXPECT_EQ(observer.seen[i].i, i);
    EXPECT_EQ(observer.seen[i].total, 4);
    EXPECT_EQ(observer.seen[i].x.toInt(), 11 + i);
  }
  EXPECT_EQ(state.GetIntermediate("x")->toInt(), 14);
}

TEST(LoopTest, ObserverStopEndsTheLoopWithItsStatus) {
  ASSERT_OK_AND_ASSIGN(
      auto loop, FromBlocks<FakeLoop>(BlockRegistry(), {{"inc", Increment()}},
                                      /*iterations=*/100));
  loop->SetName("loop");
  PipelineState state;
  state.SetInput("x", int64_t{0});
  RecordingObserver observer;
  observer.stop_at = 2;
  observer.stop_status = absl::DeadlineExceededError("deadline passed");
  RunContext context{.observer = &observer};

  absl::Status status = RunBlock(*loop, Components(), state, context);
  // Unchanged: no block is named in a stop the observer asked for.
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kDeadlineExceeded, "deadline passed"));
  EXPECT_EQ(AttributedBlockPath(status), "");
  EXPECT_EQ(observer.seen.size(), 3u);  // iterations 0, 1, 2; no more
  // The loop ended before SetBlockState.
  EXPECT_EQ(state.GetIntermediate("x"), nullptr);
}

TEST(LoopTest, LoopBlockErrorsNameTheLoopBlock) {
  auto failing = std::make_unique<FakeStep>(
      FakeDeclarations{}, [](BlockState&, const LoopIndex& index) {
        if (index.i == 1) return absl::InternalError("NaN in latents");
        return absl::OkStatus();
      });
  ASSERT_OK_AND_ASSIGN(
      auto loop, FromBlocks<FakeLoop>(
                     BlockRegistry(),
                     {{"inc", Increment()}, {"check", std::move(failing)}},
                     /*iterations=*/5));
  loop->SetName("denoise");
  PipelineState state;
  state.SetInput("x", int64_t{0});
  RecordingObserver observer;
  RunContext context{.observer = &observer};
  EXPECT_THAT(RunBlock(*loop, Components(), state, context),
              StatusIs(absl::StatusCode::kInternal,
                       "block 'denoise/check' (FakeStep): NaN in latents"));
  EXPECT_EQ(observer.seen.size(), 1u);
}

TEST(LoopTest, LoopBlockExceptionsNameTheLoopBlock) {
  auto throwing = std::make_unique<FakeStep>(
      FakeDeclarations{}, [](BlockState&, const LoopIndex&) -> absl::Status {
        throw std::runtime_error("boom");
      });
  ASSERT_OK_AND_ASSIGN(
      auto loop,
      FromBlocks<FakeLoop>(BlockRegistry(), {{"throws", std::move(throwing)}}));
  loop->SetName("denoise");
  PipelineState state;
  RunContext context;
  EXPECT_THAT(RunBlock(*loop, Components(), state, context),
              StatusIs(absl::StatusCode::kInternal,
                       "block 'denoise/throws' (FakeStep): internal error "
                       "(the server log has the details)"));
}

TEST(LoopTest, LoopInsideSequentialRunsAndReportsItsPath) {
  ASSERT_OK_AND_ASSIGN(
      auto loop, FromBlocks<FakeLoop>(BlockRegistry(), {{"inc", Increment()}},
                                      /*iterations=*/2));
  ASSERT_OK_AND_ASSIGN(
      auto pipeline,
      FromBlocks<SequentialBlocks>(
          BlockRegistry(),
          {{"denoise", std::move(loop)},
           {"double",
            std::make_unique<FakeBlock>(
                FakeDeclarations{.inputs = {Input("x", true)},
                                 .intermediate_outputs = {Output("y")}},
                [](BlockState& s) {
                  s.Set("y", s.Find("x")->toInt() * 2);
                  return absl::OkStatus();
                })}}));
  pipeline->SetName("pipe");
  // x is produced by the loop, so the pipeline's only input is x for the
  // loop; "double" reads the loop's x (Note [input resolution]).
  EXPECT_THAT(Names(pipeline->inputs()), ElementsAre("x"));
  PipelineState state;
  state.SetInput("x", int64_t{1});
  RecordingObserver observer;
  RunContext context{.observer = &observer};
  ASSERT_OK(RunBlock(*pipeline, Components(), state, context));
  ASSERT_EQ(observer.seen.size(), 2u);
  EXPECT_EQ(observer.seen[0].loop, "pipe/denoise");
  EXPECT_EQ(state.GetIntermediate("y")->toInt(), 6);
}

}  // namespace
}  // namespace loopserve
