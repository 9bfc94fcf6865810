// HostCopy: a tensor's value on its way to host memory, for the stream.
//
// Note [copies off the device]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A value a client asked to stream must reach the host, but the loop must
// not wait for it: on a GPU the loop thread runs ahead of the device,
// queueing the next step's kernels while this one computes, and a
// synchronous copy would drain that queue at every streamed step.
//
//   Start (the run's thread)   CUDA: a pinned host buffer; a side stream
//                              waits, by an event, for the work queued so far
//                              on the tensor's stream; the copy is queued
//                              there (non-blocking) with an event after it;
//                              the source's memory is recorded as used by
//                              the side stream, so the caching allocator
//                              does not hand it out before the copy ran.
//                              CPU: the value, copied now (a snapshot).
//   Wait  (the encoder)        blocks until the copy's event has completed;
//                              then the host tensor holds the value.
//
// Nothing else leaves the device: values nobody asked for are never copied.
// A HostCopy dropped unwaited is safe: the pinned buffer returns to
// libtorch's host allocator, which itself waits for the copy's event.
//
// Thread-safety: Start on the thread that owns the value; Wait and host()
// on one other thread at a time.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

namespace loopserve {

class HostCopy {
 public:
  HostCopy() = default;

  // Starts copying `value` (any device, any strides) into contiguous host
  // memory.
  static HostCopy Start(const at::Tensor& value);

  // Waits for the copy; the host tensor then holds the value.
  const at::Tensor& Wait();
  // Whether Wait would return at once.
  bool ready() const;
  int64_t nbytes() const { return host_.defined() ? host_.nbytes() : 0; }

 private:
  at::Tensor host_;
  // The event after the copy, while it may be pending (CUDA only).
  std::shared_ptr<void> done_;
};

}  // namespace loopserve
