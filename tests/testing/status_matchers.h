// GoogleTest helpers for absl::Status and absl::StatusOr.
//
//   ASSERT_OK(registry.Register<LoopBlock>());
//   ASSERT_OK_AND_ASSIGN(auto block, registry.Create("LoopBlock"));
//   EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound,
//                                HasSubstr("unknown block type")));
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loopserve::testing {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has code " + absl::StatusCodeToString(code)) {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "status is " << status;
  return status.code() == code &&
         ::testing::ExplainMatchResult(
             message_matcher, std::string(status.message()), result_listener);
}

}  // namespace loopserve::testing

#define ASSERT_OK(expr)                                                       \
  do {                                                                        \
    const auto& loopserve_test_status_ = (expr);                              \
    ASSERT_TRUE(::loopserve::testing::GetStatus(loopserve_test_status_).ok()) \
        << ::loopserve::testing::GetStatus(loopserve_test_status_);           \
  } while (false)

#define EXPECT_OK(expr)                                                       \
  do {                                                                        \
    const auto& loopserve_test_status_ = (expr);                              \
    EXPECT_TRUE(::loopserve::testing::GetStatus(loopserve_test_status_).ok()) \
        << ::loopserve::testing::GetStatus(loopserve_test_status_);           \
  } while (false)

#define LOOPSERVE_TEST_CONCAT_INNER(a, b) a##b
#define LOOPSERVE_TEST_CONCAT(a, b) LOOPSERVE_TEST_CONCAT_INNER(a, b)

#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(            \
      LOOPSERVE_TEST_CONCAT(loopserve_test_statusor_, __LINE__), lhs, expr)

#define ASSERT_OK_AND_ASSIGN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                              \
  ASSERT_TRUE(statusor.ok()) << statusor.status();     \
  lhs = *std::move(statusor)
