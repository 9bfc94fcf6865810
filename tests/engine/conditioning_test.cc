// Model argument binding, prompts and image encoders, with the small
// TorchScript modules make_test_modules.py writes in the signatures of
// diffusers' SDXL UNet, SD3 transformer and Flux transformer: which tensor
// reaches which argument, how guidance pairs them, what is not doubled, the
// [B] timestep and its scale, and the errors a bad shape gets.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "blocks/diffusion/denoisers.h"
#include "blocks/diffusion/diffusion_blocks.h"
#include "blocks/diffusion/encode_blocks.h"
#include "blocks/diffusion/encoders.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ModulePath(absl::string_view name) {
  const char* dir = std::getenv("TEST_MODULES");
  EXPECT_NE(dir, nullptr) << "TEST_MODULES is not set";
  return absl::StrCat(dir == nullptr ? "" : dir, "/", name, ".pt");
}

std::vector<std::string> Names(const std::vector<InputParam>& params) {
  std::vector<std::string> names;
  for (const InputParam& p : params) names.push_back(p.name);
  return names;
}

// A PredictNoise bound to one denoiser, run for one step.
class BindingTest : public ::testing::Test {
 protected:
  absl::Status Load(TorchScriptDenoiser::Options options) {
    absl::StatusOr<std::shared_ptr<const TorchScriptDenoiser>> denoiser =
        TorchScriptDenoiser::Load(options);
    if (!denoiser.ok()) return denoiser.status();
    RETURN_IF_ERROR(components_.Add<Denoiser>("denoiser", *denoiser));
    return BindComponents(block_, components_);
  }

  absl::StatusOr<at::Tensor> Step(
      double scale,
      const std::vector<std::pair<std::string, at::Tensor>>& conditioning) {
    BlockState state;
    state.Set("latent_model_input", x_);
    state.Set("guidance_scale", scale);
    for (const auto& [name, value] : conditioning) state.Set(name, value);
    RETURN_IF_ERROR(block_.RunStep(components_, state, {.i = 0, .t = t_}));
    return state.Find("noise_pred")->toTensor();
  }

  Components components_;
  PredictNoise block_;
  const at::Tensor x_ =
      at::linspace(-1, 1, 2 * 4 * 8 * 8).reshape({2, 4, 8, 8});
  const at::Tensor t_ = at::scalar_tensor(400, at::kLong);
};

TEST_F(BindingTest, SdxlArgumentsBecomeInputsAndReachTheirPlaces) {
  ASSERT_OK(Load({.path = ModulePath("sdxl_like"),
                  .arguments = {"sample", "timestep", "encoder_hidden_states",
                                "text_embeds", "time_ids"}}));
  EXPECT_THAT(Names(block_.signature().inputs),
              ::testing::ElementsAre("guidance_scale", "encoder_hidden_states",
                                     "negative_encoder_hidden_states",
                                     "text_embeds", "negative_text_embeds",
                                     "time_ids", "negative_time_ids"));
  // Distinct constants, so a value at the wrong argument shows: the module
  // adds mean(ehs) + 2·mean(text_embeds) + 3·mean(time_ids).
  const at::Tensor ehs = at::ones({2, 7, 3});
  const at::Tensor text_embeds = at::full({1, 5}, 10.0);  // batch 1: shared
  const at::Tensor time_ids = at::full({2, 6}, 100.0);
  ASSERT_OK_AND_ASSIGN(at::Tensor plain,
                       Step(1.0, {{"encoder_hidden_states", ehs},
                                  {"text_embeds", text_embeds},
                                  {"time_ids", time_ids}}));
  const at::Tensor base = x_ * 0.5 + 400.0 / 1000.0;
  EXPECT_TRUE(at::allclose(plain, base + 1 + 20 + 300, 1e-5, 1e-5));

  // Guided: the unconditional half takes negative_text_embeds and zeros
  // for the values without a negative; the module sees 2B rows.
  ASSERT_OK_AND_ASSIGN(
      at::Tensor guided,
      Step(5.0, {{"encoder_hidden_states", ehs},
                 {"text_embeds", text_embeds},
                 {"negative_text_embeds", at::full({2, 5}, -1.0)},
                 {"time_ids", time_ids}}));
  const at::Tensor uncond = base + 0 + 2 * -1.0 + 0;
  const at::Tensor cond = base + 1 + 20 + 300;
  EXPECT_TRUE(at::allclose(guided, uncond + 5.0 * (cond - uncond), 1e-4, 1e-4));
}

