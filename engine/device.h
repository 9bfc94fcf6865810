// The one place that decides where pipelines run: --device.
#pragma once

#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loopserve {

// "auto" (CUDA when libtorch has it and a GPU is present, else CPU), "cpu",
// "cuda" or "cuda:N". INVALID_ARGUMENT for anything else, and
// FAILED_PRECONDITION for a CUDA device that is not there.
absl::StatusOr<c10::Device> ResolveDevice(absl::string_view flag);

}  // namespace loopserve
