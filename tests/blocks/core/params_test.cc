#include "blocks/core/params.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace loopserve {
namespace {

TEST(KindOfTest, MapsEachValueKind) {
  EXPECT_EQ(KindOf(c10::IValue()), ValueKind::kNone);
  EXPECT_EQ(KindOf(at::zeros({2})), ValueKind::kTensor);
  EXPECT_EQ(KindOf(int64_t{3}), ValueKind::kInt);
  EXPECT_EQ(KindOf(2.5), ValueKind::kDouble);
  EXPECT_EQ(KindOf(true), ValueKind::kBool);
  EXPECT_EQ(KindOf(std::string("a")), ValueKind::kString);
  EXPECT_EQ(KindOf(c10::List<int64_t>({1, 2})), ValueKind::kList);
  EXPECT_EQ(KindOf(c10::Device(c10::kCPU)), ValueKind::kOther);
}

TEST(TypeHintTest, AcceptsOnlyItsKinds) {
  const TypeHint hint = TypeHint::Int() | TypeHint::Tensor();
  EXPECT_TRUE(hint.Accepts(int64_t{1}));
  EXPECT_TRUE(hint.Accepts(at::ones({1})));
  EXPECT_FALSE(hint.Accepts(std::string("5")));
  EXPECT_FALSE(hint.Accepts(true));
  EXPECT_FALSE(hint.Accepts(1.5));
}

TEST(TypeHintTest, IntFitsDoubleButNotTheReverse) {
  EXPECT_TRUE(TypeHint::Double().Accepts(int64_t{7}));
  EXPECT_FALSE(TypeHint::Int().Accepts(7.0));
}

TEST(TypeHintTest, NoneFitsNothing) {
  EXPECT_FALSE(TypeHint::Any().Accepts(c10::IValue()));
  EXPECT_FALSE(TypeHint::Int().Accepts(c10::IValue()));
}

TEST(TypeHintTest, DefaultIsAny) {
  EXPECT_TRUE(TypeHint().is_any());
  EXPECT_TRUE(TypeHint().Accepts(std::string("anything")));
  EXPECT_TRUE(TypeHint().Accepts(c10::List<double>({1.0})));
}

TEST(TypeHintTest, ToStringNamesKindsInFixedOrder) {
  EXPECT_EQ(TypeHint::Int().ToString(), "int");
  EXPECT_EQ(
      (TypeHint::Tensor() | TypeHint::Double() | TypeHint::Int()).ToString(),
      "int | double | tensor");
  EXPECT_EQ(TypeHint::Any().ToString(), "any");
}

}  // namespace
}  // namespace loopserve
