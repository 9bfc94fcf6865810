// The one place that decides where pipelines run: --device.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loopserve {

// "auto" (CUDA when libtorch has it and a GPU is present, else CPU), "cpu",
// "cuda" or "cuda:N". INVALID_ARGUMENT for anything else, and
// FAILED_PRECONDITION for a CUDA device that is not there.
absl::StatusOr<c10::Device> ResolveDevice(absl::string_view flag);

// What libtorch's caching allocator holds on a device: bytes in live
// tensors, and bytes it took from the driver (live or cached for reuse).
struct DeviceMemory {
  int64_t allocated = 0;
  int64_t reserved = 0;
};
// For a CUDA device; nullopt for the CPU, or in a build without CUDA.
std::optional<DeviceMemory> DeviceMemoryOf(c10::Device device);

}  // namespace loopserve
