#include "blocks/core/state.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::HasSubstr;

TEST(PipelineStateTest, InputsAndIntermediatesAreSeparate) {
  PipelineState state;
  state.SetInput("x", int64_t{1});
  EXPECT_EQ(state.GetInput("x")->toInt(), 1);
  EXPECT_EQ(state.GetIntermediate("x"), nullptr);

  state.SetIntermediate("x", int64_t{2});
  state.SetIntermediate("x", int64_t{3});
  EXPECT_EQ(state.GetInput("x")->toInt(), 1);
  EXPECT_EQ(state.GetIntermediate("x")->toInt(), 3);
  EXPECT_EQ(state.intermediates().size(), 1u);
}

TEST(BlockStateTest, SetAddsThenReplaces) {
  BlockState state;
  state.Set("a", int64_t{1});
  state.Set("b", 2.0);
  state.Set("a", int64_t{5});
  EXPECT_EQ(state.size(), 2u);
  EXPECT_EQ(state.Find("a")->toInt(), 5);
  EXPECT_EQ(state.Find("c"), nullptr);
}

TEST(BlockStateTest, TypedGet) {
  BlockState state;
  state.Set("n", int64_t{4});
  state.Set("s", std::string("text"));
  state.Set("t", at::full({2}, 3.0));
  state.Set("flag", true);

  EXPECT_EQ(*state.Get<int64_t>("n"), 4);
  EXPECT_EQ(*state.Get<double>("n"), 4.0);  // an int reads as a double
  EXPECT_EQ(*state.Get<std::string>("s"), "text");
  EXPECT_TRUE(*state.Get<bool>("flag"));
  EXPECT_TRUE(at::equal(*state.Get<at::Tensor>("t"), at::full({2}, 3.0)));
}

TEST(BlockStateTest, TypedGetErrorsNameTheValue) {
  BlockState state;
  state.Set("num_steps", std::string("five"));
  EXPECT_THAT(state.Get<int64_t>("num_steps"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "value 'num_steps' is string, expected int"));
  EXPECT_THAT(state.Get<at::Tensor>("latents"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'latents'")));
}

}  // namespace
}  // namespace loopserve
