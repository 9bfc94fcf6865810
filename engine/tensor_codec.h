// TensorCodec: the wire forms of tensors and values (loopserve.v1.Tensor and
// loopserve.v1.Value) to and from libtorch's, each way with one copy.
//
//   ASSIGN_OR_RETURN(c10::IValue value, DecodeValue(request_value, limits));
//   EncodeValue(value, response_value);
//
// Tensors follow the Open Inference Protocol: a datatype name (FP32, BF16,
// INT64, ...), a shape, and little-endian row-major bytes. Decoding checks
// the datatype, every dimension and that the bytes are exactly
// product(shape) * itemsize before touching them. Errors are INVALID_ARGUMENT
// with a message that names the problem; callers prefix the field.
//
// All functions are thread-safe.
#pragma once

#include <ATen/core/ivalue.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/params.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

struct DecodeLimits {
  // Largest tensor accepted, in bytes.
  int64_t max_tensor_bytes = int64_t{1} << 30;
  // Deepest list nesting accepted.
  int max_list_depth = 8;
};

// The scalar type for an OIP datatype name; INVALID_ARGUMENT naming the
// datatype and the accepted ones when unknown.
absl::StatusOr<c10::ScalarType> ScalarTypeFromDatatype(
    absl::string_view datatype);
// The OIP datatype name of a scalar type; INVALID_ARGUMENT for one the wire
// cannot carry (complex, quantized ...).
absl::StatusOr<std::string> DatatypeFromScalarType(c10::ScalarType type);

// Checks everything DecodeTensor checks, without touching the bytes.
absl::Status CheckTensor(const v1::Tensor& tensor, const DecodeLimits& limits);
// A new CPU tensor holding `tensor`'s bytes (one copy).
absl::StatusOr<at::Tensor> DecodeTensor(const v1::Tensor& tensor,
                                        const DecodeLimits& limits);
// Writes `tensor` (any device, any layout of strides) into `out` with one
// copy, straight into the message's byte buffer.
absl::Status EncodeTensor(const at::Tensor& tensor, v1::Tensor& out);

// Value <-> IValue: tensor, int64, double, bool, string and lists of these.
absl::StatusOr<c10::IValue> DecodeValue(const v1::Value& value,
                                        const DecodeLimits& limits);
// Checks everything DecodeValue checks, without copying anything; the kind
// the value would decode to.
absl::StatusOr<ValueKind> CheckValue(const v1::Value& value,
                                     const DecodeLimits& limits);
absl::Status EncodeValue(const c10::IValue& value, v1::Value& out);

// Payload bytes `value` takes on the wire (tensor bytes, string bytes, 8 for
// a scalar); for batching by size.
int64_t EncodedPayloadBytes(const v1::Value& value);

}  // namespace loopserve
