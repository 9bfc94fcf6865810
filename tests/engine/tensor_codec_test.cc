#include "engine/tensor_codec.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "loopserve/v1/datatype.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class TensorCodecDtypeTest : public ::testing::TestWithParam<c10::ScalarType> {
};

TEST_P(TensorCodecDtypeTest, RoundTrips) {
  const at::Tensor original =
      (at::arange(24, at::kDouble).reshape({2, 3, 4}) - 5).to(GetParam());
  v1::Tensor wire;
  ASSERT_OK(EncodeTensor(original, wire));
  EXPECT_EQ(wire.raw_contents().size(), original.nbytes());
  ASSERT_OK_AND_ASSIGN(at::Tensor decoded, DecodeTensor(wire, {}));
  EXPECT_EQ(decoded.scalar_type(), GetParam());
  EXPECT_TRUE(at::equal(decoded, original));
}

INSTANTIATE_TEST_SUITE_P(AllWireDtypes, TensorCodecDtypeTest,
                         ::testing::Values(at::kBool, at::kByte, at::kChar,
                                           at::kShort, at::kInt, at::kLong,
                                           at::kHalf, at::kBFloat16, at::kFloat,
                                           at::kDouble));

// The one datatype table (loopserve/v1/datatype.h) and libtorch agree on
// every entry, both ways, and on its size.
TEST(TensorCodecTest, EveryTableDatatypeMapsBothWays) {
  for (const DatatypeInfo& info : kDatatypes) {
    SCOPED_TRACE(info.name);
    ASSERT_OK_AND_ASSIGN(const c10::ScalarType type,
                         ScalarTypeFromDatatype(info.name));
    EXPECT_EQ(c10::elementSize(type), info.itemsize);
    EXPECT_EQ(c10::isFloatingType(type), info.is_floating_point);
    ASSERT_OK_AND_ASSIGN(const std::string name, DatatypeFromScalarType(type));
    EXPECT_EQ(name, info.name);
  }
  EXPECT_THAT(ScalarTypeFromDatatype("FP8"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown datatype 'FP8'; expected one of "
                                 "BOOL, UINT8")));
}

TEST(TensorCodecTest, DatatypeNames) {
  EXPECT_EQ(*DatatypeFromScalarType(at::kBFloat16), "BF16");
  EXPECT_EQ(*ScalarTypeFromDatatype("FP16"), at::kHalf);
  EXPECT_THAT(DatatypeFromScalarType(at::kComplexFloat),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot be sent")));
}

TEST(TensorCodecTest, StridedTensorsEncodeRowMajor) {
  const at::Tensor base = at::arange(6, at::kFloat).reshape({2, 3});
  const at::Tensor transposed = base.t();  // not contiguous
  v1::Tensor wire;
  ASSERT_OK(EncodeTensor(transposed, wire));
  EXPECT_THAT(wire.shape(), ElementsAre(3, 2));
  ASSERT_OK_AND_ASSIGN(at::Tensor decoded, DecodeTensor(wire, {}));
  EXPECT_TRUE(at::equal(decoded, transposed.contiguous()));
}

TEST(TensorCodecTest, EmptyAndScalarTensors) {
  v1::Tensor wire;
  ASSERT_OK(EncodeTensor(at::zeros({0, 3}), wire));
  EXPECT_TRUE(wire.raw_contents().empty());
  ASSERT_OK_AND_ASSIGN(at::Tensor empty, DecodeTensor(wire, {}));
  EXPECT_THAT(empty.sizes(), ElementsAre(0, 3));

  ASSERT_OK(EncodeTensor(at::scalar_tensor(2.5), wire));
  EXPECT_TRUE(wire.shape().empty());
  ASSERT_OK_AND_ASSIGN(at::Tensor scalar, DecodeTensor(wire, {}));
  EXPECT_EQ(scalar.item<double>(), 2.5);
}

TEST(TensorCodecTest, DecodeChecksBeforeTouchingBytes) {
  v1::Tensor wire;
  wire.set_datatype("FP32");
  wire.add_shape(int64_t{1} << 40);
  wire.add_shape(int64_t{1} << 40);  // the product would overflow
  EXPECT_THAT(DecodeTensor(wire, {.max_tensor_bytes = 1 << 20}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("larger than the server's limit")));
}

TEST(TensorCodecTest, ValuesRoundTripIncludingNestedLists) {
  c10::impl::GenericList inner(c10::AnyType::get());
  inner.push_back(int64_t{1});
  inner.push_back(at::ones({2}));
  c10::impl::GenericList outer(c10::AnyType::get());
  outer.push_back(std::string("a"));
  outer.push_back(inner);
  v1::Value wire;
  ASSERT_OK(EncodeValue(c10::IValue(outer), wire));
  ASSERT_OK_AND_ASSIGN(c10::IValue back, DecodeValue(wire, {}));
  ASSERT_TRUE(back.isList());
  EXPECT_EQ(back.toListRef()[0].toStringRef(), "a");
  const auto& nested = back.toListRef()[1].toListRef();
  EXPECT_EQ(nested[0].toInt(), 1);
  EXPECT_TRUE(at::equal(nested[1].toTensor(), at::ones({2})));

  // Reusing a message must not append to an old list.
  ASSERT_OK(EncodeValue(c10::IValue(outer), wire));
  EXPECT_EQ(wire.list_value().values_size(), 2);
}

TEST(TensorCodecTest, CheckValueAgreesWithDecodeValueWithoutCopying) {
  v1::Value tensor;
  ASSERT_OK(EncodeTensor(at::ones({2, 2}), *tensor.mutable_tensor()));
  EXPECT_EQ(*CheckValue(tensor, {}), ValueKind::kTensor);
  v1::Value list;
  list.mutable_list_value()->add_values()->set_int64_value(1);
  EXPECT_EQ(*CheckValue(list, {}), ValueKind::kList);
  v1::Value integer;
  integer.set_int64_value(3);
  EXPECT_EQ(*CheckValue(integer, {}), ValueKind::kInt);

  v1::Value bad;
  v1::Tensor* t = bad.mutable_list_value()->add_values()->mutable_tensor();
  t->set_datatype("FP32");
  t->add_shape(2);
  t->set_raw_contents(std::string(4, '\0'));
  EXPECT_THAT(CheckValue(bad, {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "item 0: raw_contents has 4 bytes; shape [2] FP32 "
                       "needs 8"));
  EXPECT_EQ(CheckValue(bad, {}).status(), DecodeValue(bad, {}).status());
  EXPECT_THAT(
      CheckValue(v1::Value(), {}),
      StatusIs(absl::StatusCode::kInvalidArgument, "value has no kind set"));
}

TEST(TensorCodecTest, ListsNestTooDeep) {
  v1::Value wire;
  v1::Value* level = &wire;
  for (int i = 0; i < 10; ++i) {
    level = level->mutable_list_value()->add_values();
  }
  level->set_int64_value(1);
  EXPECT_THAT(DecodeValue(wire, {.max_list_depth = 8}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("nest deeper than 8")));
}

}  // namespace
}  // namespace loopserve
