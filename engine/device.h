// The one place that decides where pipelines run: --device.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loopserve {

// "auto" (CUDA when libtorch has it and a GPU is present, else CPU), "cpu",
// "cuda" or "cuda:N". INVALID_ARGUMENT for anything else, and
// FAILED_PRECONDITION for a CUDA device that is not there or a CUDA backend
// that does not load. Resolving a CUDA device loads libtorch's CUDA backend
// (Note [the CUDA backend, loaded when wanted] in device.cc); nothing else
// does. Thread-safe.
absl::StatusOr<c10::Device> ResolveDevice(absl::string_view flag);

// Loads libtorch's CUDA backend once (later calls return the first call's
// result): OK once ATen's CUDA kernels and hooks are registered, also on a
// machine without a GPU. FAILED_PRECONDITION in a build without CUDA or when
// the library does not load; INTERNAL when ATen was asked about CUDA before
// (Note [the CUDA backend, loaded when wanted]). Thread-safe.
absl::Status LoadCudaBackend();

// The CUDA devices this process sees: 0 in a build without CUDA, or on a
// machine without a GPU or its driver. Cheap, and loads no backend.
int CudaDeviceCount();

// How many threads libtorch's CPU kernels use within one op, for the whole
// process (Note [one thread per op] in device.cc): n >= 1, or 0 for
// libtorch's default, one per core. Call it before any run starts.
// INVALID_ARGUMENT naming --intra_op_threads for a negative count.
absl::Status SetIntraOpThreads(int threads);

// What this binary was built against, for --version: "libtorch 2.11.0,
// CUDA 13.0 compiled in, 0 CUDA devices".
std::string LibtorchDescription();

// What libtorch's caching allocator holds on a device: bytes in live
// tensors, and bytes it took from the driver (live or cached for reuse).
struct DeviceMemory {
  int64_t allocated = 0;
  int64_t reserved = 0;
};
// For a CUDA device; nullopt for the CPU, or in a build without CUDA.
std::optional<DeviceMemory> DeviceMemoryOf(c10::Device device);

}  // namespace loopserve
