#include "engine/device.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <dlfcn.h>
#include <torch/version.h>

#ifdef LOOPSERVE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loopserve {

// Note [the CUDA backend, loaded when wanted]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// PyTorch's CUDA build splits libtorch in two: torch_cpu (the CPU kernels,
// TorchScript, autograd) and torch_cuda (ATen's CUDA kernels, which bring
// cuBLAS, cuBLASLt, cuSOLVER, cuDNN, NCCL ...). loopserve links torch_cpu
// and c10_cuda (streams, events, the caching allocator; they need only
// libcudart), and loads torch_cuda with dlopen when a CUDA device is
// resolved. Linked at start-up, torch_cuda would
//  - map and relocate some 2 GB of CUDA libraries in every process, also on
//    the CPU (resident memory at start: 470 MB instead of 120 MB), and
//  - put their static thread-local storage, some 190 KB (cuBLASLt alone
//    94 KB), into every thread's stack, which makes pthread_create fail
//    for threads asking for small stacks: civetweb's, which serve
//    /metrics, ask for 100 KB.
// Loaded with dlopen, as Python's `import torch` loads it, their TLS is
// allocated per thread on first use. torch_cuda registers its kernels and
// ATen's CUDA hooks from static initialisers; ATen looks its hooks up once
// and keeps what it found, so nothing may ask ATen about CUDA
// (at::hasCUDA()) before the backend is loaded: ResolveDevice is the one
// place that does, after loading it. Counting devices uses c10_cuda, which
// asks the driver through libcudart and loads nothing.
absl::Status LoadCudaBackend() {
#ifdef LOOPSERVE_WITH_CUDA
  static absl::Status* const loaded = [] {
    // torch_cuda sits beside c10_cuda, whose path the loader knows.
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&c10::cuda::device_count), &info) == 0 ||
        info.dli_fname == nullptr) {
      return new absl::Status(absl::InternalError(
          "cannot find libc10_cuda.so, beside which libtorch_cuda.so is"));
    }
    const std::string path =
        (std::filesystem::path(info.dli_fname).parent_path() /
         "libtorch_cuda.so")
            .string();
    if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      return new absl::Status(absl::FailedPreconditionError(
          absl::StrCat("cannot load libtorch's CUDA backend: ", dlerror())));
    }
    // The stub ATen falls back to says no CUDA runtime; torch_cuda's says
    // yes, with or without a GPU.
    if (!at::detail::getCUDAHooks().hasCUDART()) {
      return new absl::Status(absl::InternalError(absl::StrCat(
          path,
          " is loaded, but ATen does not see CUDA: it was asked about "
          "CUDA before the backend was loaded")));
    }
    return new absl::Status();
  }();
  return *loaded;
#else
  return absl::FailedPreconditionError("libtorch was built without CUDA");
#endif
}

int CudaDeviceCount() {
#ifdef LOOPSERVE_WITH_CUDA
  return c10::cuda::device_count();
#else
  return 0;
#endif
}

absl::StatusOr<c10::Device> ResolveDevice(absl::string_view flag) {
  if (flag == "cpu") return c10::Device(c10::kCPU);
  const int gpus = CudaDeviceCount();
  int index = 0;
  if (flag == "auto") {
    if (gpus == 0) return c10::Device(c10::kCPU);
  } else if (flag == "cuda" || absl::StartsWith(flag, "cuda:")) {
    if (flag.size() > 4 && !absl::SimpleAtoi(flag.substr(5), &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device=", flag, ": bad CUDA device index"));
    }
    if (index < 0 || index >= gpus) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--device=", flag, ": this machine has ", gpus, " CUDA device(s)",
#ifdef LOOPSERVE_WITH_CUDA
          ""
#else
          " (libtorch was built without CUDA)"
#endif
          ));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--device=", flag, ": expected auto, cpu, cuda or cuda:N"));
  }
  if (absl::Status status = LoadCudaBackend(); !status.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("--device=", flag, ": ", status.message()));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

// Note [one thread per op]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// loopserve's parallelism on the CPU is across runs (an executor thread
// each) and across the rows step-level batching puts into one call. Within
// one op, libtorch by default splits the work over one OpenMP thread per
// core; for the small ops of a denoising step that is a loss, because every
// op ends at an OpenMP barrier whose threads share the cores with gRPC's,
// the encoders' and the other runs', and spend their time waking each
// other (perf: futex wake-ups and GOMP barriers, not the kernels). Measured
// through the service on 2 cores with torch 2.11, the digits UNet's step:
// 0.57 ms with one thread per op against 1.83 ms with two (digits-ddim),
// 1.08 against 3.63 ms (digits-text, guided); torch 1.13 took 2.5 and
// 1.25 ms at either setting. So loopserve runs one thread per op unless
// --intra_op_threads says otherwise: a large model with few concurrent runs
// on a many-core CPU may want more. A GPU's kernels are not affected.
absl::Status SetIntraOpThreads(int threads) {
  if (threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--intra_op_threads must be >= 0 (0: one per core), got ", threads));
  }
  // at::set_num_threads also sets every later thread's OpenMP team size
  // when it first runs a parallel op. libtorch's default heeds
  // OMP_NUM_THREADS and counts physical cores.
  at::set_num_threads(threads > 0 ? threads
                                  : at::intraop_default_num_threads());
  return absl::OkStatus();
}

std::string LibtorchDescription() {
#ifdef LOOPSERVE_WITH_CUDA
  const std::string cuda = absl::StrCat(
      "CUDA ", CUDART_VERSION / 1000, ".", CUDART_VERSION % 1000 / 10,
      " compiled in, ", CudaDeviceCount(), " CUDA device(s)");
#else
  const std::string cuda = "no CUDA";
#endif
  return absl::StrCat("libtorch ", TORCH_VERSION, ", ", cuda);
}

std::optional<DeviceMemory> DeviceMemoryOf(c10::Device device) {
#ifdef LOOPSERVE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        device.has_index() ? device.index() : 0);
    // [0]: StatType::AGGREGATE.
    return DeviceMemory{.allocated = stats.allocated_bytes[0].current,
                        .reserved = stats.reserved_bytes[0].current};
  }
#endif
  (void)device;
  return std::nullopt;
}

}  // namespace loopserve
