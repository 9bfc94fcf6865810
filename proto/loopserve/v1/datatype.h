// Datatype: the tensor datatypes of loopserve.v1.Tensor (the Open Inference
// Protocol's names), in one table that the server's tensor codec, the
// clients and the .npy reader and writer all read.
//
//   absl::StatusOr<const DatatypeInfo*> info = FindDatatype("FP32");
//   // (*info)->itemsize == 4, (*info)->npy_descr == "<f4"
//
// No libtorch here: the clients use it too. The server maps each entry to
// its c10::ScalarType (engine/tensor_codec.cc), and a test checks that every
// entry maps both ways.
//
// Thread-safety: constant data and pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loopserve {

enum class Datatype : uint8_t {
  kBool,
  kUint8,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kFp16,
  kBf16,
  kFp32,
  kFp64,
};

struct DatatypeInfo {
  Datatype datatype;
  // What Tensor.datatype says: "FP32", "BF16", "INT64" ...
  absl::string_view name;
  // Bytes per element.
  int itemsize;
  // NumPy's dtype string ("<f4", "|u1"); empty when NumPy has none (BF16).
  absl::string_view npy_descr;
  bool is_floating_point;
};

inline constexpr DatatypeInfo kDatatypes[] = {
    {Datatype::kBool, "BOOL", 1, "|b1", false},
    {Datatype::kUint8, "UINT8", 1, "|u1", false},
    {Datatype::kInt8, "INT8", 1, "|i1", false},
    {Datatype::kInt16, "INT16", 2, "<i2", false},
    {Datatype::kInt32, "INT32", 4, "<i4", false},
    {Datatype::kInt64, "INT64", 8, "<i8", false},
    {Datatype::kFp16, "FP16", 2, "<f2", true},
    {Datatype::kBf16, "BF16", 2, "", true},
    {Datatype::kFp32, "FP32", 4, "<f4", true},
    {Datatype::kFp64, "FP64", 8, "<f8", true},
};

// The entry of `datatype`; every Datatype has one.
const DatatypeInfo& InfoOf(Datatype datatype);

// The entry named `name` (exact, as the wire spells it); INVALID_ARGUMENT
// naming it and the accepted names when there is none.
absl::StatusOr<const DatatypeInfo*> FindDatatype(absl::string_view name);

// "BOOL, UINT8, ..., FP64": for error messages.
std::string DatatypeNames();

// Element `index` of little-endian `raw` bytes of `datatype`, as a double
// (FP16 and BF16 widened exactly). For display: no bounds check.
double ElementAsDouble(Datatype datatype, const char* raw, size_t index);

}  // namespace loopserve
