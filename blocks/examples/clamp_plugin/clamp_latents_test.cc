// ClampLatents in a loop, without a server: the seed example's LoopWrapper
// runs it num_steps times on a shared BlockState, as a denoising loop would
// after each scheduler step.
#include "clamp_latents.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>

#include "blocks/core/composite.h"
#include "blocks/core/loop.h"
#include "blocks/core/registry.h"

namespace clamp_plugin {
namespace {

using loopserve::BlockRegistry;
using loopserve::Components;
using loopserve::PipelineState;
using loopserve::RunContext;

// A loop wrapper that runs its loop blocks num_steps times (the guide's).
class Loop final : public loopserve::LoopBlocks {
 public:
  static constexpr absl::string_view kTypeName = "Loop";
  absl::string_view type_name() const override { return kTypeName; }
  std::vector<InputParam> loop_inputs() const override {
    return {
        {.name = "num_steps", .type_hint = TypeHint::Int(), .required = true}};
  }
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override {
    ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
    ASSIGN_OR_RETURN(const int64_t steps,
                     block_state.Get<int64_t>("num_steps"));
    for (int64_t i = 0; i < steps; ++i) {
      RETURN_IF_ERROR(
          LoopStep(components, block_state, {.i = i, .total = steps}, context));
    }
    return SetBlockState(state, block_state);
  }
};

class ClampLatentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.Register<ClampLatents>().ok());
    auto loop =
        loopserve::FromBlocks<Loop>(registry_, {{"clamp", "ClampLatents"}});
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
    loop_->SetName("clamp-loop");
  }

  // Runs the loop twice over `latents`, clamping to [-1, 1].
  absl::StatusOr<at::Tensor> Clamp(const at::Tensor& latents) {
    Components components;
    RETURN_IF_ERROR(components.Add<ClampRange>(
        "clamp", std::make_shared<const ClampRange>(-1.0, 1.0)));
    PipelineState state;
    state.SetInput("num_steps", int64_t{2});
    state.SetIntermediate("latents", latents);
    RunContext context;
    RETURN_IF_ERROR(loopserve::RunBlock(*loop_, components, state, context));
    return state.GetIntermediate("latents")->toTensor();
  }

  BlockRegistry registry_;
  std::unique_ptr<Loop> loop_;
};

TEST_F(ClampLatentsTest, ClampsAndLeavesTheInputUntouched) {
  const at::Tensor latents = at::tensor({-3.0, -0.5, 0.25, 2.0});
  const at::Tensor before = latents.clone();
  absl::StatusOr<at::Tensor> clamped = Clamp(latents);
  ASSERT_TRUE(clamped.ok()) << clamped.status();
  EXPECT_TRUE(at::equal(*clamped, at::tensor({-1.0, -0.5, 0.25, 1.0})));
  EXPECT_TRUE(at::equal(latents, before));  // a new tensor, not in place
}

TEST_F(ClampLatentsTest, WithoutLatentsTheErrorNamesTheInput) {
  Components components;
  ASSERT_TRUE(
      components
          .Add<ClampRange>("clamp", std::make_shared<const ClampRange>(-1, 1))
          .ok());
  PipelineState state;
  state.SetInput("num_steps", int64_t{1});
  RunContext context;
  const absl::Status status =
      loopserve::RunBlock(*loop_, components, state, context);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("'latents'"), absl::string_view::npos)
      << status;
}

TEST_F(ClampLatentsTest, AClampOfAnotherKindIsRefusedByName) {
  Components components;
  ASSERT_TRUE(
      components.Add<int>("clamp", std::make_shared<const int>(1)).ok());
  PipelineState state;
  state.SetInput("num_steps", int64_t{1});
  state.SetIntermediate("latents", at::zeros({2}));
  RunContext context;
  const absl::Status status =
      loopserve::RunBlock(*loop_, components, state, context);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("block 'clamp-loop/clamp' (ClampLatents)"),
            absl::string_view::npos)
      << status;
}

}  // namespace
}  // namespace clamp_plugin
