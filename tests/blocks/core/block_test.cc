#include "blocks/core/block.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdexcept>

#include "tests/blocks/core/fake_blocks.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::FakeBlock;
using ::loopserve::testing::FakeStep;
using ::loopserve::testing::Input;
using ::loopserve::testing::Output;
using ::loopserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

absl::Status RunAlone(const Block& block, PipelineState& state) {
  RunContext context;
  return RunBlock(block, Components(), state, context);
}

TEST(GetBlockStateTest, AppliesDefaults) {
  FakeBlock block(
      {.inputs = {{.name = "guidance_scale",
                   .type_hint = TypeHint::Double(),
                   .default_value = 7.5},
                  {.name = "steps", .default_value = int64_t{50}}}});
  PipelineState state;
  state.SetInput("steps", int64_t{10});
  ASSERT_OK_AND_ASSIGN(BlockState block_state, block.GetBlockState(state));
  EXPECT_EQ(block_state.Find("guidance_scale")->toDouble(), 7.5);
  EXPECT_EQ(block_state.Find("steps")->toInt(), 10);  // given beats default
}

TEST(GetBlockStateTest, OptionalWithoutValueIsNone) {
  FakeBlock block({.inputs = {Input("mask")}});
  ASSERT_OK_AND_ASSIGN(BlockState block_state,
                       block.GetBlockState(PipelineState()));
  ASSERT_NE(block_state.Find("mask"), nullptr);
  EXPECT_TRUE(block_state.Find("mask")->isNone());
}

TEST(GetBlockStateTest, MissingRequiredInputNamesInputAndBlock) {
  FakeBlock block({.inputs = {Input("x", /*required=*/true)}});
  block.SetName("pipe");
  EXPECT_THAT(block.GetBlockState(PipelineState()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "block 'pipe' (FakeBlock): Required input 'x' is "
                       "missing"));
}

TEST(GetBlockStateTest, MissingRequiredIntermediateInput) {
  FakeBlock block({.intermediate_inputs = {Input("latents", true)}});
  PipelineState state;
  state.SetInput("latents", at::zeros({1}));  // a user input does not count
  EXPECT_THAT(block.GetBlockState(state),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("Required intermediate input 'latents' is "
                                 "missing")));
}

TEST(GetBlockStateTest, WrongKindNamesInputAndTypes) {
  FakeBlock block({.inputs = {{.name = "num_steps",
                               .type_hint = TypeHint::Int(),
                               .required = true}}});
  PipelineState state;
  state.SetInput("num_steps", std::string("5"));
  EXPECT_THAT(block.GetBlockState(state),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'num_steps' expects int, got "
                                 "string")));
}

TEST(GetBlockStateTest, ProducedValueSupersedesUserInput) {
  // Note [input resolution].
  FakeBlock block({.inputs = {Input("x")}});
  PipelineState state;
  state.SetInput("x", int64_t{1});
  state.SetIntermediate("x", int64_t{9});
  ASSERT_OK_AND_ASSIGN(BlockState block_state, block.GetBlockState(state));
  EXPECT_EQ(block_state.Find("x")->toInt(), 9);
}

TEST(SetBlockStateTest, WritesOutputsAndLeavesInputs) {
  FakeBlock block(
      {.inputs = {Input("x", true)}, .intermediate_outputs = {Output("y")}},
      [](BlockState& s) {
        s.Set("y", s.Find("x")->toInt() * 2);
        s.Set("x", int64_t{-1});  // not an output: not written
        return absl::OkStatus();
      });
  PipelineState state;
  state.SetInput("x", int64_t{21});
  ASSERT_OK(RunAlone(block, state));
  EXPECT_EQ(state.GetIntermediate("y")->toInt(), 42);
  EXPECT_EQ(state.GetIntermediate("x"), nullptr);
  EXPECT_EQ(state.GetInput("x")->toInt(), 21);
}

TEST(SetBlockStateTest, MissingOutputNamesIt) {
  FakeBlock block({.intermediate_outputs = {Output("image")}});
  block.SetName("decode");
  PipelineState state;
  EXPECT_THAT(RunAlone(block, state),
              StatusIs(absl::StatusCode::kInternal,
                       "block 'decode' (FakeBlock): Intermediate output "
                       "'image' is missing in block state"));
}

