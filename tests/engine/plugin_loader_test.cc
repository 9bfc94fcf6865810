// LoadPlugin with real shared libraries: the example plugin
// (blocks/examples/clamp_plugin) runs a clamped denoising loop in-process,
// and what is not a plugin for this loopserve is refused, naming it.
#include "engine/plugin_loader.h"

#include <ATen/ATen.h>
#include <dlfcn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "blocks/builtin_blocks.h"
#include "engine/pipeline_config.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::Contains;
using ::testing::HasSubstr;

// Where the build put them (tests/CMakeLists.txt).
constexpr char kClampPlugin[] = CLAMP_PLUGIN;
constexpr char kWrongAbiPlugin[] = WRONG_ABI_PLUGIN;
constexpr char kClampConfig[] = CLAMP_CONFIG;

// The largest |latents| after each iteration.
class LatentsRange : public IterationObserver {
 public:
  absl::Status OnIteration(const LoopIteration& iteration) override {
    const at::Tensor latents = iteration.state.Find("latents")->toTensor();
    max_abs.push_back(latents.abs().max().item<double>());
    return absl::OkStatus();
  }
  std::vector<double> max_abs;
};

class PluginLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(RegisterBuiltinBlocks(blocks_));
    ASSERT_OK(RegisterBuiltinComponents(components_));
  }

  absl::Status LoadClampConfig(const std::string& from = "",
                               const std::string& to = "") {
    absl::StatusOr<ConfigSource> config = ReadConfigSource(kClampConfig);
    if (!config.ok()) return config.status();
    if (!from.empty()) {
      const size_t at = config->text.find(from);
      EXPECT_NE(at, std::string::npos) << from;
      config->text.replace(at, from.size(), to);
    }
    catalog_ = PipelineCatalog();
    return LoadServerConfig(*config, blocks_, components_, c10::kCPU, catalog_);
  }

  BlockRegistry blocks_;
  ComponentRegistry components_;
  PipelineCatalog catalog_;
};

TEST_F(PluginLoaderTest, TheExamplePluginClampsEveryStep) {
  ASSERT_OK(LoadPlugin(kClampPlugin, blocks_, components_));
  EXPECT_TRUE(blocks_.Contains("ClampLatents"));
  EXPECT_TRUE(components_.Contains("clamp_range"));
  ASSERT_OK(LoadClampConfig());
  const Pipeline* pipeline = catalog_.Find("gmm-ddim-clamped");
  ASSERT_NE(pipeline, nullptr);

  PipelineState state;
  state.SetInput("seed", int64_t{3});
  state.SetInput("num_inference_steps", int64_t{20});
  LatentsRange range;
  RunContext context{.observer = &range};
  ASSERT_OK(RunBlock(*pipeline->root, pipeline->components, state, context));
  ASSERT_EQ(range.max_abs.size(), 20u);
  for (double max_abs : range.max_abs) EXPECT_LE(max_abs, 1.0);
  // Unit noise has samples beyond 1: the clamp held them at the bound.
  EXPECT_THAT(range.max_abs, Contains(1.0));
  const at::Tensor latents = state.GetIntermediate("latents")->toTensor();
  EXPECT_LE(latents.abs().max().item<double>(), 1.0);
}

TEST_F(PluginLoaderTest, APluginRoleOfTheWrongKindFailsAtLoad) {
  ASSERT_OK(LoadPlugin(kClampPlugin, blocks_, components_));
  EXPECT_THAT(
      LoadClampConfig("key: \"clamp\" value: \"unit\"",
                      "key: \"clamp\" value: \"ddim\""),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("role 'clamp': block "
                         "'gmm-ddim-clamped/denoise/clamp' (ClampLatents) "
                         "expects component 'clamp' to be a "
                         "clamp_plugin::ClampRange (clamp_range), but it is "
                         "a Scheduler")));
}

TEST_F(PluginLoaderTest, WithoutThePluginItsTypesAreUnknown) {
  EXPECT_THAT(LoadClampConfig(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown component type 'clamp_range'")));
}

TEST_F(PluginLoaderTest, APluginBuiltAgainstOtherHeadersIsRefused) {
  const std::vector<std::string> before = blocks_.TypeNames();
  EXPECT_THAT(LoadPlugin(kWrongAbiPlugin, blocks_, components_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("was built against other headers: loopserve "
                                 "plugin ABI 0.0.1-0123456789abcdef")));
  EXPECT_EQ(blocks_.TypeNames(), before);
}

TEST_F(PluginLoaderTest, RegisteringTwiceNamesThePluginAndTheType) {
  ASSERT_OK(LoadPlugin(kClampPlugin, blocks_, components_));
  EXPECT_THAT(LoadPlugin(kClampPlugin, blocks_, components_),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr("libclamp_plugin.so': block type "
                                 "'ClampLatents'")));
}

TEST_F(PluginLoaderTest, WhatIsNotAPluginIsRefused) {
  EXPECT_THAT(LoadPlugin("/nonexistent/libnothing.so", blocks_, components_),
              StatusIs(absl::StatusCode::kNotFound,
                       "plugin '/nonexistent/libnothing.so': no such file"));
  // A shared library, but not a plugin: abseil's, which this test loads.
  Dl_info info;
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&absl::StatusCodeToString), &info),
            0);
  EXPECT_THAT(LoadPlugin(info.dli_fname, blocks_, components_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is not a loopserve plugin")));
  EXPECT_THAT(LoadPlugin(kClampConfig, blocks_, components_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot load it")));
}

}  // namespace
}  // namespace loopserve
