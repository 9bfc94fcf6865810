#include "engine/tensor_codec.h"

#include <ATen/ATen.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loopserve/v1/datatype.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

// The libtorch side of the datatype table (loopserve/v1/datatype.h).
c10::ScalarType ScalarTypeOf(Datatype datatype) {
  switch (datatype) {
    case Datatype::kBool:
      return c10::ScalarType::Bool;
    case Datatype::kUint8:
      return c10::ScalarType::Byte;
    case Datatype::kInt8:
      return c10::ScalarType::Char;
    case Datatype::kInt16:
      return c10::ScalarType::Short;
    case Datatype::kInt32:
      return c10::ScalarType::Int;
    case Datatype::kInt64:
      return c10::ScalarType::Long;
    case Datatype::kFp16:
      return c10::ScalarType::Half;
    case Datatype::kBf16:
      return c10::ScalarType::BFloat16;
    case Datatype::kFp32:
      return c10::ScalarType::Float;
    case Datatype::kFp64:
      return c10::ScalarType::Double;
  }
  return c10::ScalarType::Undefined;
}

}  // namespace

absl::StatusOr<c10::ScalarType> ScalarTypeFromDatatype(
    absl::string_view datatype) {
  ASSIGN_OR_RETURN(const DatatypeInfo* info, FindDatatype(datatype));
  return ScalarTypeOf(info->datatype);
}

absl::StatusOr<std::string> DatatypeFromScalarType(c10::ScalarType type) {
  for (const DatatypeInfo& info : kDatatypes) {
    if (ScalarTypeOf(info.datatype) == type) return std::string(info.name);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "tensors of dtype ", c10::toString(type), " cannot be sent"));
}

absl::Status CheckTensor(const v1::Tensor& tensor, const DecodeLimits& limits) {
  ASSIGN_OR_RETURN(const DatatypeInfo* info, FindDatatype(tensor.datatype()));
  const int64_t itemsize = info->itemsize;
  const auto& shape = tensor.shape();
  // The rank first: every later step walks the shape, and libtorch's cost
  // per operation grows faster than linearly with it.
  if (shape.size() > limits.max_tensor_rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor has ", shape.size(), " dimensions; the server's limit is ",
        limits.max_tensor_rank, " (--max_tensor_rank)"));
  }
  // Bound the product before computing it, so it cannot overflow.
  const int64_t max_elements =
      std::min(limits.max_tensor_elements, limits.max_tensor_bytes / itemsize);
  int64_t elements = 1;
  for (int i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dimension ", i, " of the shape is negative (", shape[i], ")"));
    }
    if (shape[i] != 0 && elements > max_elements / shape[i]) {
      const bool bytes_bind = max_elements < limits.max_tensor_elements;
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor of shape [", absl::StrJoin(shape, ","), "] ",
          tensor.datatype(), " is larger than the server's limit of ",
          bytes_bind ? limits.max_tensor_bytes : limits.max_tensor_elements,
          bytes_bind ? " bytes (--max_tensor_bytes)"
                     : " elements (--max_tensor_elements)"));
    }
    elements *= shape[i];
  }
  const int64_t nbytes = elements * itemsize;
  if (static_cast<int64_t>(tensor.raw_contents().size()) != nbytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_contents has ", tensor.raw_contents().size(), " bytes; shape [",
        absl::StrJoin(shape, ","), "] ", tensor.datatype(), " needs ", nbytes));
  }
  return absl::OkStatus();
}

namespace {

// The index of the first element of `raw` (little-endian words of type
// Word) whose bits under `exponent` are all set: an IEEE NaN or Inf; -1
// when there is none.
template <typename Word>
int64_t FirstNonFinite(const std::string& raw, Word exponent) {
  const int64_t n = static_cast<int64_t>(raw.size() / sizeof(Word));
  for (int64_t i = 0; i < n; ++i) {
    Word bits;
    std::memcpy(&bits, raw.data() + i * sizeof(Word), sizeof(Word));
    if ((bits & exponent) == exponent) return i;
  }
  return -1;
}

int64_t FirstNonFinite(Datatype datatype, const std::string& raw) {
  switch (datatype) {
    case Datatype::kFp16:
      return FirstNonFinite<uint16_t>(raw, 0x7c00);
    case Datatype::kBf16:
      return FirstNonFinite<uint16_t>(raw, 0x7f80);
    case Datatype::kFp32:
      return FirstNonFinite<uint32_t>(raw, 0x7f800000);
    case Datatype::kFp64:
      return FirstNonFinite<uint64_t>(raw, 0x7ff0000000000000);
    default:
      return -1;
  }
}

absl::Status NonFiniteError(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(what,
                   " is NaN or Inf; the server refuses non-finite inputs "
                   "(--allow_non_finite_inputs)"));
}

}  // namespace

