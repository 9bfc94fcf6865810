// TensorCodec: the wire forms of tensors and values (loopserve.v1.Tensor and
// loopserve.v1.Value) to and from libtorch's, each way with one copy.
//
//   ASSIGN_OR_RETURN(c10::IValue value, DecodeValue(request_value, limits));
//   EncodeValue(value, response_value);
//
// Tensors follow the Open Inference Protocol: a datatype name (FP32, BF16,
// INT64, ...), a shape, and little-endian row-major bytes. Checking (on the
// wire form, before any work) bounds the rank first, then every dimension,
// the element count and the bytes, which must be exactly
// product(shape) * itemsize: the cost of refusing a request is linear in
// its size. Decoding then refuses content no model should see: NaN or Inf
// in a floating-point tensor or scalar (unless allow_non_finite), a BOOL
// byte other than 0 or 1. Errors are INVALID_ARGUMENT with a message that
// names the problem; callers prefix the field.
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
  // Most dimensions a tensor may have (--max_tensor_rank).
  int max_tensor_rank = 8;
  // Most elements a tensor may have (--max_tensor_elements).
  int64_t max_tensor_elements = int64_t{1} << 28;
  // Longest string value accepted, in bytes (--max_string_bytes).
  int64_t max_string_bytes = 64 << 10;
  // Deepest list nesting accepted.
  int max_list_depth = 8;
  // Accept NaN and Inf in floating-point values (--allow_non_finite_inputs).
  bool allow_non_finite = false;
};

// The scalar type for an OIP datatype name; INVALID_ARGUMENT naming the
// datatype and the accepted ones when unknown.
absl::StatusOr<c10::ScalarType> ScalarTypeFromDatatype(
    absl::string_view datatype);
// The OIP datatype name of a scalar type; INVALID_ARGUMENT for one the wire
// cannot carry (complex, quantized ...).
absl::StatusOr<std::string> DatatypeFromScalarType(c10::ScalarType type);

// Checks the datatype, rank, shape and byte count, without reading the
// bytes.
absl::Status CheckTensor(const v1::Tensor& tensor, const DecodeLimits& limits);
// Checks the bytes too: finite floats (unless limits.allow_non_finite),
// BOOL bytes 0 or 1. One pass, no copy.
absl::Status CheckTensorContents(const v1::Tensor& tensor,
                                 const DecodeLimits& limits);
// A new CPU tensor holding `tensor`'s bytes (one copy), after CheckTensor
// and CheckTensorContents.
absl::StatusOr<at::Tensor> DecodeTensor(const v1::Tensor& tensor,
                                        const DecodeLimits& limits);
// Writes `tensor` (any device, any layout of strides) into `out` with one
// copy, straight into the message's byte buffer.
absl::Status EncodeTensor(const at::Tensor& tensor, v1::Tensor& out);

// Value <-> IValue: tensor, int64, double, bool, string and lists of these.
absl::StatusOr<c10::IValue> DecodeValue(const v1::Value& value,
                                        const DecodeLimits& limits);
// Checks everything DecodeValue checks except tensor contents
// (CheckTensorContents), without copying anything; the kind the value would
// decode to.
absl::StatusOr<ValueKind> CheckValue(const v1::Value& value,
                                     const DecodeLimits& limits);
absl::Status EncodeValue(const c10::IValue& value, v1::Value& out);

// Sets the field of `out` an int, double, bool or string `value` goes in;
// false, and `out` untouched, for any other kind. The one encoding of
// scalars both value forms share: the wire's (v1::Value, EncodeValue) and a
// checkpoint's (v1::StateValue, EncodeStateValue), whose fields are named
// alike.
template <typename Message>
bool EncodeScalar(const c10::IValue& value, Message& out) {
  if (value.isInt()) {
    out.set_int64_value(value.toInt());
  } else if (value.isDouble()) {
    out.set_double_value(value.toDouble());
  } else if (value.isBool()) {
    out.set_bool_value(value.toBool());
  } else if (value.isString()) {
    out.set_string_value(value.toStringRef());
  } else {
    return false;
  }
  return true;
}

// Payload bytes `value` takes on the wire (tensor bytes, string bytes, 8 for
// a scalar); for batching by size.
int64_t EncodedPayloadBytes(const v1::Value& value);

}  // namespace loopserve
