#include "engine/host_copy.h"

#include <ATen/ATen.h>

#ifdef LOOPSERVE_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace loopserve {

HostCopy HostCopy::Start(const at::Tensor& value) {
  HostCopy copy;
#ifdef LOOPSERVE_WITH_CUDA
  if (value.is_cuda()) {
    const c10::DeviceIndex index = value.device().index();
    const c10::cuda::CUDAStream compute =
        c10::cuda::getCurrentCUDAStream(index);
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(
        /*isHighPriority=*/false, index);
    at::cuda::CUDAEvent queued;
    queued.record(compute);
    queued.block(side);
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      copy.host_ = at::empty(
          value.sizes(),
          value.options().device(at::kCPU).pinned_memory(true).memory_format(
              at::MemoryFormat::Contiguous));
      copy.host_.copy_(value, /*non_blocking=*/true);
    }
    c10::cuda::CUDACachingAllocator::recordStream(value.storage().data_ptr(),
                                                  side);
    auto done = std::make_shared<at::cuda::CUDAEvent>();
    done->record(side);
    copy.done_ = std::move(done);
    return copy;
  }
#endif
  // The CPU (or a device without an asynchronous path): copied now, once.
  copy.host_ = value.detach().to(at::TensorOptions().device(at::kCPU),
                                 /*non_blocking=*/false, /*copy=*/true,
                                 at::MemoryFormat::Contiguous);
  return copy;
}

const at::Tensor& HostCopy::Wait() {
#ifdef LOOPSERVE_WITH_CUDA
  if (done_ != nullptr) {
    static_cast<at::cuda::CUDAEvent*>(done_.get())->synchronize();
    done_.reset();
  }
#endif
  return host_;
}

bool HostCopy::ready() const {
#ifdef LOOPSERVE_WITH_CUDA
  if (done_ != nullptr) {
    return static_cast<at::cuda::CUDAEvent*>(done_.get())->query();
  }
#endif
  return true;
}

}  // namespace loopserve
