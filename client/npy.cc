#include "client/npy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "loopserve/v1/datatype.h"
#include "util/file.h"

namespace loopserve {
namespace {

constexpr absl::string_view kMagic = "\x93NUMPY";

// The datatype whose NumPy descr is `descr` without its byte-order
// character ("f4"), or nullptr.
const DatatypeInfo* DatatypeOfDescr(absl::string_view descr) {
  for (const DatatypeInfo& info : kDatatypes) {
    if (!info.npy_descr.empty() && info.npy_descr.substr(1) == descr) {
      return &info;
    }
  }
  return nullptr;
}

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(".npy: ", message));
}

// The value of `key` in the header dict, up to the next top-level ',' or '}'.
absl::StatusOr<std::string> HeaderField(absl::string_view header,
                                        absl::string_view key) {
  const std::string quoted = absl::StrCat("'", key, "'");
  size_t at = header.find(quoted);
  if (at == absl::string_view::npos) {
    return Invalid(absl::StrCat("header has no ", quoted));
  }
  at = header.find(':', at + quoted.size());
  if (at == absl::string_view::npos) return Invalid("malformed header");
  size_t end = at + 1;
  int depth = 0;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  return std::string(
      absl::StripAsciiWhitespace(header.substr(at + 1, end - at - 1)));
}

}  // namespace

absl::StatusOr<v1::Tensor> ParseNpy(absl::string_view bytes) {
  if (bytes.size() < 10 || bytes.substr(0, 6) != kMagic) {
    return Invalid("not a NumPy file (bad magic)");
  }
  const uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0;
  size_t offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) |
                 (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return Invalid("truncated header");
    for (int i = 0; i < 4; ++i) {
      header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + i]))
                    << (8 * i);
    }
    offset = 12;
  } else {
    return Invalid(absl::StrCat("unsupported format version ", major));
  }
  if (bytes.size() < offset + header_len) return Invalid("truncated header");
  const absl::string_view header = bytes.substr(offset, header_len);

  absl::StatusOr<std::string> descr = HeaderField(header, "descr");
  if (!descr.ok()) return descr.status();
  absl::StatusOr<std::string> fortran = HeaderField(header, "fortran_order");
  if (!fortran.ok()) return fortran.status();
  absl::StatusOr<std::string> shape_text = HeaderField(header, "shape");
  if (!shape_text.ok()) return shape_text.status();

  std::string d = *descr;
  if (d.size() < 4 || d.front() != '\'' || d.back() != '\'') {
    return Invalid(absl::StrCat("unsupported descr ", d));
  }
  d = d.substr(1, d.size() - 2);
  const char order = d[0];
  if (order == '>') {
    return Invalid(absl::StrCat("big-endian arrays ('", d,
                                "') are not supported; save with "
                                "arr.astype(arr.dtype.newbyteorder('<'))"));
  }
  if (order != '<' && order != '|' && order != '=') {
    return Invalid(absl::StrCat("unsupported descr '", d, "'"));
  }
  const DatatypeInfo* dtype = DatatypeOfDescr(absl::string_view(d).substr(1));
  if (dtype == nullptr) {
    return Invalid(absl::StrCat("unsupported dtype '", d, "'"));
  }
  if (*fortran == "True") {
    return Invalid(
        "Fortran-order arrays are not supported; save with "
        "np.ascontiguousarray(arr)");
  }
  if (*fortran != "False") return Invalid("malformed fortran_order");

  std::string dims = *shape_text;
  if (dims.size() < 2 || dims.front() != '(' || dims.back() != ')') {
    return Invalid(absl::StrCat("malformed shape ", dims));
  }
  v1::Tensor tensor;
  tensor.set_datatype(std::string(dtype->name));
  const absl::string_view data = bytes.substr(offset + header_len);
  // The most elements the data can hold: the product of the dimensions is
  // bounded by it before it is computed, so it cannot overflow.
  const int64_t max_elements =
      static_cast<int64_t>(data.size() / dtype->itemsize);
  int64_t elements = 1;
  for (absl::string_view part :
       absl::StrSplit(absl::string_view(dims).substr(1, dims.size() - 2), ',',
                      absl::SkipWhitespace())) {
    int64_t dim = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &dim) || dim < 0) {
      return Invalid(absl::StrCat("malformed shape ", dims));
    }
    if (dim != 0 && elements > max_elements / dim) {
      return Invalid(absl::StrCat("data has ", data.size(), " bytes; shape ",
                                  dims, " ", d, " needs more"));
    }
    tensor.add_shape(dim);
    elements *= dim;
  }
  const size_t nbytes = static_cast<size_t>(elements) * dtype->itemsize;
  if (data.size() != nbytes) {
    return Invalid(absl::StrCat("data has ", data.size(), " bytes; shape ",
                                dims, " ", d, " needs ", nbytes));
  }
  tensor.set_raw_contents(std::string(data));
  return tensor;
}

absl::StatusOr<std::string> SerializeNpy(const v1::Tensor& tensor) {
  absl::StatusOr<const DatatypeInfo*> dtype = FindDatatype(tensor.datatype());
  if (!dtype.ok()) return dtype.status();
  std::string raw = tensor.raw_contents();
  if ((*dtype)->datatype == Datatype::kBf16) {
    // A bfloat16 is the top half of a float32.
    std::string widened(raw.size() * 2, '\0');
    for (size_t i = 0; i + 1 < raw.size(); i += 2) {
      widened[2 * i + 2] = raw[i];
      widened[2 * i + 3] = raw[i + 1];
    }
    raw = std::move(widened);
    *dtype = &InfoOf(Datatype::kFp32);
  }
  std::vector<std::string> dims;
  for (int64_t d : tensor.shape()) dims.push_back(absl::StrCat(d));
  std::string shape = absl::StrCat("(", absl::StrJoin(dims, ", "),
                                   dims.size() == 1 ? ",)" : ")");
  std::string header =
      absl::StrCat("{'descr': '", (*dtype)->npy_descr,
                   "', 'fortran_order': False, 'shape': ", shape, ", }");
  // Pad with spaces so that the data starts at a multiple of 64 bytes.
  const size_t unpadded = kMagic.size() + 4 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string out(kMagic);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out += raw;
  return out;
}

absl::StatusOr<v1::Tensor> ReadNpyFile(const std::string& path) {
  const std::optional<std::string> contents = ReadWholeFile(path);
  if (!contents) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  absl::StatusOr<v1::Tensor> tensor = ParseNpy(*contents);
  if (!tensor.ok()) {
    return absl::Status(tensor.status().code(),
                        absl::StrCat(path, ": ", tensor.status().message()));
  }
  return tensor;
}

absl::Status WriteNpyFile(const std::string& path, const v1::Tensor& tensor) {
  absl::StatusOr<std::string> bytes = SerializeNpy(tensor);
  if (!bytes.ok()) return bytes.status();
  std::ofstream out(path, std::ios::binary);
  out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace loopserve