absl::Status CheckTensorContents(const v1::Tensor& tensor,
                                 const DecodeLimits& limits) {
  ASSIGN_OR_RETURN(const DatatypeInfo* info, FindDatatype(tensor.datatype()));
  const std::string& raw = tensor.raw_contents();
  if (info->datatype == Datatype::kBool) {
    const size_t at = raw.find_first_not_of(std::string_view("\0\1", 2));
    if (at != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("BOOL element ", at, " is byte ",
                       static_cast<uint8_t>(raw[at]), "; expected 0 or 1"));
    }
  }
  if (info->is_floating_point && !limits.allow_non_finite) {
    if (const int64_t at = FirstNonFinite(info->datatype, raw); at >= 0) {
      return NonFiniteError(absl::StrCat("element ", at));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> DecodeTensor(const v1::Tensor& tensor,
                                        const DecodeLimits& limits) {
  RETURN_IF_ERROR(CheckTensor(tensor, limits));
  RETURN_IF_ERROR(CheckTensorContents(tensor, limits));
  const std::vector<int64_t> shape(tensor.shape().begin(),
                                   tensor.shape().end());
  at::Tensor out = at::empty(
      shape,
      at::TensorOptions().dtype(*ScalarTypeFromDatatype(tensor.datatype())));
  if (!tensor.raw_contents().empty()) {
    std::memcpy(out.data_ptr(), tensor.raw_contents().data(),
                tensor.raw_contents().size());
  }
  return out;
}

absl::Status EncodeTensor(const at::Tensor& tensor, v1::Tensor& out) {
  ASSIGN_OR_RETURN(std::string datatype,
                   DatatypeFromScalarType(tensor.scalar_type()));
  out.set_datatype(std::move(datatype));
  out.clear_shape();
  for (int64_t d : tensor.sizes()) out.add_shape(d);
  std::string* raw = out.mutable_raw_contents();
  raw->resize(tensor.numel() * tensor.element_size());
  if (raw->empty()) return absl::OkStatus();
  // One copy straight into the message: a plain memcpy for the common case
  // of a contiguous CPU tensor, else ATen's copy from wherever the tensor
  // lives (another device, strided).
  if (tensor.device().is_cpu() && tensor.is_contiguous()) {
    std::memcpy(raw->data(), tensor.data_ptr(), raw->size());
  } else {
    at::from_blob(raw->data(), tensor.sizes(),
                  at::TensorOptions().dtype(tensor.scalar_type()))
        .copy_(tensor);
  }
  return absl::OkStatus();
}

namespace {

// Checks `value` and, when `out` is given, decodes it there: one walk for
// both, so that CheckValue accepts exactly what DecodeValue does.
absl::StatusOr<ValueKind> CheckOrDecode(const v1::Value& value,
                                        const DecodeLimits& limits, int depth,
                                        c10::IValue* out) {
  switch (value.kind_case()) {
    case v1::Value::kTensor:
      if (out == nullptr) {
        RETURN_IF_ERROR(CheckTensor(value.tensor(), limits));
      } else {
        ASSIGN_OR_RETURN(*out, DecodeTensor(value.tensor(), limits));
      }
      return ValueKind::kTensor;
    case v1::Value::kInt64Value:
      if (out != nullptr) *out = static_cast<int64_t>(value.int64_value());
      return ValueKind::kInt;
    case v1::Value::kDoubleValue:
      if (!limits.allow_non_finite && !std::isfinite(value.double_value())) {
        return NonFiniteError("the value");
      }
      if (out != nullptr) *out = value.double_value();
      return ValueKind::kDouble;
    case v1::Value::kBoolValue:
      if (out != nullptr) *out = value.bool_value();
      return ValueKind::kBool;
    case v1::Value::kStringValue:
      if (static_cast<int64_t>(value.string_value().size()) >
          limits.max_string_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("string of ", value.string_value().size(),
                         " bytes is longer than the server's limit of ",
                         limits.max_string_bytes, " (--max_string_bytes)"));
      }
      if (out != nullptr) *out = value.string_value();
      return ValueKind::kString;
    case v1::Value::kListValue: {
      if (depth >= limits.max_list_depth) {
        return absl::InvalidArgumentError(absl::StrCat(
            "lists nest deeper than ", limits.max_list_depth, " levels"));
      }
      c10::impl::GenericList list(c10::AnyType::get());
      if (out != nullptr) list.reserve(value.list_value().values_size());
      for (int i = 0; i < value.list_value().values_size(); ++i) {
        c10::IValue item;
        absl::StatusOr<ValueKind> kind =
            CheckOrDecode(value.list_value().values(i), limits, depth + 1,
                          out != nullptr ? &item : nullptr);
        if (!kind.ok()) {
          return absl::Status(
              kind.status().code(),
              absl::StrCat("item ", i, ": ", kind.status().message()));
        }
        if (out != nullptr) list.push_back(std::move(item));
      }
      if (out != nullptr) *out = std::move(list);
      return ValueKind::kList;
    }
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("value has no kind set");
}

}  // namespace

absl::StatusOr<c10::IValue> DecodeValue(const v1::Value& value,
                                        const DecodeLimits& limits) {
  c10::IValue out;
  RETURN_IF_ERROR(CheckOrDecode(value, limits, 0, &out).status());
  return out;
}

absl::StatusOr<ValueKind> CheckValue(const v1::Value& value,
                                     const DecodeLimits& limits) {
  return CheckOrDecode(value, limits, 0, nullptr);
}

absl::Status EncodeValue(const c10::IValue& value, v1::Value& out) {
  if (value.isTensor())
    return EncodeTensor(value.toTensor(), *out.mutable_tensor());
  if (EncodeScalar(value, out)) return absl::OkStatus();
  if (value.isList()) {
    v1::ValueList* list = out.mutable_list_value();
    list->clear_values();  // `out` may be a reused message
    for (const c10::IValue& item : value.toListRef()) {
      RETURN_IF_ERROR(EncodeValue(item, *list->add_values()));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("a value of type ", value.tagKind(), " cannot be sent"));
  }
  return absl::OkStatus();
}

int64_t EncodedPayloadBytes(const v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kTensor:
      return static_cast<int64_t>(value.tensor().raw_contents().size());
    case v1::Value::kStringValue:
      return static_cast<int64_t>(value.string_value().size());
    case v1::Value::kListValue: {
      int64_t total = 0;
      for (const v1::Value& item : value.list_value().values()) {
        total += EncodedPayloadBytes(item);
      }
      return total;
    }
    default:
      return 8;
  }
}

}  // namespace loopserve
