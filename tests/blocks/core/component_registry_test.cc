#include "blocks/core/component_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "blocks/core/param_reader.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// An interface and a configurable implementation, as schedulers are.
class Scale {
 public:
  virtual ~Scale() = default;
  virtual double factor() const = 0;
};
class FixedScale final : public Scale {
 public:
  explicit FixedScale(double factor) : factor_(factor) {}
  double factor() const override { return factor_; }

 private:
  double factor_;
};

absl::Status RegisterScale(ComponentRegistry& registry) {
  return registry.Register<Scale>(
      "fixed_scale",
      [](const BlockParams& raw, const ComponentContext&)
          -> absl::StatusOr<std::shared_ptr<const Scale>> {
        ParamReader params(raw);
        ASSIGN_OR_RETURN(double factor, params.Double("factor", 1.0));
        RETURN_IF_ERROR(params.CheckAllRead());
        return std::make_shared<const FixedScale>(factor);
      });
}

TEST(ComponentRegistryTest, CreatesConfiguredComponentsAsTheirInterface) {
  ComponentRegistry registry;
  ASSERT_OK(RegisterScale(registry));
  Components loaded;
  ASSERT_OK(
      registry.Create("fixed_scale", "double", {{"factor", 2.0}}, {}, loaded));
  ASSERT_OK_AND_ASSIGN(const Scale* scale, loaded.Get<Scale>("double"));
  EXPECT_EQ(scale->factor(), 2.0);
  EXPECT_THAT(registry.TypeNames(), ElementsAre("fixed_scale"));
}

TEST(ComponentRegistryTest, Errors) {
  ComponentRegistry registry;
  ASSERT_OK(RegisterScale(registry));
  EXPECT_THAT(
      RegisterScale(registry),
      StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("fixed_scale")));
  Components loaded;
  EXPECT_THAT(registry.Create("dpm", "x", {}, {}, loaded),
              StatusIs(absl::StatusCode::kNotFound,
                       "unknown component type 'dpm'; registered: "
                       "fixed_scale"));
  EXPECT_THAT(registry.Create("fixed_scale", "x", {{"factr", 2.0}}, {}, loaded),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("param 'factr': unknown param")));
  EXPECT_FALSE(loaded.Contains("x"));
}

TEST(ComponentRegistryTest, RolesShareALoadedComponent) {
  ComponentRegistry registry;
  ASSERT_OK(RegisterScale(registry));
  Components pool;
  ASSERT_OK(
      registry.Create("fixed_scale", "half", {{"factor", 0.5}}, {}, pool));
  Components pipeline;
  ASSERT_OK(pipeline.AddShared("scale", pool, "half"));
  ASSERT_OK_AND_ASSIGN(const Scale* by_role, pipeline.Get<Scale>("scale"));
  ASSERT_OK_AND_ASSIGN(const Scale* by_name, pool.Get<Scale>("half"));
  EXPECT_EQ(by_role, by_name);  // one object, two names
  EXPECT_THAT(pipeline.AddShared("other", pool, "missing"),
              StatusIs(absl::StatusCode::kNotFound,
                       "component 'missing' is not loaded"));
}

TEST(ComponentContextTest, ResolvesRelativePathsAgainstItsFolder) {
  const ComponentContext context{.base_dir = "/srv/models"};
  EXPECT_EQ(context.ResolvePath("digits/unet.pt"),
            "/srv/models/digits/unet.pt");
  EXPECT_EQ(context.ResolvePath("/abs/unet.pt"), "/abs/unet.pt");
  EXPECT_EQ(ComponentContext{}.ResolvePath("unet.pt"), "unet.pt");
}

}  // namespace
}  // namespace loopserve
