// NumPy .npy files <-> loopserve.v1.Tensor, for loopctl's `-i name=@file.npy`
// and `--save-dir`. Debian packages no maintained C++ .npy library, so this
// is a small reader and writer of format versions 1.0-3.0.
//
// Supported: little-endian (or single-byte) bool, uint8, int8/16/32/64 and
// float16/32/64 arrays in C order. Big-endian or Fortran-order arrays are
// INVALID_ARGUMENT with a message that says so. BF16, which NumPy lacks, is
// written as float32.
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

absl::StatusOr<v1::Tensor> ParseNpy(absl::string_view bytes);
absl::StatusOr<std::string> SerializeNpy(const v1::Tensor& tensor);

absl::StatusOr<v1::Tensor> ReadNpyFile(const std::string& path);
absl::Status WriteNpyFile(const std::string& path, const v1::Tensor& tensor);

}  // namespace loopserve
