// Early-return helpers for absl::Status and absl::StatusOr.
//
//   absl::StatusOr<BlockState> Load(const PipelineState& state) {
//     RETURN_IF_ERROR(Validate(state));
//     ASSIGN_OR_RETURN(BlockState block_state, block.GetBlockState(state));
//     return block_state;
//   }
//
// Both evaluate their argument once. ASSIGN_OR_RETURN declares or assigns its
// left-hand side in the enclosing scope, so it cannot be the body of an
// unbraced if.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LOOPSERVE_STATUS_CONCAT_INNER(a, b) a##b
#define LOOPSERVE_STATUS_CONCAT(a, b) LOOPSERVE_STATUS_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status loopserve_status_ = (expr);         \
    if (ABSL_PREDICT_FALSE(!loopserve_status_.ok())) { \
      return loopserve_status_;                        \
    }                                                  \
  } while (false)

#define ASSIGN_OR_RETURN(lhs, expr) \
  LOOPSERVE_ASSIGN_OR_RETURN_IMPL(  \
      LOOPSERVE_STATUS_CONCAT(loopserve_statusor_, __LINE__), lhs, expr)

#define LOOPSERVE_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                                    \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) {                  \
    return std::move(statusor).status();                     \
  }                                                          \
  lhs = *std::move(statusor)
