#include "blocks/core/components.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Scheduler {
  int num_train_timesteps = 1000;
};

TEST(ComponentsTest, TypedAccess) {
  Components components;
  ASSERT_OK(components.Add("scheduler", std::make_shared<const Scheduler>()));
  ASSERT_OK_AND_ASSIGN(const Scheduler* scheduler,
                       components.Get<Scheduler>("scheduler"));
  EXPECT_EQ(scheduler->num_train_timesteps, 1000);
  EXPECT_THAT(components.Names(), ElementsAre("scheduler"));
}

TEST(ComponentsTest, Errors) {
  Components components;
  ASSERT_OK(components.Add("scheduler", std::make_shared<const Scheduler>()));
  EXPECT_THAT(
      components.Add("scheduler", std::make_shared<const Scheduler>()),
      StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("'scheduler'")));
  EXPECT_THAT(
      components.Get<Scheduler>("unet"),
      StatusIs(absl::StatusCode::kNotFound, "component 'unet' is not loaded"));
  EXPECT_THAT(components.Get<int>("scheduler"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "component 'scheduler' is a (anonymous "
                       "namespace)::Scheduler, not a int"));
  EXPECT_THAT(components.Add("", std::make_shared<const int>(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(components.Add("null", std::shared_ptr<const int>()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
}

}  // namespace
}  // namespace loopserve
