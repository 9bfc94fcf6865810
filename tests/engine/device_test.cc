#include "engine/device.h"

#include <ATen/Context.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ResolveDeviceTest, Cpu) {
  ASSERT_OK_AND_ASSIGN(c10::Device device, ResolveDevice("cpu"));
  EXPECT_EQ(device, c10::Device(c10::kCPU));
}

TEST(ResolveDeviceTest, AutoIsCpuWithoutCuda) {
  if (at::hasCUDA()) GTEST_SKIP() << "this build has CUDA";
  ASSERT_OK_AND_ASSIGN(c10::Device device, ResolveDevice("auto"));
  EXPECT_EQ(device, c10::Device(c10::kCPU));
  EXPECT_THAT(ResolveDevice("cuda:0"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("--device=cuda:0: this machine has 0 CUDA "
                                 "device(s)")));
}

TEST(ResolveDeviceTest, RejectsOtherNames) {
  EXPECT_THAT(ResolveDevice("tpu"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("expected auto, cpu, cuda or cuda:N")));
  EXPECT_THAT(ResolveDevice("cuda:x"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("bad CUDA device index")));
}

TEST(ResolveDeviceTest, AutoPicksTheFirstGpu_CUDA) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA";
  ASSERT_OK_AND_ASSIGN(c10::Device device, ResolveDevice("auto"));
  EXPECT_EQ(device, c10::Device(c10::kCUDA, 0));
}

}  // namespace
}  // namespace loopserve
