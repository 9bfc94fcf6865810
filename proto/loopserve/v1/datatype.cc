#include "loopserve/v1/datatype.h"

#include <bit>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/user_text.h"

namespace loopserve {
namespace {

static_assert(std::endian::native == std::endian::little,
              "raw_contents is little-endian; a big-endian host would need "
              "a byte swap");

// The table is indexed by the enum.
constexpr bool TableInEnumOrder() {
  for (size_t i = 0; i < std::size(kDatatypes); ++i) {
    if (static_cast<size_t>(kDatatypes[i].datatype) != i) return false;
  }
  return true;
}
static_assert(TableInEnumOrder(), "kDatatypes must follow Datatype's order");

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(bits);
}

template <typename T>
double Load(const char* raw, size_t index) {
  T value;
  std::memcpy(&value, raw + index * sizeof(T), sizeof(T));
  return static_cast<double>(value);
}

}  // namespace

const DatatypeInfo& InfoOf(Datatype datatype) {
  return kDatatypes[static_cast<size_t>(datatype)];
}

absl::StatusOr<const DatatypeInfo*> FindDatatype(absl::string_view name) {
  for (const DatatypeInfo& info : kDatatypes) {
    if (info.name == name) return &info;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown datatype ", QuoteUserText(name),
                   "; expected one of ", DatatypeNames()));
}

std::string DatatypeNames() {
  std::vector<absl::string_view> names;
  for (const DatatypeInfo& info : kDatatypes) names.push_back(info.name);
  return absl::StrJoin(names, ", ");
}

double ElementAsDouble(Datatype datatype, const char* raw, size_t index) {
  switch (datatype) {
    case Datatype::kBool:
    case Datatype::kUint8:
      return Load<uint8_t>(raw, index);
    case Datatype::kInt8:
      return Load<int8_t>(raw, index);
    case Datatype::kInt16:
      return Load<int16_t>(raw, index);
    case Datatype::kInt32:
      return Load<int32_t>(raw, index);
    case Datatype::kInt64:
      return Load<int64_t>(raw, index);
    case Datatype::kFp16: {
      uint16_t bits;
      std::memcpy(&bits, raw + index * 2, 2);
      return HalfToFloat(bits);
    }
    case Datatype::kBf16: {  // the top half of a float32
      uint16_t bits;
      std::memcpy(&bits, raw + index * 2, 2);
      return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
    }
    case Datatype::kFp32:
      return Load<float>(raw, index);
    case Datatype::kFp64:
      return Load<double>(raw, index);
  }
  return 0;
}

}  // namespace loopserve
