#include "engine/device.h"

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>

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

}  // namespace loopserve
