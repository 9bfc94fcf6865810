// The built-in types are those builtin_blocks.h lists, under those names.
#include "blocks/builtin_blocks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::testing::UnorderedElementsAre;

TEST(BuiltinBlocksTest, EveryBlockTypeTheHeaderLists) {
  BlockRegistry registry;
  ASSERT_OK(RegisterBuiltinBlocks(registry));
  EXPECT_THAT(registry.TypeNames(),
              UnorderedElementsAre(
                  "Sequential", "LoopWrapper", "LoopBlock", "EncodePrompt",
                  "EncodeImage", "AddTimeIds", "SetTimesteps", "PrepareLatents",
                  "DenoiseLoop", "ScaleModelInput", "PredictNoise",
                  "SchedulerStep", "Decode", "Preview"));
  EXPECT_FALSE(RegisterBuiltinBlocks(registry).ok());  // ALREADY_EXISTS
}

TEST(BuiltinBlocksTest, EveryComponentTypeTheHeaderLists) {
  ComponentRegistry registry;
  ASSERT_OK(RegisterBuiltinComponents(registry));
  EXPECT_THAT(
      registry.TypeNames(),
      UnorderedElementsAre(
          "ddim_scheduler", "ddpm_scheduler", "euler_scheduler",
          "euler_ancestral_scheduler", "dpm_solver_multistep_scheduler",
          "unipc_multistep_scheduler", "lcm_scheduler",
          "flow_match_euler_scheduler", "diffusers_scheduler",
          "gaussian_mixture_denoiser", "torchscript_denoiser",
          "torchscript_decoder", "latent_preview", "torchscript_text_encoder",
          "torchscript_encoder", "identity_encoder"));
}

}  // namespace
}  // namespace loopserve
