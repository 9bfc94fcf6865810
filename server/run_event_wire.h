// SerializeRunEvent: a RunEvent's wire bytes as a grpc::ByteBuffer in which
// every tensor's raw_contents is a slice that references the message
// instead of a copy of it.
//
// Note [zero-copy tensors]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// The run already made the one copy a streamed tensor needs into the
// Iteration message: the loop's thread for a CPU value, a StreamEncoder
// thread from the host copy for a device value (Note [deferred encoding]).
// gRPC's protobuf serialiser would copy those bytes again into its own buffers;
// here the surrounding fields are encoded into small slices and the tensor
// bytes are referenced where they lie. Each such slice holds a reference to
// `event`, so the message outlives gRPC's use of it; RunStream reuses a written
// event's iterations only when no slice holds it any more.
//
// Thread-safety: a pure function; `event` must not change while any slice
// of the buffer is alive.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <memory>

#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

// Tensor payloads smaller than this are copied with their headers; a slice
// of their own would cost more than the copy.
inline constexpr size_t kZeroCopyMinBytes = 4096;

void SerializeRunEvent(const std::shared_ptr<const v1::RunEvent>& event,
                       grpc::ByteBuffer* out);

}  // namespace loopserve
