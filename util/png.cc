#include "util/png.h"

#include <png.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace loopserve {

absl::StatusOr<std::string> EncodePng(const uint8_t* rgb, int64_t height,
                                      int64_t width) {
  constexpr int64_t kMaxSide = 1 << 15;
  if (height < 1 || width < 1 || height > kMaxSide || width > kMaxSide) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot encode a ", height, " x ", width, " image as PNG"));
  }
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  // The first call sizes the buffer, the second fills it.
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, rgb, 0, nullptr)) {
    return absl::InternalError(
        absl::StrCat("PNG encoding failed: ", image.message));
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, rgb, 0,
                                 nullptr)) {
    return absl::InternalError(
        absl::StrCat("PNG encoding failed: ", image.message));
  }
  out.resize(size);
  return out;
}

absl::StatusOr<std::string> EncodePngSideBySide(const uint8_t* bhwc,
                                                int64_t batch, int64_t height,
                                                int64_t width) {
  if (batch == 1) return EncodePng(bhwc, height, width);
  if (batch < 1 || height < 1 || width < 1) {
    return absl::InvalidArgumentError(absl::StrCat("cannot encode a batch of ",
                                                   batch, " ", height, " x ",
                                                   width, " images as PNG"));
  }
  const size_t row = static_cast<size_t>(width) * 3;
  std::vector<uint8_t> rows(static_cast<size_t>(batch * height) * row);
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t b = 0; b < batch; ++b) {
      std::memcpy(rows.data() + (y * batch + b) * row,
                  bhwc + (b * height + y) * row, row);
    }
  }
  return EncodePng(rows.data(), height, batch * width);
}

absl::StatusOr<RgbImage> DecodePng(absl::string_view png) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, png.data(), png.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a PNG: ", image.message));
  }
  image.format = PNG_FORMAT_RGB;
  RgbImage out{.height = image.height, .width = image.width};
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr)) {
    png_image_free(&image);
    return absl::InvalidArgumentError(absl::StrCat("bad PNG: ", image.message));
  }
  return out;
}

}  // namespace loopserve
