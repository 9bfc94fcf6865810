#include "blocks/core/composite.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/blocks/core/fake_blocks.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::FakeBlock;
using ::loopserve::testing::FakeDeclarations;
using ::loopserve::testing::Input;
using ::loopserve::testing::Names;
using ::loopserve::testing::Output;
using ::loopserve::testing::Roles;
using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A registry holding only "FakeBlock" (reading "x", producing "y").
BlockRegistry FakeRegistry() {
  BlockRegistry registry;
  EXPECT_OK(registry.Register(
      "FakeBlock",
      [](const BlockParams&) -> absl::StatusOr<std::unique_ptr<Block>> {
        return std::make_unique<FakeBlock>(FakeDeclarations{
            .inputs = {Input("x")}, .intermediate_outputs = {Output("y")}});
      }));
  return registry;
}

TEST(SequentialTest, InputsAreSubBlockInputsMinusEarlierOutputs) {
  ASSERT_OK_AND_ASSIGN(
      auto seq,
      FromBlocks<SequentialBlocks>(
          FakeRegistry(),
          {{"a", std::make_unique<FakeBlock>(FakeDeclarations{
                     .inputs = {Input("prompt"), Input("seed")},
                     .intermediate_outputs = {Output("latents")}})},
           {"b", std::make_unique<FakeBlock>(FakeDeclarations{
                     // latents: produced by a; seed: declared by a first.
                     .inputs = {Input("latents"), Input("seed", true),
                                Input("steps")},
                     .intermediate_outputs = {Output("latents"),
                                              Output("image")}})}}));
  EXPECT_THAT(Names(seq->inputs()), ElementsAre("prompt", "seed", "steps"));
  // First declaration wins: "seed" keeps a's (optional) declaration.
  EXPECT_FALSE(seq->signature().inputs[1].required);
  EXPECT_THAT(Names(seq->intermediate_outputs()),
              ElementsAre("latents", "image"));
}

TEST(SequentialTest, IntermediateInputsFollowTheSameRule) {
  ASSERT_OK_AND_ASSIGN(
      auto seq, FromBlocks<SequentialBlocks>(
                    FakeRegistry(),
                    {{"a", std::make_unique<FakeBlock>(FakeDeclarations{
                               .intermediate_inputs = {Input("timesteps")},
                               .intermediate_outputs = {Output("latents")}})},
                     {"b", std::make_unique<FakeBlock>(FakeDeclarations{
                               .intermediate_inputs = {Input("latents"),
                                                       Input("timesteps"),
                                                       Input("embeds")}})}}));
  EXPECT_THAT(Names(seq->intermediate_inputs()),
              ElementsAre("timesteps", "embeds"));
}

TEST(SequentialTest, RunsSubBlocksInOrderOnOneState) {
  auto add = [](std::string from, std::string to, int64_t k) {
    return std::make_unique<FakeBlock>(
        FakeDeclarations{.inputs = {Input(from, true)},
                         .intermediate_outputs = {Output(to)}},
        [from, to, k](BlockState& s) {
          s.Set(to, s.Find(from)->toInt() * 10 + k);
          return absl::OkStatus();
        });
  };
  ASSERT_OK_AND_ASSIGN(
      auto seq, FromBlocks<SequentialBlocks>(FakeRegistry(),
                                             {{"first", add("a", "b", 1)},
                                              {"second", add("b", "c", 2)}}));
  PipelineState state;
  state.SetInput("a", int64_t{0});
  RunContext context;
  ASSERT_OK(RunBlock(*seq, Components(), state, context));
  EXPECT_EQ(state.GetIntermediate("c")->toInt(), 12);
}

TEST(SequentialTest, ErrorsNameTheFailingSubBlockOnce) {
  ASSERT_OK_AND_ASSIGN(
      auto seq, FromBlocks<SequentialBlocks>(
                    FakeRegistry(),
                    {{"ok", std::make_unique<FakeBlock>(FakeDeclarations{})},
                     {"needs_x", std::make_unique<FakeBlock>(FakeDeclarations{
                                     .inputs = {Input("x", true)}})}}));
  seq->SetName("pipe");
  PipelineState state;
  RunContext context;
  EXPECT_THAT(RunBlock(*seq, Components(), state, context),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "block 'pipe/needs_x' (FakeBlock): Required input "
                       "'x' is missing"));
}

TEST(FromBlocksTest, TakesTypeNamesAndInstances) {
  ASSERT_OK_AND_ASSIGN(
      auto seq,
      FromBlocks<SequentialBlocks>(
          FakeRegistry(),
          {{"by_name", "FakeBlock"},
           {"by_instance", std::make_unique<FakeBlock>(FakeDeclarations{})}}));
  ASSERT_EQ(seq->sub_blocks().size(), 2u);
  EXPECT_EQ(seq->sub_blocks()[0].name, "by_name");
  EXPECT_EQ(seq->sub_blocks()[1].name, "by_instance");
  EXPECT_THAT(Names(seq->inputs()), ElementsAre("x"));
}

