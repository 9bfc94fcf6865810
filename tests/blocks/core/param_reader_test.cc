#include "blocks/core/param_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParamReaderTest, ReadsTypedValuesAndDefaults) {
  const BlockParams raw = {{"steps", int64_t{30}},
                           {"scale", 7.5},
                           {"whole", 4.0},
                           {"clip", false},
                           {"kind", std::string("linear")},
                           {"list", c10::List<double>({0.5, 1.5})},
                           {"ints", c10::List<int64_t>({1, 2})}};
  ParamReader params(raw);
  EXPECT_EQ(*params.Int("steps", 1), 30);
  EXPECT_EQ(*params.Double("scale", 1.0), 7.5);
  EXPECT_EQ(*params.Int("whole", 0), 4);        // JSON has one number type
  EXPECT_EQ(*params.Double("steps", 0), 30.0);  // an int reads as a double
  EXPECT_FALSE(*params.Bool("clip", true));
  EXPECT_EQ(*params.Choice("kind", "x", {"linear", "scaled_linear"}), "linear");
  EXPECT_THAT(*params.DoubleList("list", {}), ElementsAre(0.5, 1.5));
  EXPECT_THAT(*params.DoubleList("ints", {}), ElementsAre(1.0, 2.0));
  EXPECT_EQ(*params.Int("absent", 9), 9);
  EXPECT_EQ(*params.String("absent2", "d"), "d");
  EXPECT_OK(params.CheckAllRead());
}

TEST(ParamReaderTest, ErrorsNameTheParam) {
  const BlockParams raw = {{"steps", std::string("ten")},
                           {"frac", 2.5},
                           {"kind", std::string("cosine")},
                           {"list", c10::List<std::string>({"a"})}};
  ParamReader params(raw);
  EXPECT_THAT(params.Int("steps", 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "param 'steps': expected an integer, got string"));
  EXPECT_THAT(params.Int("frac", 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "param 'frac': expected an integer, got 2.5"));
  EXPECT_THAT(params.Choice("kind", "linear", {"linear", "scaled_linear"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "param 'kind': must be one of linear, scaled_linear; "
                       "got 'cosine'"));
  EXPECT_THAT(params.DoubleList("list", {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("param 'list': expected a list of numbers")));
}

TEST(ParamReaderTest, UnknownParamsAreRefusedWithTheKnownOnes) {
  const BlockParams raw = {{"beta_start", 0.1}, {"beta_strat", 0.1}};
  ParamReader params(raw);
  ASSERT_OK(params.Double("beta_start", 0).status());
  ASSERT_OK(params.Double("beta_end", 0).status());
  EXPECT_THAT(params.CheckAllRead(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "param 'beta_strat': unknown param; known: beta_end, "
                       "beta_start"));
}

}  // namespace
}  // namespace loopserve
