// The seed example of diffusers' LoopSequentialPipelineBlocks guide, run as
// the guide shows it.
#include "blocks/examples/seed_blocks.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "blocks/builtin_blocks.h"
#include "tests/blocks/core/fake_blocks.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::Names;
using ::loopserve::testing::RecordingObserver;
using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;

class SeedLoopTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_OK(RegisterBuiltinBlocks(registry_)); }

  // Runs `pipeline` with the given inputs; the observer records iterations.
  absl::Status Run(const Block& pipeline, c10::IValue num_steps,
                   c10::IValue x) {
    if (!num_steps.isNone()) state_.SetInput("num_steps", num_steps);
    if (!x.isNone()) state_.SetInput("x", x);
    RunContext context{.observer = &observer_};
    return RunBlock(pipeline, components_, state_, context);
  }

  const c10::IValue& FinalX() const { return *state_.GetIntermediate("x"); }

  BlockRegistry registry_;
  Components components_;
  PipelineState state_;
  RecordingObserver observer_;
};

TEST_F(SeedLoopTest, OneBlockCountsToN) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop(registry_));
  ASSERT_OK(Run(*loop, int64_t{5}, int64_t{0}));
  EXPECT_EQ(FinalX().toInt(), 5);
}

TEST_F(SeedLoopTest, TwoBlocksCountToTwoN) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop2(registry_));
  ASSERT_OK(Run(*loop, int64_t{5}, int64_t{0}));
  EXPECT_EQ(FinalX().toInt(), 10);
}

TEST_F(SeedLoopTest, ObserverSeesOneToNOnceEachInOrder) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop(registry_));
  ASSERT_OK(Run(*loop, int64_t{7}, int64_t{0}));
  std::vector<int64_t> xs;
  for (const auto& seen : observer_.seen) {
    EXPECT_EQ(seen.loop, "seed-loop");
    EXPECT_EQ(seen.total, 7);
    xs.push_back(seen.x.toInt());
  }
  EXPECT_THAT(xs, ElementsAre(1, 2, 3, 4, 5, 6, 7));
}

TEST_F(SeedLoopTest, TwoBlocksObserverSeesEvenNumbers) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop2(registry_));
  ASSERT_OK(Run(*loop, int64_t{4}, int64_t{0}));
  std::vector<int64_t> xs;
  for (const auto& seen : observer_.seen) xs.push_back(seen.x.toInt());
  EXPECT_THAT(xs, ElementsAre(2, 4, 6, 8));
}

TEST_F(SeedLoopTest, ZeroStepsLeavesX) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop(registry_));
  ASSERT_OK(Run(*loop, int64_t{0}, int64_t{42}));
  EXPECT_EQ(FinalX().toInt(), 42);
  EXPECT_TRUE(observer_.seen.empty());
}

TEST_F(SeedLoopTest, DoubleX) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop2(registry_));
  ASSERT_OK(Run(*loop, int64_t{3}, 0.5));
  EXPECT_DOUBLE_EQ(FinalX().toDouble(), 6.5);
}

TEST_F(SeedLoopTest, TensorXAndTheInputIsUntouched) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop(registry_));
  const at::Tensor x0 = at::zeros({1, 4, 64, 64});
  ASSERT_OK(Run(*loop, int64_t{5}, x0));
  EXPECT_TRUE(at::equal(FinalX().toTensor(), at::full({1, 4, 64, 64}, 5.0)));
  EXPECT_TRUE(
      at::equal(x0, at::zeros({1, 4, 64, 64})));  // Note [out-of-place x]
  ASSERT_EQ(observer_.seen.size(), 5u);
  // Every iteration's tensor is its own: an observer may keep them.
  for (size_t i = 0; i < observer_.seen.size(); ++i) {
    EXPECT_EQ(observer_.seen[i].x.toTensor().max().item<float>(), i + 1.0f);
  }
}

