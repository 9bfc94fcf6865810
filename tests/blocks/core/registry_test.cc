#include "blocks/core/registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/blocks/core/fake_blocks.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class Plain : public testing::FakeBlock {
 public:
  static constexpr absl::string_view kTypeName = "Plain";
  Plain() : FakeBlock({}) {}
  absl::string_view type_name() const override { return kTypeName; }
};

TEST(BlockRegistryTest, CreatesRegisteredTypes) {
  BlockRegistry registry;
  ASSERT_OK(registry.Register<Plain>());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Block> block, registry.Create("Plain"));
  EXPECT_EQ(block->type_name(), "Plain");
  EXPECT_TRUE(registry.Contains("Plain"));
}

TEST(BlockRegistryTest, DuplicateIsAlreadyExists) {
  BlockRegistry registry;
  ASSERT_OK(registry.Register<Plain>());
  EXPECT_THAT(registry.Register<Plain>(),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       "block type 'Plain' is already registered"));
}

TEST(BlockRegistryTest, UnknownIsNotFoundAndListsKnownTypes) {
  BlockRegistry registry;
  ASSERT_OK(registry.Register<Plain>());
  EXPECT_THAT(registry.Create("Plane"),
              StatusIs(absl::StatusCode::kNotFound,
                       "unknown block type 'Plane'; registered: Plain"));
}

TEST(BlockRegistryTest, ParamlessTypesRefuseParams) {
  BlockRegistry registry;
  ASSERT_OK(registry.Register<Plain>());
  EXPECT_THAT(registry.Create("Plain", {{"steps", int64_t{3}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "block type 'Plain' takes no params; got 'steps'"));
}

TEST(BlockRegistryTest, FactoriesReceiveParams) {
  BlockRegistry registry;
  ASSERT_OK(registry.Register(
      "Scaled",
      [](const BlockParams& params) -> absl::StatusOr<std::unique_ptr<Block>> {
        auto it = params.find("factor");
        if (it == params.end()) {
          return absl::InvalidArgumentError("param 'factor' is required");
        }
        return std::make_unique<Plain>();
      }));
  EXPECT_OK(registry.Create("Scaled", {{"factor", 2.0}}).status());
  EXPECT_THAT(
      registry.Create("Scaled"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'factor'")));
}

TEST(BlockRegistryTest, RefusesEmptyNamesAndNullFactories) {
  BlockRegistry registry;
  EXPECT_THAT(registry.Register("",
                                [](const BlockParams&) {
                                  return absl::StatusOr<std::unique_ptr<Block>>(
                                      std::make_unique<Plain>());
                                }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(registry.Register("Null", nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
  EXPECT_THAT(registry.TypeNames(), ElementsAre());
}

}  // namespace
}  // namespace loopserve
