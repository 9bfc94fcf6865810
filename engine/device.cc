#include "engine/device.h"

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>

#ifdef LOOPSERVE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loopserve {

absl::StatusOr<c10::Device> ResolveDevice(absl::string_view flag) {
  const bool has_cuda = at::hasCUDA();
  const int64_t gpus = has_cuda ? at::detail::getCUDAHooks().getNumGPUs() : 0;
  if (flag == "auto") return gpus > 0 ? c10::Device(c10::kCUDA, 0) : c10::kCPU;
  if (flag == "cpu") return c10::Device(c10::kCPU);
  if (flag == "cuda" || absl::StartsWith(flag, "cuda:")) {
    int index = 0;
    if (flag.size() > 4 && !absl::SimpleAtoi(flag.substr(5), &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device=", flag, ": bad CUDA device index"));
    }
    if (index < 0 || index >= gpus) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--device=", flag, ": this machine has ", gpus, " CUDA device(s)",
          has_cuda ? "" : " (libtorch was built without CUDA)"));
    }
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device=", flag, ": expected auto, cpu, cuda or cuda:N"));
}

std::optional<DeviceMemory> DeviceMemoryOf(c10::Device device) {
#ifdef LOOPSERVE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        device.has_index() ? device.index() : 0);
    // [0]: StatType::AGGREGATE, whose namespace moved between torch 1.13
    // and 2.x.
    return DeviceMemory{.allocated = stats.allocated_bytes[0].current,
                        .reserved = stats.reserved_bytes[0].current};
  }
#endif
  (void)device;
  return std::nullopt;
}

}  // namespace loopserve