TEST_F(BindingTest, Sd3ArgumentsInTheModulesOrderAndADictOutput) {
  ASSERT_OK(Load({.path = ModulePath("sd3_like"),
                  .arguments = {"sample", "encoder_hidden_states",
                                "pooled_projections", "timestep"},
                  .output = "sample"}));
  const at::Tensor ehs = at::full({2, 9, 4}, 3.0);
  const at::Tensor pooled = at::full({2, 6}, 7.0);
  ASSERT_OK_AND_ASSIGN(at::Tensor out,
                       Step(1.0, {{"encoder_hidden_states", ehs},
                                  {"pooled_projections", pooled}}));
  EXPECT_TRUE(at::allclose(out, x_ * 0.5 + 0.4 + 3 + 14, 1e-5, 1e-5));
}

TEST_F(BindingTest, FluxSharedValuesAreNotDoubledAndTheTimestepIsScaled) {
  ASSERT_OK(Load(
      {.path = ModulePath("flux_like"),
       .arguments = {"sample", "timestep", "guidance", "pooled_projections",
                     "encoder_hidden_states", "txt_ids", "img_ids"},
       .shared_arguments = {"guidance", "txt_ids", "img_ids"},
       .timestep_scale = 0.001}));
  const std::vector<std::string> names = Names(block_.signature().inputs);
  EXPECT_THAT(names, ::testing::Contains("negative_pooled_projections"));
  EXPECT_THAT(names, Not(::testing::Contains("negative_txt_ids")));
  EXPECT_THAT(names, Not(::testing::Contains("negative_guidance")));
  const std::vector<std::pair<std::string, at::Tensor>> values = {
      {"guidance", at::full({1}, 3.5)},
      {"pooled_projections", at::full({2, 6}, 2.0)},
      {"encoder_hidden_states", at::full({2, 5, 4}, 1.0)},
      {"txt_ids", at::zeros({5, 3})},
      {"img_ids", at::full({16, 3}, 0.01)}};
  // The module asserts a float [B] timestep <= 1, [n,3] ids and a [1]
  // guidance: under guidance too, where the batched values are doubled.
  ASSERT_OK_AND_ASSIGN(at::Tensor plain, Step(1.0, values));
  const at::Tensor cond = x_ * 0.5 + 0.4 + 1 + 4 + 35 + 48;
  EXPECT_TRUE(at::allclose(plain, cond, 1e-4, 1e-4));
  ASSERT_OK_AND_ASSIGN(at::Tensor guided, Step(2.0, values));
  const at::Tensor uncond = x_ * 0.5 + 0.4 + 35 + 48;
  EXPECT_TRUE(at::allclose(guided, uncond + 2.0 * (cond - uncond), 1e-4, 1e-4));
}

