#include "util/png.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <numeric>

#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;

TEST(PngTest, RoundTripsAnRgbImage) {
  std::vector<uint8_t> rgb(3 * 5 * 3);
  std::iota(rgb.begin(), rgb.end(), 0);
  ASSERT_OK_AND_ASSIGN(std::string png, EncodePng(rgb.data(), 3, 5));
  EXPECT_EQ(png.substr(0, 8), "\x89PNG\r\n\x1a\n");
  ASSERT_OK_AND_ASSIGN(RgbImage image, DecodePng(png));
  EXPECT_EQ(image.height, 3);
  EXPECT_EQ(image.width, 5);
  EXPECT_EQ(image.rgb, rgb);
}

TEST(PngTest, ABatchIsLaidSideBySide) {
  // Two 2 x 1 images: image 0 all 10s, image 1 all 20s.
  std::vector<uint8_t> batch(2 * 2 * 1 * 3);
  std::fill(batch.begin(), batch.begin() + 6, 10);
  std::fill(batch.begin() + 6, batch.end(), 20);
  ASSERT_OK_AND_ASSIGN(std::string png,
                       EncodePngSideBySide(batch.data(), 2, 2, 1));
  ASSERT_OK_AND_ASSIGN(RgbImage image, DecodePng(png));
  ASSERT_EQ(image.height, 2);
  ASSERT_EQ(image.width, 2);
  // Each row: a pixel of image 0, then one of image 1.
  EXPECT_EQ(image.rgb, (std::vector<uint8_t>{10, 10, 10, 20, 20, 20,  //
                                             10, 10, 10, 20, 20, 20}));
}

TEST(PngTest, RefusesEmptyImagesAndNonPngs) {
  EXPECT_THAT(EncodePng(nullptr, 0, 4),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "cannot encode a 0 x 4 image as PNG"));
  EXPECT_THAT(DecodePng("not a png"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("not a PNG")));
}

}  // namespace
}  // namespace loopserve
