#include "client/npy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "loopserve/v1/datatype.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::Tensor Fp32(std::vector<int64_t> shape, std::vector<float> values) {
  v1::Tensor t;
  t.set_datatype("FP32");
  for (int64_t d : shape) t.add_shape(d);
  t.set_raw_contents(std::string(reinterpret_cast<const char*>(values.data()),
                                 values.size() * sizeof(float)));
  return t;
}

// What np.save writes, header and all.
std::string NumpyFile(const std::string& header_dict, const std::string& data) {
  std::string header = header_dict;
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += static_cast<char>(header.size());
  out += '\0';
  return out + header + data;
}

TEST(NpyTest, RoundTrips) {
  const v1::Tensor t = Fp32({2, 3}, {1, 2, 3, 4, 5, 6});
  ASSERT_OK_AND_ASSIGN(std::string bytes, SerializeNpy(t));
  EXPECT_EQ(bytes.size() % 64, 24u);  // data starts at a multiple of 64
  ASSERT_OK_AND_ASSIGN(v1::Tensor back, ParseNpy(bytes));
  EXPECT_EQ(back.datatype(), "FP32");
  EXPECT_THAT(back.shape(), ElementsAre(2, 3));
  EXPECT_EQ(back.raw_contents(), t.raw_contents());
}

TEST(NpyTest, WritesTheHeaderNumpyExpects) {
  ASSERT_OK_AND_ASSIGN(std::string bytes,
                       SerializeNpy(Fp32({4}, {1, 2, 3, 4})));
  EXPECT_THAT(bytes, HasSubstr("{'descr': '<f4', 'fortran_order': False, "
                               "'shape': (4,), }"));
}

TEST(NpyTest, ReadsNumpysOwnFiles) {
  const int64_t values[] = {7, -1};
  ASSERT_OK_AND_ASSIGN(
      v1::Tensor t,
      ParseNpy(
          NumpyFile("{'descr': '<i8', 'fortran_order': False, "
                    "'shape': (2,), }",
                    std::string(reinterpret_cast<const char*>(values), 16))));
  EXPECT_EQ(t.datatype(), "INT64");
  EXPECT_THAT(t.shape(), ElementsAre(2));
  ASSERT_OK_AND_ASSIGN(
      v1::Tensor scalar,
      ParseNpy(NumpyFile("{'descr': '<f8', 'fortran_order': False, "
                         "'shape': (), }",
                         std::string(8, '\0'))));
  EXPECT_TRUE(scalar.shape().empty());
}

TEST(NpyTest, Bf16IsWrittenAsFloat32) {
  v1::Tensor t;
  t.set_datatype("BF16");
  t.add_shape(1);
  t.set_raw_contents(std::string("\x80\x3f", 2));  // 1.0
  ASSERT_OK_AND_ASSIGN(v1::Tensor back, ParseNpy(*SerializeNpy(t)));
  EXPECT_EQ(back.datatype(), "FP32");
  float value;
  std::memcpy(&value, back.raw_contents().data(), 4);
  EXPECT_EQ(value, 1.0f);
}

// Every datatype of the one table with a NumPy dtype round-trips; the one
// without (BF16) widens to FP32.
TEST(NpyTest, EveryTableDatatypeRoundTrips) {
  for (const DatatypeInfo& info : kDatatypes) {
    SCOPED_TRACE(info.name);
    v1::Tensor t;
    t.set_datatype(std::string(info.name));
    t.add_shape(3);
    t.set_raw_contents(std::string(3 * info.itemsize, '\x01'));
    ASSERT_OK_AND_ASSIGN(v1::Tensor back, ParseNpy(*SerializeNpy(t)));
    EXPECT_EQ(back.datatype(), info.npy_descr.empty() ? "FP32" : info.name);
    if (!info.npy_descr.empty()) {
      EXPECT_EQ(back.raw_contents(), t.raw_contents());
    }
  }
  v1::Tensor unknown;
  unknown.set_datatype("FP8");
  EXPECT_THAT(SerializeNpy(unknown),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown datatype 'FP8'")));
}

TEST(DatatypeTest, ElementsReadAsDoubles) {
  const uint16_t half_one_and_a_half = 0x3e00;  // FP16 1.5
  const uint16_t bf16_minus_two = 0xc000;       // BF16 -2
  const int16_t int16 = -7;
  EXPECT_EQ(
      ElementAsDouble(Datatype::kFp16,
                      reinterpret_cast<const char*>(&half_one_and_a_half), 0),
      1.5);
  EXPECT_EQ(ElementAsDouble(Datatype::kBf16,
                            reinterpret_cast<const char*>(&bf16_minus_two), 0),
            -2.0);
  EXPECT_EQ(ElementAsDouble(Datatype::kInt16,
                            reinterpret_cast<const char*>(&int16), 0),
            -7.0);
  EXPECT_THAT(FindDatatype("fp32"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown datatype 'fp32'")));
}

TEST(NpyTest, RefusesWhatItCannotRead) {
  EXPECT_THAT(ParseNpy("not numpy at all"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("magic")));
  EXPECT_THAT(
      ParseNpy(NumpyFile("{'descr': '>f4', 'fortran_order': False, "
                         "'shape': (1,), }",
                         std::string(4, '\0'))),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("big-endian")));
  EXPECT_THAT(
      ParseNpy(NumpyFile("{'descr': '<f4', 'fortran_order': True, "
                         "'shape': (2, 2), }",
                         std::string(16, '\0'))),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Fortran-order")));
  EXPECT_THAT(ParseNpy(NumpyFile("{'descr': '<f4', 'fortran_order': False, "
                                 "'shape': (3,), }",
                                 std::string(8, '\0'))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("data has 8 bytes")));
  // Found by npy_fuzz: dimensions whose product overflows int64 (UB, and a
  // wrapped product could have matched the data's size).
  EXPECT_THAT(ParseNpy(NumpyFile("{'descr': '<f4', 'fortran_order': False, "
                                 "'shape': (6829999, 9999999999999), }",
                                 std::string(8, '\0'))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("data has 8 bytes; shape (6829999, "
                                 "9999999999999) <f4 needs more")));
  EXPECT_THAT(
      ParseNpy(NumpyFile("{'descr': '<u1', 'fortran_order': False, "
                         "'shape': (4294967296, 4294967296), }",
                         "")),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs more")));
  EXPECT_THAT(ParseNpy(NumpyFile("{'descr': '<c8', 'fortran_order': False, "
                                 "'shape': (1,), }",
                                 std::string(8, '\0'))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unsupported dtype '<c8'")));
}

}  // namespace
}  // namespace loopserve