TEST(FromBlocksTest, UnknownTypeIsNotFound) {
  EXPECT_THAT(
      FromBlocks<SequentialBlocks>(FakeRegistry(), {{"block1", "NoSuchBlock"}}),
      StatusIs(absl::StatusCode::kNotFound,
               HasSubstr("sub-block 'block1': unknown block type "
                         "'NoSuchBlock'")));
}

TEST(FromBlocksTest, RepeatedOrBadNamesAreRefused) {
  EXPECT_THAT(FromBlocks<SequentialBlocks>(
                  FakeRegistry(), {{"a", "FakeBlock"}, {"a", "FakeBlock"}}),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr("'a' appears more than once")));
  EXPECT_THAT(
      FromBlocks<SequentialBlocks>(FakeRegistry(), {{"a/b", "FakeBlock"}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("must not contain '/'")));
  EXPECT_THAT(
      FromBlocks<SequentialBlocks>(FakeRegistry(), {{"", "FakeBlock"}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-empty")));
}

TEST(FromBlocksTest, AnInstanceIsPlacedOnce) {
  std::vector<BlockEntry> entries;
  entries.push_back({"a", std::make_unique<FakeBlock>(FakeDeclarations{})});
  ASSERT_OK(ResolveBlockEntries(FakeRegistry(), entries).status());
  EXPECT_THAT(ResolveBlockEntries(FakeRegistry(), entries),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("already placed")));
}

TEST(CompositeTest, SubBlocksAreSetOnce) {
  SequentialBlocks seq;
  std::vector<SubBlock> first;
  first.push_back({"a", std::make_unique<FakeBlock>(FakeDeclarations{})});
  ASSERT_OK(seq.SetSubBlocks(std::move(first)));
  std::vector<SubBlock> second;
  second.push_back({"b", std::make_unique<FakeBlock>(FakeDeclarations{})});
  EXPECT_THAT(seq.SetSubBlocks(std::move(second)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("already set")));
}

TEST(CompositeTest, SubBlocksCannotFollowTheSignature) {
  SequentialBlocks seq;
  (void)seq.signature();
  std::vector<SubBlock> blocks;
  blocks.push_back({"a", std::make_unique<FakeBlock>(FakeDeclarations{})});
  EXPECT_THAT(seq.SetSubBlocks(std::move(blocks)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("before the block is run or described")));
}

TEST(CompositeTest, PathsFollowTheTreeWhateverTheOrderOfAssembly) {
  ASSERT_OK_AND_ASSIGN(
      auto inner,
      FromBlocks<SequentialBlocks>(FakeRegistry(), {{"leaf", "FakeBlock"}}));
  const Block* leaf = inner->sub_blocks()[0].block.get();
  EXPECT_EQ(leaf->path(), "leaf");
  ASSERT_OK_AND_ASSIGN(
      auto outer, FromBlocks<SequentialBlocks>(FakeRegistry(),
                                               {{"inner", std::move(inner)}}));
  outer->SetName("pipe");
  EXPECT_EQ(leaf->path(), "pipe/inner/leaf");
  EXPECT_EQ(leaf->name(), "leaf");
  EXPECT_EQ(leaf->Label(), "block 'pipe/inner/leaf' (FakeBlock)");
}

TEST(CompositeTest, DescribeIsTheTree) {
  ASSERT_OK_AND_ASSIGN(auto seq, FromBlocks<SequentialBlocks>(
                                     FakeRegistry(), {{"a", "FakeBlock"}}));
  seq->SetName("pipe");
  BlockDescription description = seq->Describe();
  EXPECT_EQ(description.name, "pipe");
  EXPECT_EQ(description.type, "Sequential");
  EXPECT_EQ(BlockKindName(description.kind), "sequential");
  EXPECT_THAT(Names(description.signature.inputs), ElementsAre("x"));
  ASSERT_EQ(description.blocks.size(), 1u);
  EXPECT_EQ(description.blocks[0].path, "pipe/a");
  EXPECT_EQ(description.blocks[0].type, "FakeBlock");
  EXPECT_EQ(BlockKindName(description.blocks[0].kind), "block");
  EXPECT_THAT(Names(description.blocks[0].signature.intermediate_outputs),
              ElementsAre("y"));
}

TEST(CompositeTest, ExpectedComponentsAreMergedAndChecked) {
  ASSERT_OK_AND_ASSIGN(
      auto seq,
      FromBlocks<SequentialBlocks>(
          FakeRegistry(),
          {{"a", std::make_unique<FakeBlock>(FakeDeclarations{
                     .expected_components = {{.role = "scheduler"}}})},
           {"b", std::make_unique<FakeBlock>(FakeDeclarations{
                     .expected_components = {
                         {.role = "scheduler"},
                         {.role = "unet", .type = "torchscript"}}})}}));
  EXPECT_THAT(Roles(seq->expected_components()),
              ElementsAre("scheduler", "unet"));

  Components components;
  ASSERT_OK(components.Add("scheduler", std::make_shared<const int>(1)));
  EXPECT_THAT(CheckComponents(seq->expected_components(), components,
                              "pipeline 'pipe'"),
              StatusIs(absl::StatusCode::kNotFound,
                       "pipeline 'pipe' expects component 'unet' "
                       "(torchscript), which is not loaded"));
}

}  // namespace
}  // namespace loopserve