TEST_F(SeedLoopTest, ClassAndInstanceEntriesBothWork) {
  // The guide's two forms: {"block1": LoopBlock} and
  // {"block1": LoopBlock(), "block2": LoopBlock}.
  ASSERT_OK_AND_ASSIGN(
      auto by_instance,
      FromBlocks<LoopWrapper>(registry_,
                              {{"block1", std::make_unique<LoopBlock>()}}));
  ASSERT_OK_AND_ASSIGN(auto mixed, MakeSeedLoop2(registry_));
  ASSERT_EQ(mixed->sub_blocks().size(), 2u);
  EXPECT_EQ(mixed->sub_blocks()[0].block->type_name(), "LoopBlock");
  EXPECT_EQ(mixed->sub_blocks()[1].block->type_name(), "LoopBlock");
  ASSERT_OK(Run(*by_instance, int64_t{3}, int64_t{1}));
  EXPECT_EQ(FinalX().toInt(), 4);
}

TEST_F(SeedLoopTest, Declarations) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop2(registry_));
  const BlockSignature& sig = loop->signature();
  EXPECT_THAT(Names(sig.inputs), ElementsAre("num_steps", "x"));
  EXPECT_TRUE(sig.inputs[0].required);
  EXPECT_EQ(sig.inputs[0].type_hint, TypeHint::Int());
  EXPECT_TRUE(sig.inputs[1].required);
  EXPECT_EQ(sig.inputs[1].type_hint.ToString(), "int | double | tensor");
  EXPECT_THAT(Names(sig.intermediate_outputs), ElementsAre("x"));

  BlockDescription description = loop->Describe();
  EXPECT_EQ(description.name, "seed-loop-2");
  EXPECT_EQ(description.type, "LoopWrapper");
  EXPECT_EQ(description.model_name, "test");
  EXPECT_EQ(description.description, "I'm a loop!!");
  EXPECT_EQ(BlockKindName(description.kind), "loop");
  ASSERT_EQ(description.blocks.size(), 2u);
  EXPECT_EQ(description.blocks[1].path, "seed-loop-2/block2");
}

TEST_F(SeedLoopTest, MissingXIsNamed) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop(registry_));
  EXPECT_THAT(Run(*loop, int64_t{5}, c10::IValue()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "block 'seed-loop' (LoopWrapper): Required input 'x' "
                       "is missing"));
}

TEST_F(SeedLoopTest, MissingNumStepsIsNamed) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop(registry_));
  EXPECT_THAT(Run(*loop, c10::IValue(), int64_t{0}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "block 'seed-loop' (LoopWrapper): Required input "
                       "'num_steps' is missing"));
}

TEST_F(SeedLoopTest, WrongKindsAreNamed) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop(registry_));
  EXPECT_THAT(Run(*loop, std::string("5"), int64_t{0}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'num_steps' expects int, got string")));
}

TEST_F(SeedLoopTest, NegativeNumStepsIsNamed) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop(registry_));
  EXPECT_THAT(Run(*loop, int64_t{-1}, int64_t{0}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'num_steps' must be >= 0, got -1")));
}

TEST_F(SeedLoopTest, ObserverStopEndsAtThatIteration) {
  ASSERT_OK_AND_ASSIGN(auto loop, MakeSeedLoop(registry_));
  observer_.stop_at = 2;
  EXPECT_THAT(Run(*loop, int64_t{1000}, int64_t{0}),
              StatusIs(absl::StatusCode::kCancelled, "client went away"));
  ASSERT_EQ(observer_.seen.size(), 3u);
  EXPECT_EQ(observer_.seen.back().x.toInt(), 3);
}

TEST_F(SeedLoopTest, SeedTypesAreRegistered) {
  EXPECT_THAT(registry_.TypeNames(),
              IsSupersetOf({"LoopBlock", "LoopWrapper", "Sequential"}));
  EXPECT_THAT(RegisterSeedBlocks(registry_),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("Loop")));
}

TEST_F(SeedLoopTest, RegisteredLoopWrapperCanBeAssembled) {
  // The registry route a configuration file will take: create by name, then
  // place the sub-blocks.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Block> block,
                       registry_.Create("LoopWrapper"));
  auto* loop = dynamic_cast<LoopWrapper*>(block.get());
  ASSERT_NE(loop, nullptr);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Block> step,
                       registry_.Create("LoopBlock"));
  std::vector<SubBlock> sub_blocks;
  sub_blocks.push_back({"block1", std::move(step)});
  ASSERT_OK(loop->SetSubBlocks(std::move(sub_blocks)));
  ASSERT_OK(Run(*loop, int64_t{2}, int64_t{0}));
  EXPECT_EQ(FinalX().toInt(), 2);
}

}  // namespace
}  // namespace loopserve
