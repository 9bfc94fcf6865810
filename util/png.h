// PNG encoding and decoding of 8-bit RGB images, with libpng's simplified
// API: previews streamed each step, and the images loopctl saves.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loopserve {

// `rgb` holds height × width × 3 bytes, row-major. INVALID_ARGUMENT for an
// empty or oversized image.
absl::StatusOr<std::string> EncodePng(const uint8_t* rgb, int64_t height,
                                      int64_t width);

// A batch of `batch` images (`bhwc`: batch × height × width × 3 bytes) as
// one PNG, the images side by side: how previews and saved images show a
// batch.
absl::StatusOr<std::string> EncodePngSideBySide(const uint8_t* bhwc,
                                                int64_t batch, int64_t height,
                                                int64_t width);

struct RgbImage {
  int64_t height = 0;
  int64_t width = 0;
  std::vector<uint8_t> rgb{};  // height × width × 3
};

// INVALID_ARGUMENT when `png` is not a PNG.
absl::StatusOr<RgbImage> DecodePng(absl::string_view png);

}  // namespace loopserve