TEST(SetBlockStateTest, WritesBackReplacedIntermediateInputs) {
  FakeBlock block({.intermediate_inputs = {Input("latents", true)}},
                  [](BlockState& s) {
                    s.Set("latents", s.Find("latents")->toTensor() * 2);
                    return absl::OkStatus();
                  });
  PipelineState state;
  state.SetIntermediate("latents", at::ones({2}));
  ASSERT_OK(RunAlone(block, state));
  EXPECT_TRUE(at::equal(state.GetIntermediate("latents")->toTensor(),
                        at::full({2}, 2.0)));
}

TEST(RunBlockTest, ExceptionsBecomeStatusNamingTheBlock) {
  FakeBlock torch_error({}, [](BlockState&) -> absl::Status {
    at::ones({2, 3}).matmul(at::ones({2, 3}));  // shapes do not multiply
    return absl::OkStatus();
  });
  torch_error.SetName("denoiser");
  PipelineState state;
  EXPECT_THAT(RunAlone(torch_error, state),
              StatusIs(absl::StatusCode::kInternal,
                       HasSubstr("block 'denoiser' (FakeBlock): ")));

  FakeBlock std_error({}, [](BlockState&) -> absl::Status {
    throw std::invalid_argument("bad latents shape");
  });
  std_error.SetName("prepare");
  EXPECT_THAT(RunAlone(std_error, state),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "block 'prepare' (FakeBlock): bad latents shape"));

  // A fault's text (a module's source, a path of the machine that built
  // it) stays in the server log: the client hears the block.
  FakeBlock other({}, [](BlockState&) -> absl::Status {
    throw std::runtime_error("disk on fire at /home/builder/train.py:12");
  });
  EXPECT_THAT(RunAlone(other, state),
              StatusIs(absl::StatusCode::kInternal,
                       "block 'FakeBlock': internal error (the server log "
                       "has the details)"));
}

// Note [out of device memory]: the client's to shrink, with the allocation
// that failed but not the device's figures; whether libtorch threw its
// OutOfMemoryError or a TorchScript module passed CUDA's text on.
TEST(RunBlockTest, OutOfDeviceMemoryIsResourceExhausted) {
  const std::string cuda_text =
      "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 139.81 GiB "
      "total capacity; 1.00 GiB already allocated)";
  FakeBlock oom({}, [&cuda_text](BlockState&) -> absl::Status {
    throw c10::OutOfMemoryError({__func__, __FILE__, __LINE__}, cuda_text);
  });
  oom.SetName("unet");
  PipelineState state;
  EXPECT_THAT(RunAlone(oom, state),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "block 'unet' (FakeBlock): out of device memory: CUDA "
                       "out of memory. Tried to allocate 20.00 GiB"));

  FakeBlock scripted({}, [&cuda_text](BlockState&) -> absl::Status {
    throw c10::Error({__func__, __FILE__, __LINE__},
                     "The following operation failed in the TorchScript "
                     "interpreter. RuntimeError: " +
                         cuda_text);
  });
  scripted.SetName("unet");
  EXPECT_THAT(RunAlone(scripted, state),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("out of device memory"),
                             Not(HasSubstr("total capacity")))));
}

TEST(RunBlockTest, ReturnedErrorsAreNamedOnce) {
  FakeBlock block({.inputs = {Input("x", true)}});
  block.SetName("pipe");
  PipelineState state;
  absl::Status status = RunAlone(block, state);
  // GetBlockState named the block; RunBlock must not name it again.
  EXPECT_EQ(status.message(),
            "block 'pipe' (FakeBlock): Required input 'x' is missing");
  EXPECT_EQ(AttributedBlockPath(status), "pipe");

  FakeBlock plain({}, [](BlockState&) {
    return absl::UnavailableError("model not loaded");
  });
  plain.SetName("unet");
  status = RunAlone(plain, state);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable,
                               "block 'unet' (FakeBlock): model not loaded"));
  EXPECT_EQ(AttributedBlockPath(status), "unet");
}

TEST(LoopStepBlockTest, RunOutsideALoopFails) {
  FakeStep step({});
  PipelineState state;
  EXPECT_THAT(RunAlone(step, state),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("runs only inside a loop wrapper")));
}

TEST(BlockTest, SignatureIsComputedOnce) {
  class CountingBlock : public FakeBlock {
   public:
    CountingBlock() : FakeBlock({.inputs = {Input("x")}}) {}
    std::vector<InputParam> inputs() const override {
      ++calls;
      return FakeBlock::inputs();
    }
    mutable int calls = 0;
  } block;
  PipelineState state;
  for (int i = 0; i < 3; ++i) ASSERT_OK(RunAlone(block, state));
  EXPECT_EQ(block.calls, 1);
}

}  // namespace
}  // namespace loopserve