TEST_F(BindingTest, BadShapesAreNamedBeforeTheModelRuns) {
  ASSERT_OK(Load({.path = ModulePath("sdxl_like"),
                  .arguments = {"sample", "timestep", "encoder_hidden_states",
                                "text_embeds", "time_ids"},
                  .shapes = {{"encoder_hidden_states", {-1, 7, 3}},
                             {"time_ids", {-1, 6}}}}));
  const at::Tensor ehs = at::ones({2, 7, 3});
  const at::Tensor text_embeds = at::ones({2, 5});
  EXPECT_THAT(
      Step(1.0, {{"encoder_hidden_states", at::ones({2, 7, 4})},
                 {"text_embeds", text_embeds},
                 {"time_ids", at::ones({2, 6})}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("input 'encoder_hidden_states' must be [B,7,3] "
                         "with B = 1 or 2, got Float [2,7,4]")));
  EXPECT_THAT(Step(1.0, {{"encoder_hidden_states", ehs},
                         {"text_embeds", text_embeds},
                         {"time_ids", at::ones({2, 6, 1})}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'time_ids' must be [B,6]")));
  EXPECT_THAT(
      Step(3.0, {{"encoder_hidden_states", ehs},
                 {"negative_encoder_hidden_states", at::ones({3, 7, 3})},
                 {"text_embeds", text_embeds},
                 {"time_ids", at::ones({2, 6})}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("input 'negative_encoder_hidden_states' "
                         "must be [B,7,3] with B = 1 or 2")));
  EXPECT_THAT(Step(1.0, {{"encoder_hidden_states", ehs},
                         {"time_ids", at::ones({2, 6})}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'text_embeds' is required")));
  // A rank-0 value has no batch.
  EXPECT_THAT(Step(1.0, {{"encoder_hidden_states", ehs},
                         {"text_embeds", at::scalar_tensor(1.0)},
                         {"time_ids", at::ones({2, 6})}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'text_embeds' must be [B,...]")));
}

// Note [module errors]: what the module says stays in the server log.
TEST_F(BindingTest, AModulesOwnErrorDoesNotReachTheClient) {
  // guidance not declared shared: it is doubled under guidance, and the
  // module's assert refuses it.
  ASSERT_OK(Load(
      {.path = ModulePath("flux_like"),
       .arguments = {"sample", "timestep", "guidance", "pooled_projections",
                     "encoder_hidden_states", "txt_ids", "img_ids"},
       .shared_arguments = {"txt_ids", "img_ids"},
       .timestep_scale = 0.001}));
  absl::StatusOr<at::Tensor> out =
      Step(2.0, {{"guidance", at::full({1}, 3.5)},
                 {"pooled_projections", at::ones({2, 6})},
                 {"encoder_hidden_states", at::ones({2, 5, 4})},
                 {"txt_ids", at::zeros({5, 3})},
                 {"img_ids", at::zeros({16, 3})}});
  EXPECT_THAT(out,
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("the denoiser refused its inputs: "
                                       "sample Float [4,4,8,8], timestep "
                                       "Float [4], guidance Float [4]"),
                             Not(HasSubstr("assert")), Not(HasSubstr(".py")),
                             Not(HasSubstr("forward")))));
}

TEST(TorchScriptDenoiserTest, ArgumentsAreCheckedWhenTheModuleLoads) {
  const std::string path = ModulePath("sdxl_like");
  EXPECT_THAT(
      TorchScriptDenoiser::Load(
          {.path = path,
           .arguments = {"sample", "timestep", "encoder_hidden_states"}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("lists 3 (sample, timestep, "
                         "encoder_hidden_states) but the module's "
                         "forward takes 5 (sample, timestep, "
                         "encoder_hidden_states, text_embeds, "
                         "time_ids)")));
  EXPECT_THAT(
      TorchScriptDenoiser::Load(
          {.path = path,
           .arguments = {"sample", "encoder_hidden_states", "a", "b", "c"}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("must include 'timestep'")));
  EXPECT_THAT(TorchScriptDenoiser::Load(
                  {.path = path,
                   .arguments = {"sample", "timestep", "a", "b", "c"},
                   .shared_arguments = {"d"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("param 'shared_arguments': 'd' is not one "
                                 "of the conditioning arguments")));
  EXPECT_THAT(
      TorchScriptDenoiser::Load(
          {.path = path,
           .arguments = {"sample", "timestep", "a", "negative_a", "c"}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("'negative_a': names starting 'negative_'")));
}

// ---- prompts ----

class EncodePromptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(
        auto encoder,
        TorchScriptTextEncoder::Load(
            {.path = ModulePath("text_encoder"),
             .outputs = {"encoder_hidden_states", "text_embeds"}}));
    ASSERT_OK(components_.Add<TextEncoder>("text_encoder", encoder));
    ASSERT_OK(BindComponents(block_, components_));
  }

  absl::StatusOr<PipelineState> Run(
      const std::vector<std::pair<std::string, c10::IValue>>& inputs) {
    PipelineState state;
    for (const auto& [name, value] : inputs) state.SetInput(name, value);
    RunContext context;
    RETURN_IF_ERROR(RunBlock(block_, components_, state, context));
    return state;
  }

  static at::Tensor Get(const PipelineState& state, absl::string_view name) {
    return state.GetIntermediate(name)->toTensor();
  }

  Components components_;
  EncodePrompt block_;
};

TEST_F(EncodePromptTest, PromptsAndTheNegativeBecomeConditioning) {
  EXPECT_THAT(Names(block_.signature().inputs),
              ::testing::IsSupersetOf({"prompt", "negative_prompt",
                                       "encoder_hidden_states",
                                       "negative_text_embeds"}));
  c10::List<std::string> prompts;
  prompts.push_back("ab");
  prompts.push_back("xyz");
  ASSERT_OK_AND_ASSIGN(PipelineState state, Run({{"prompt", prompts}}));
  // The module writes each text's length and its first character's code.
  const at::Tensor ehs = Get(state, "encoder_hidden_states");
  ASSERT_EQ(ehs.sizes(), (std::vector<int64_t>{2, 4, 3}));
  EXPECT_EQ(ehs[0][0][0].item<float>(), 2);
  EXPECT_EQ(ehs[1][0][1].item<float>(), 'x');
  EXPECT_EQ(Get(state, "text_embeds")[1][0].item<float>(), 3.5);
  // The negative prompt "" (diffusers' default): one row for the batch.
  EXPECT_TRUE(at::equal(Get(state, "negative_encoder_hidden_states"),
                        at::zeros({1, 4, 3})));
  EXPECT_EQ(Get(state, "negative_text_embeds")[0][0].item<float>(), 0.5);
  // Two prompts make a batch of two.
  EXPECT_EQ(state.GetIntermediate("batch_size")->toInt(), 2);
}

TEST_F(EncodePromptTest, TheClientsTensorsTakePrecedence) {
  const at::Tensor mine = at::full({1, 4, 3}, 42.0);
  ASSERT_OK_AND_ASSIGN(PipelineState state,
                       Run({{"prompt", std::string("abc")},
                            {"negative_prompt", std::string("z")},
                            {"encoder_hidden_states", mine}}));
  EXPECT_TRUE(at::equal(Get(state, "encoder_hidden_states"), mine));
  EXPECT_EQ(Get(state, "text_embeds")[0][0].item<float>(), 3.5);
  EXPECT_EQ(Get(state, "negative_encoder_hidden_states")[0][0][1].item<float>(),
            'z');
}

TEST_F(EncodePromptTest, BadPromptsAreNamed) {
  c10::List<std::string> three({"a", "b", "c"});
  c10::List<std::string> two({"a", "b"});
  EXPECT_THAT(Run({{"prompt", three}, {"negative_prompt", two}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'negative_prompt' must be one text "
                                 "or one per prompt (3), got 2")));
  EXPECT_THAT(Run({{"prompt", three}, {"batch_size", int64_t{2}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'batch_size' (2) must be 1 or the "
                                 "number of prompts (3)")));
  EXPECT_THAT(Run({{"prompt", three}, {"num_images_per_prompt", int64_t{400}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'num_images_per_prompt' (400) × 3 "
                                 "prompts makes a batch of 1200; at most "
                                 "1024")));
  EXPECT_THAT(Run({{"prompt", std::string(20000, 'a')}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'prompt' has a text of 20000 bytes")));
}

TEST_F(EncodePromptTest, ImagesPerPromptRepeatEachPromptInPlace) {
  c10::List<std::string> prompts({"ab", "xyz"});
  ASSERT_OK_AND_ASSIGN(
      PipelineState state,
      Run({{"prompt", prompts}, {"num_images_per_prompt", int64_t{2}}}));
  // diffusers' order: [ab, ab, xyz, xyz].
  const at::Tensor ehs = Get(state, "encoder_hidden_states");
  ASSERT_EQ(ehs.size(0), 4);
  EXPECT_EQ(ehs[1][0][0].item<float>(), 2);
  EXPECT_EQ(ehs[2][0][0].item<float>(), 3);
  EXPECT_EQ(state.GetIntermediate("batch_size")->toInt(), 4);
  // One negative prompt serves every row.
  EXPECT_EQ(Get(state, "negative_encoder_hidden_states").size(0), 1);
}

TEST_F(EncodePromptTest, ForceZerosLeavesTheUnconditionalHalfToGuidance) {
  EncodePrompt zeros({.force_zeros_for_empty_prompt = true});
  ASSERT_OK(BindComponents(zeros, components_));
  PipelineState state;
  state.SetInput("prompt", std::string("ab"));
  RunContext context;
  ASSERT_OK(RunBlock(zeros, components_, state, context));
  // No negative prompt: none, which PredictNoise makes zeros (SDXL).
  const c10::IValue* negative =
      state.GetIntermediate("negative_encoder_hidden_states");
  EXPECT_TRUE(negative == nullptr || negative->isNone());
  // A negative prompt given, even "", is encoded.
  PipelineState given;
  given.SetInput("prompt", std::string("ab"));
  given.SetInput("negative_prompt", std::string(""));
  ASSERT_OK(RunBlock(zeros, components_, given, context));
  EXPECT_EQ(Get(given, "negative_text_embeds")[0][0].item<float>(), 0.5);
}

// ---- SDXL's micro-conditioning ----

absl::StatusOr<std::pair<at::Tensor, at::Tensor>> TimeIds(
    const AddTimeIds& block,
    const std::vector<std::pair<std::string, c10::IValue>>& inputs) {
  PipelineState state;
  state.SetIntermediate("latents", at::zeros({2, 4, 6, 5}));
  for (const auto& [name, value] : inputs) state.SetInput(name, value);
  RunContext context;
  Components components;
  RETURN_IF_ERROR(RunBlock(block, components, state, context));
  return std::pair{state.GetIntermediate("time_ids")->toTensor(),
                   state.GetIntermediate("negative_time_ids")->toTensor()};
}

MATCHER_P(IdsAre, values, "") {
  return at::equal(arg, at::tensor(values, at::kFloat).view({1, -1}));
}

TEST(AddTimeIdsTest, TheBasesIdsAsDiffusersComputesThem) {
  const AddTimeIds base({.vae_scale_factor = 8});
  // Sizes default to the latents' × 8: (48, 40).
  ASSERT_OK_AND_ASSIGN(auto ids, TimeIds(base, {}));
  EXPECT_THAT(ids.first, IdsAre(std::vector<float>{48, 40, 0, 0, 48, 40}));
  EXPECT_THAT(ids.second, IdsAre(std::vector<float>{48, 40, 0, 0, 48, 40}));
  const c10::List<int64_t> original({1024, 768});
  const c10::List<int64_t> crops({16, 8});
  // One negative size alone does not count (diffusers needs both).
  ASSERT_OK_AND_ASSIGN(ids, TimeIds(base, {{"original_size", original},
                                           {"crops_coords_top_left", crops},
                                           {"negative_original_size",
                                            c10::List<int64_t>({64, 64})}}));
  EXPECT_THAT(ids.first, IdsAre(std::vector<float>{1024, 768, 16, 8, 48, 40}));
  EXPECT_TRUE(at::equal(ids.first, ids.second));
  ASSERT_OK_AND_ASSIGN(
      ids,
      TimeIds(base,
              {{"negative_original_size", c10::List<int64_t>({64, 64})},
               {"negative_target_size", c10::List<double>({32.0, 16.0})}}));
  EXPECT_THAT(ids.second, IdsAre(std::vector<float>{64, 64, 0, 0, 32, 16}));
}

TEST(AddTimeIdsTest, TheRefinersAestheticScores) {
  const AddTimeIds refiner({.aesthetic_score = true, .vae_scale_factor = 8});
  ASSERT_OK_AND_ASSIGN(auto ids, TimeIds(refiner, {}));
  EXPECT_THAT(ids.first, IdsAre(std::vector<float>{48, 40, 0, 0, 6.0}));
  EXPECT_THAT(ids.second, IdsAre(std::vector<float>{48, 40, 0, 0, 2.5}));
  EXPECT_THAT(Names(refiner.signature().inputs),
              AllOf(::testing::Contains("aesthetic_score"),
                    Not(::testing::Contains("target_size"))));
}

TEST(AddTimeIdsTest, ABadSizeIsNamed) {
  const AddTimeIds base;
  EXPECT_THAT(TimeIds(base, {{"target_size", c10::List<int64_t>({1, 2, 3})}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'target_size' must be a list of two "
                                 "numbers")));
}

// ---- images ----

TEST(EncodeImageTest, PixelsBecomeLatentsThroughTheEncoder) {
  ASSERT_OK_AND_ASSIGN(auto vae,
                       TorchScriptEncoder::Load({.path = ModulePath("encoder"),
                                                 .scaling_factor = 0.5,
                                                 .moments = true}));
  Components components;
  ASSERT_OK(components.Add<ImageEncoder>("encoder", vae));
  EncodeImage block;
  PipelineState state;
  // UINT8 [B,H,W,3] -> [-1, 1] channels first -> the moments' mean × 0.5.
  const at::Tensor image = at::full({1, 4, 6, 3}, 255, at::kByte);
  state.SetInput("image", image);
  RunContext context;
  ASSERT_OK(RunBlock(block, components, state, context));
  const at::Tensor latents = state.GetIntermediate("image_latents")->toTensor();
  ASSERT_EQ(latents.sizes(), (std::vector<int64_t>{1, 4, 2, 3}));
  EXPECT_TRUE(at::allclose(latents, at::full({1, 4, 2, 3}, 0.5)));

  PipelineState bad;
  bad.SetInput("image", at::full({1, 3, 4, 4}, 2.0));
  EXPECT_THAT(RunBlock(block, components, bad, context),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'image' must hold values in [-1, 1]")));
  PipelineState both;
  both.SetInput("image", image);
  both.SetInput("image_latents", at::zeros({1, 4, 2, 3}));
  EXPECT_THAT(RunBlock(block, components, both, context),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("inputs 'image' and 'image_latents' both")));
}

TEST(EncodeImageTest, ASamplingEncoderGivesItsStandardDeviation) {
  EXPECT_THAT(
      TorchScriptEncoder::Load({.path = ModulePath("encoder"), .sample = true}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("param 'sample': needs moments: true")));
  ASSERT_OK_AND_ASSIGN(auto vae,
                       TorchScriptEncoder::Load({.path = ModulePath("encoder"),
                                                 .scaling_factor = 0.5,
                                                 .moments = true,
                                                 .sample = true}));
  Components components;
  ASSERT_OK(components.Add<ImageEncoder>("encoder", vae));
  EncodeImage block;
  PipelineState state;
  state.SetInput("image", at::full({1, 4, 6, 3}, 255, at::kByte));
  RunContext context;
  ASSERT_OK(RunBlock(block, components, state, context));
  // The module's log-variance is -30: std = exp(-15), × the scaling factor.
  const at::Tensor std = state.GetIntermediate("image_latents_std")->toTensor();
  EXPECT_TRUE(at::allclose(std, at::full({1, 4, 2, 3}, std::exp(-15.0) * 0.5)));
}

TEST(EncodeImageTest, IdentityEncoderMakesGreyPixelSpaceLatents) {
  IdentityEncoder grey(1);
  ASSERT_OK_AND_ASSIGN(
      ImageLatents latents,
      grey.Encode(at::stack({at::full({2, 2}, -1.0), at::zeros({2, 2}),
                             at::ones({2, 2})})
                      .unsqueeze(0)));
  EXPECT_TRUE(at::equal(latents.mean, at::zeros({1, 1, 2, 2})));
  EXPECT_FALSE(latents.std.defined());
  EXPECT_THAT(IdentityEncoder(4).Encode(at::zeros({1, 3, 2, 2})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'image' has 3 channels")));
}

}  // namespace
}  // namespace loopserve
