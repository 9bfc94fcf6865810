// The denoising pipelines of the embedded default configuration, run
// in-process: the Gaussian-mixture oracle under DDIM and Euler, seeds and
// given latents, bad inputs, classifier-free guidance, and the shipped digits
// model judged by its classifier.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "app/default_pipelines.h"
#include "blocks/builtin_blocks.h"
#include "blocks/core/run_scope.h"
#include "blocks/diffusion/decoders.h"
#include "blocks/diffusion/denoisers.h"
#include "blocks/diffusion/diffusion_blocks.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::StatusIs;
using ::testing::HasSubstr;

using Inputs = std::map<std::string, c10::IValue>;

class DenoisingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_OK_AND_ASSIGN(PipelineCatalog catalog,
                         LoadDefaultPipelines(c10::kCPU));
    catalog_ = new PipelineCatalog(std::move(catalog));
    ASSERT_OK_AND_ASSIGN(
        PipelineCatalog batched,
        LoadDefaultPipelines(c10::kCPU, {.max_batch_size = 16,
                                         .window = std::chrono::seconds(5)}));
    batched_ = new PipelineCatalog(std::move(batched));
  }

  // Runs pipeline `name` on `inputs`; the final state. On `catalog`, when
  // given (batched_: concurrent runs share the denoiser's calls).
  static absl::StatusOr<PipelineState> Run(
      const std::string& name, const Inputs& inputs,
      const PipelineCatalog* catalog = nullptr) {
    const Pipeline* pipeline = (catalog ? catalog : catalog_)->Find(name);
    if (pipeline == nullptr) return absl::NotFoundError(name);
    PipelineState state;
    for (const auto& [key, value] : inputs) state.SetInput(key, value);
    RunContext context{.device = c10::kCPU};
    RETURN_IF_ERROR(
        RunBlock(*pipeline->root, pipeline->components, state, context));
    return state;
  }

  static at::Tensor Latents(const PipelineState& state) {
    return state.GetIntermediate("latents")->toTensor();
  }

  static PipelineCatalog* catalog_;
  // Step-level batching on, one lane, a patient window.
  static PipelineCatalog* batched_;
};
PipelineCatalog* DenoisingTest::catalog_ = nullptr;
PipelineCatalog* DenoisingTest::batched_ = nullptr;

// The default configuration's mixture.
constexpr double kWeights[] = {0.3, 0.5, 0.2};
constexpr double kMeans[] = {-2.0, 0.5, 3.0};
constexpr double kStds[] = {0.3, 0.5, 0.4};

struct OracleCase {
  const char* pipeline;
  const char* scheduler;
  int64_t steps;
};

class GmmOracleTest : public DenoisingTest,
                      public ::testing::WithParamInterface<OracleCase> {};

// Each sampler of the default pipelines on [1,4,64,64] latents from 3 seeds,
// at the fewest of 25, 50, 100 steps where it holds: each sample is
// assigned to the mode most likely to have produced it; per mode, the mass
// is within 2 points of the weight, the mean within 0.05 and the std within
// 10 %. (On these narrow modes, a schedule whose last step leaves from
// t ≈ 40, σ ≈ 0.14 — DPM++ and UniPC with linspace spacing at 25 steps —
// ends on the posterior mean there, 12 % too narrow; Karras sigmas end at
// σ = 0.01 and hold at 25. LCM is not offered: it needs an LCM-distilled
// model, and on an exact denoiser its 4 steps put 81 % of the mass in the
// middle mode.)
TEST_P(GmmOracleTest, SamplesFollowTheMixture) {
  const OracleCase& c = GetParam();
  auto inputs = [&](int64_t seed) -> Inputs {
    return {{"seed", seed},
            {"scheduler", std::string(c.scheduler)},
            {"num_inference_steps", c.steps}};
  };
  std::vector<at::Tensor> samples;
  for (int64_t seed : {0, 1, 2}) {
    ASSERT_OK_AND_ASSIGN(PipelineState state, Run(c.pipeline, inputs(seed)));
    samples.push_back(Latents(state).flatten().to(at::kDouble));
  }
  // The three seeds again at once, sharing each denoiser call: the same
  // samples, bit for bit, so what follows holds with batching on.
  std::vector<absl::StatusOr<PipelineState>> batched(3);
  std::vector<std::thread> threads;
  for (int64_t seed : {0, 1, 2}) {
    threads.emplace_back([&, seed] {
      RunScope scope;
      batched[seed] = Run(c.pipeline, inputs(seed), batched_);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int64_t seed : {0, 1, 2}) {
    ASSERT_OK(batched[seed].status());
    EXPECT_TRUE(at::equal(Latents(*batched[seed]).flatten().to(at::kDouble),
                          samples[seed]))
        << "seed " << seed;
  }
  const at::Tensor x = at::cat(samples);
  std::vector<at::Tensor> log_p;
  for (int k = 0; k < 3; ++k) {
    log_p.push_back(std::log(kWeights[k]) - std::log(kStds[k]) -
                    (x - kMeans[k]).square() / (2 * kStds[k] * kStds[k]));
  }
  const at::Tensor mode = at::stack(log_p, 1).argmax(1);
  for (int k = 0; k < 3; ++k) {
    const at::Tensor in_mode = x.masked_select(mode == k);
    const double mass = static_cast<double>(in_mode.numel()) / x.numel();
    const double mean = in_mode.mean().item<double>();
    const double std = in_mode.std().item<double>();
    std::cout << c.pipeline << " " << c.scheduler << " " << c.steps
              << " steps, mode " << k << ": mass " << mass << " (want "
              << kWeights[k] << "), mean " << mean << " (" << kMeans[k]
              << "), std " << std << " (" << kStds[k] << ")\n";
    EXPECT_NEAR(mass, kWeights[k], 0.02) << "mode " << k;
    EXPECT_NEAR(mean, kMeans[k], 0.05) << "mode " << k;
    EXPECT_NEAR(std / kStds[k], 1.0, 0.10) << "mode " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Samplers, GmmOracleTest,
    ::testing::Values(OracleCase{"gmm-ddim", "ddim", 50},
                      OracleCase{"gmm-euler", "euler", 50},
                      OracleCase{"gmm-ddim", "euler-karras", 100},
                      OracleCase{"gmm-ddim", "euler-a", 100},
                      OracleCase{"gmm-ddim", "dpmpp-2m", 50},
                      OracleCase{"gmm-ddim", "dpmpp-2m-karras", 25},
                      OracleCase{"gmm-ddim", "dpmpp-2m-sde-karras", 50},
                      OracleCase{"gmm-ddim", "dpmpp-3m", 25},
                      OracleCase{"gmm-ddim", "unipc", 50},
                      OracleCase{"gmm-ddim", "unipc-3", 50},
                      OracleCase{"gmm-flow", "flow-euler", 50},
                      OracleCase{"gmm-flow", "flow-euler-dynamic", 28}),
    [](const ::testing::TestParamInfo<OracleCase>& info) {
      std::string name =
          absl::StrCat(info.param.pipeline, "_", info.param.scheduler, "_",
                       info.param.steps);
      for (char& ch : name) {
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return name;
    });

// A flow pipeline prepares its latents first; its schedule takes the run's
// `sigmas` (their count is the step count) and `mu`, or computes mu from
// the latents' size.
TEST_F(DenoisingTest, FlowTakesSigmasAndMu) {
  c10::impl::GenericList sigmas(c10::AnyType::get());
  for (double sigma : {1.0, 0.8, 0.6, 0.4, 0.2}) sigmas.push_back(sigma);
  const Inputs given = {{"seed", int64_t{3}},
                        {"scheduler", std::string("flow-euler-dynamic")},
                        {"sigmas", sigmas},
                        {"mu", 0.7}};
  ASSERT_OK_AND_ASSIGN(PipelineState a, Run("gmm-flow", given));
  const at::Tensor timesteps = a.GetIntermediate("timesteps")->toTensor();
  ASSERT_EQ(timesteps.numel(), 5);
  // σ' = e^mu / (e^mu + 1/σ − 1): σ = 1 stays 1, so t starts at 1000.
  EXPECT_FLOAT_EQ(timesteps[0].item<float>(), 1000.0f);
  const float e = std::exp(0.7f);
  EXPECT_FLOAT_EQ(timesteps[4].item<float>() / 1000, e / (e + 4.0f));

  Inputs other_mu = given;
  other_mu["mu"] = 1.2;
  ASSERT_OK_AND_ASSIGN(PipelineState b, Run("gmm-flow", other_mu));
  EXPECT_FALSE(at::equal(Latents(a), Latents(b)));
  // A double input takes an int, as the API says.
  other_mu["mu"] = int64_t{1};
  ASSERT_OK_AND_ASSIGN(PipelineState one, Run("gmm-flow", other_mu));
  other_mu["mu"] = 1.0;
  ASSERT_OK_AND_ASSIGN(PipelineState one_double, Run("gmm-flow", other_mu));
  EXPECT_TRUE(at::equal(Latents(one), Latents(one_double)));
  // Without mu, it follows from [64, 64] latents as diffusers'
  // calculate_shift has it for (64 / 2) · (64 / 2) tokens.
  Inputs computed = given;
  const double m = (1.15 - 0.5) / (4096 - 256);
  const double intercept = 0.5 - m * 256;
  computed["mu"] = 1024 * m + intercept;
  ASSERT_OK_AND_ASSIGN(PipelineState c, Run("gmm-flow", computed));
  computed.erase("mu");
  ASSERT_OK_AND_ASSIGN(PipelineState d, Run("gmm-flow", computed));
  EXPECT_TRUE(at::equal(Latents(c), Latents(d)));

  c10::impl::GenericList bad(c10::AnyType::get());
  bad.push_back(1.5);
  Inputs out_of_range = given;
  out_of_range["sigmas"] = bad;
  EXPECT_THAT(Run("gmm-flow", out_of_range).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'sigmas' must hold values in (0, 1], "
                                 "got 1.5")));
}

TEST_F(DenoisingTest, SameSeedSameLatentsOtherSeedOtherLatents) {
  for (const char* pipeline : {"gmm-ddim", "gmm-euler"}) {
    SCOPED_TRACE(pipeline);
    const Inputs inputs = {{"seed", int64_t{5}},
                           {"num_inference_steps", int64_t{10}}};
    ASSERT_OK_AND_ASSIGN(PipelineState a, Run(pipeline, inputs));
    ASSERT_OK_AND_ASSIGN(PipelineState b, Run(pipeline, inputs));
    ASSERT_OK_AND_ASSIGN(PipelineState c,
                         Run(pipeline, {{"seed", int64_t{6}},
                                        {"num_inference_steps", int64_t{10}}}));
    EXPECT_TRUE(at::equal(Latents(a), Latents(b)));
    EXPECT_FALSE(at::equal(Latents(a), Latents(c)));
    EXPECT_EQ(Latents(a).sizes(), (std::vector<int64_t>{1, 4, 64, 64}));
  }
}

// Given latents are unit noise, scaled by init_noise_sigma as diffusers
// does: the seed's own noise, given explicitly, gives the seeded run.
TEST_F(DenoisingTest, GivenLatentsAreTreatedAsUnitNoise) {
  at::Generator generator = at::detail::createCPUGenerator(9);
  const at::Tensor noise = at::randn({1, 4, 64, 64}, generator);
  for (const char* pipeline : {"gmm-ddim", "gmm-euler"}) {
    SCOPED_TRACE(pipeline);
    ASSERT_OK_AND_ASSIGN(PipelineState seeded,
                         Run(pipeline, {{"seed", int64_t{9}},
                                        {"num_inference_steps", int64_t{8}}}));
    ASSERT_OK_AND_ASSIGN(PipelineState given,
                         Run(pipeline, {{"latents", noise},
                                        {"num_inference_steps", int64_t{8}}}));
    EXPECT_TRUE(at::equal(Latents(seeded), Latents(given)));
  }
}

TEST_F(DenoisingTest, EtaDrawsFromTheRunsGenerator) {
  const Inputs noisy = {
      {"seed", int64_t{4}}, {"eta", 1.0}, {"num_inference_steps", int64_t{10}}};
  ASSERT_OK_AND_ASSIGN(PipelineState a, Run("gmm-ddim", noisy));
  ASSERT_OK_AND_ASSIGN(PipelineState b, Run("gmm-ddim", noisy));
  ASSERT_OK_AND_ASSIGN(PipelineState deterministic,
                       Run("gmm-ddim", {{"seed", int64_t{4}},
                                        {"num_inference_steps", int64_t{10}}}));
  EXPECT_TRUE(at::equal(Latents(a), Latents(b)));
  EXPECT_FALSE(at::equal(Latents(a), Latents(deterministic)));
}

TEST_F(DenoisingTest, BadInputsAreNamed) {
  EXPECT_THAT(Run("gmm-ddim", {{"latents", at::zeros({1, 3, 64, 64})}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'latents' must be a floating-point "
                                 "[B,4,H,W] tensor, got Float [1,3,64,64]")));
  EXPECT_THAT(
      Run("gmm-ddim", {{"latents", at::zeros({1, 4, 8, 8}, at::kLong)}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("input 'latents' must be a floating-point")));
  EXPECT_THAT(Run("gmm-ddim", {{"num_inference_steps", int64_t{0}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'num_inference_steps' must be in "
                                 "[1, 1000]")));
  EXPECT_THAT(
      Run("gmm-euler", {{"num_inference_steps", int64_t{1001}}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got 1001")));
  EXPECT_THAT(Run("gmm-ddim", {{"height", int64_t{0}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'height' must be in [1, ")));
  EXPECT_THAT(Run("gmm-ddim", {{"eta", -1.0}, {"seed", int64_t{1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'eta' must be >= 0")));
}

TEST_F(DenoisingTest, OutputsAreLatentsAndPreviewOrImage) {
  ASSERT_OK_AND_ASSIGN(PipelineState gmm,
                       Run("gmm-ddim", {{"seed", int64_t{1}},
                                        {"num_inference_steps", int64_t{4}},
                                        {"batch_size", int64_t{2}}}));
  const at::Tensor preview = gmm.GetIntermediate("preview")->toTensor();
  EXPECT_EQ(preview.scalar_type(), at::kByte);
  EXPECT_EQ(preview.sizes(), (std::vector<int64_t>{2, 64, 64, 3}));

  const Pipeline* digits = catalog_->Find("digits-ddim");
  ASSERT_NE(digits, nullptr);
  std::vector<std::string> outputs;
  for (const OutputParam& p : digits->outputs) outputs.push_back(p.name);
  EXPECT_THAT(outputs, ::testing::ElementsAre("latents", "denoised", "image"));
  ASSERT_OK_AND_ASSIGN(
      PipelineState state,
      Run("digits-ddim",
          {{"seed", int64_t{1}}, {"num_inference_steps", int64_t{5}}}));
  const at::Tensor image = state.GetIntermediate("image")->toTensor();
  EXPECT_EQ(image.scalar_type(), at::kByte);
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{1, 64, 64, 3}));
}

// The shipped model makes digits unguided, with the empty prompt (the null
// conditioning), under its own DDIM and under the samplers people pick, at
// their usual step counts: its classifier (trained by the same script on
// real digits) is confident (>= 0.8) on at least 60 % of 64 samples, and
// on far fewer noise images. (Trained with the label dropped for a fifth
// of its samples, the model is surer of a digit it is asked for:
// DigitsTextDrawsThePromptedDigit.)
TEST_F(DenoisingTest, DigitsModelMakesDigits) {
  torch::jit::Module classifier = torch::jit::load(
      absl::StrCat(DefaultModelDir(), "/digits/classifier.pt"));
  classifier.eval();
  auto confident = [&](const at::Tensor& images) {
    c10::InferenceMode guard;
    const at::Tensor p =
        at::softmax(classifier.forward({images.clamp(-1, 1)}).toTensor(), 1);
    return (std::get<0>(p.max(1)) >= 0.8).to(at::kFloat).mean().item<double>();
  };
  at::Generator generator = at::detail::createCPUGenerator(7);
  const double on_noise = confident(at::randn({64, 1, 8, 8}, generator));
  for (const auto& [sampler, steps] :
       std::vector<std::pair<std::string, int64_t>>{{"digits-ddim", 50},
                                                    {"dpmpp-2m-karras", 25},
                                                    {"dpmpp-2m-sde-karras", 25},
                                                    {"unipc", 25},
                                                    {"euler-a", 50}}) {
    SCOPED_TRACE(sampler);
    ASSERT_OK_AND_ASSIGN(PipelineState state,
                         Run("digits-ddim", {{"seed", int64_t{7}},
                                             {"scheduler", sampler},
                                             {"num_inference_steps", steps},
                                             {"batch_size", int64_t{64}}}));
    const at::Tensor samples = Latents(state);
    ASSERT_EQ(samples.sizes(), (std::vector<int64_t>{64, 1, 8, 8}));
    const double on_samples = confident(samples);
    std::cout << sampler << " (" << steps << " steps): confident on samples "
              << on_samples << ", on noise " << on_noise << "\n";
    EXPECT_GE(on_samples, 0.6);
    EXPECT_LE(on_noise, on_samples - 0.4);
  }
}

// digits-text draws the digit its prompt names: 20 seeds × the ten digits
// (each run prompts "a handwritten zero" ... "a handwritten nine", a batch
// of ten), judged by the shipped classifier. Prints the share at guidance
// 1, 2, 3 (the pipeline's default) and 5: MODEL_CARD.md's table.
TEST_F(DenoisingTest, DigitsTextDrawsThePromptedDigit) {
  torch::jit::Module classifier = torch::jit::load(
      absl::StrCat(DefaultModelDir(), "/digits/classifier.pt"));
  classifier.eval();
  const char* words[] = {"zero", "one", "two",   "three", "four",
                         "five", "six", "seven", "eight", "nine"};
  c10::List<std::string> prompts;
  for (const char* word : words) {
    prompts.push_back(absl::StrCat("a handwritten ", word));
  }
  const at::Tensor wanted = at::arange(10);
  for (double scale : {1.0, 2.0, 3.0, 5.0}) {
    int64_t hits = 0;
    for (int64_t seed = 0; seed < 20; ++seed) {
      Inputs inputs = {{"prompt", prompts}, {"seed", seed}};
      if (scale != 3.0) inputs["guidance_scale"] = scale;
      ASSERT_OK_AND_ASSIGN(PipelineState state, Run("digits-text", inputs));
      const at::Tensor samples = Latents(state);
      ASSERT_EQ(samples.sizes(), (std::vector<int64_t>{10, 1, 8, 8}));
      c10::InferenceMode guard;
      const at::Tensor label =
          classifier.forward({samples.clamp(-1, 1)}).toTensor().argmax(1);
      hits += (label == wanted).sum().item<int64_t>();
    }
    const double share = static_cast<double>(hits) / 200;
    std::cout << "digits-text, guidance " << scale << ": " << hits
              << " of 200 samples are the prompted digit (" << share * 100
              << " %)\n";
    if (scale == 3.0) {
      EXPECT_GE(share, 0.9);
    }
  }
}

// SDXL's base + refiner split: a base run stops at denoising_end and
// returns its latents; a refiner run continues from them (image_latents,
// denoising_start). For DDIM and Euler the two are the single run bit for
// bit. (Multistep samplers start the refiner without the base's history,
// as diffusers' do.)
TEST_F(DenoisingTest, BaseAndRefinerSplitIsTheSingleRun) {
  for (const std::string sampler : {"ddim", "euler"}) {
    SCOPED_TRACE(sampler);
    const Inputs common = {{"seed", int64_t{5}},
                           {"scheduler", sampler},
                           {"num_inference_steps", int64_t{30}}};
    ASSERT_OK_AND_ASSIGN(PipelineState single, Run("gmm-ddim", common));
    Inputs base_inputs = common;
    base_inputs["denoising_end"] = 0.7;
    ASSERT_OK_AND_ASSIGN(PipelineState base, Run("gmm-ddim", base_inputs));
    EXPECT_FALSE(at::equal(Latents(base), Latents(single)));
    Inputs refiner_inputs = common;
    refiner_inputs["denoising_start"] = 0.7;
    refiner_inputs["image_latents"] = Latents(base);
    ASSERT_OK_AND_ASSIGN(PipelineState refined,
                         Run("gmm-ddim", refiner_inputs));
    EXPECT_TRUE(at::equal(Latents(refined), Latents(single)));
  }
}

TEST_F(DenoisingTest, ImageToImageInputsAreChecked) {
  const at::Tensor image = at::zeros({1, 4, 64, 64});
  EXPECT_THAT(Run("gmm-ddim", {{"strength", 0.5}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'strength' needs an image to start "
                                 "from")));
  EXPECT_THAT(Run("gmm-ddim", {{"image_latents", image}, {"strength", 1.5}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'strength' must be in (0, 1], got "
                                 "1.5")));
  EXPECT_THAT(Run("gmm-ddim", {{"image_latents", image},
                               {"strength", 0.01},
                               {"num_inference_steps", int64_t{10}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("leave no steps of 10")));
  EXPECT_THAT(
      Run("gmm-ddim", {{"image_latents", image},
                       {"denoising_start", 0.5},
                       {"strength", 0.5}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("give one")));
  EXPECT_THAT(Run("gmm-ddim", {{"image_latents", at::zeros({1, 3, 8, 8})}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'image_latents' must be a "
                                 "floating-point [B,4,H,W] tensor")));
  EXPECT_THAT(Run("gmm-flow", {{"image_latents", image}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("prepares its latents before its "
                                 "timesteps")));
  // strength 0.5 of 10 steps: the last 5, from the image noised to t=400.
  ASSERT_OK_AND_ASSIGN(PipelineState state,
                       Run("gmm-ddim", {{"image_latents", image},
                                        {"strength", 0.5},
                                        {"seed", int64_t{1}},
                                        {"num_inference_steps", int64_t{10}}}));
  const at::Tensor timesteps = state.GetIntermediate("timesteps")->toTensor();
  EXPECT_TRUE(
      at::equal(timesteps, at::tensor({400, 300, 200, 100, 0}, at::kLong)));
}

// ---- classifier-free guidance (PredictNoise) ----

class GuidanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("TEST_MODULES");
    ASSERT_NE(dir, nullptr) << "TEST_MODULES is not set";
    ASSERT_OK_AND_ASSIGN(
        denoiser_,
        TorchScriptDenoiser::Load(
            {.path = absl::StrCat(dir, "/cond_denoiser.pt"),
             .arguments = {"sample", "timestep", "encoder_hidden_states"}}));
    ASSERT_OK(components_.Add<Denoiser>("denoiser", denoiser_));
    ASSERT_OK(BindComponents(block_, components_));
  }

  // The denoiser called directly, with `cond`, at t_ for each row.
  absl::StatusOr<at::Tensor> Predict(const Denoiser& denoiser,
                                     const at::Tensor& cond) {
    return denoiser.Predict(x_, t_.expand({x_.size(0)}),
                            std::vector<at::Tensor>{cond});
  }

  absl::StatusOr<at::Tensor> Step(double scale, const at::Tensor& cond,
                                  const at::Tensor& negative = {}) {
    BlockState state;
    state.Set("latent_model_input", x_);
    state.Set("guidance_scale", scale);
    state.Set("encoder_hidden_states", cond);
    if (negative.defined()) {
      state.Set("negative_encoder_hidden_states", negative);
    }
    RETURN_IF_ERROR(block_.RunStep(components_, state, {.i = 0, .t = t_}));
    return state.Find("noise_pred")->toTensor();
  }

  std::shared_ptr<const Denoiser> denoiser_;
  Components components_;
  PredictNoise block_;
  const at::Tensor x_ =
      at::linspace(-2, 2, 2 * 4 * 8 * 8).reshape({2, 4, 8, 8});
  const at::Tensor t_ = at::scalar_tensor(500, at::kLong);
  const at::Tensor cond_ = at::linspace(0, 1, 2 * 3 * 5).reshape({2, 3, 5});
};

TEST_F(GuidanceTest, ScaleOneIsTheUnguidedPath) {
  ASSERT_OK_AND_ASSIGN(at::Tensor guided, Step(1.0, cond_));
  ASSERT_OK_AND_ASSIGN(at::Tensor plain, Predict(*denoiser_, cond_));
  EXPECT_TRUE(at::equal(guided, plain));
}

TEST_F(GuidanceTest, ScaleAboveOneMixesUncondAndCond) {
  ASSERT_OK_AND_ASSIGN(at::Tensor guided, Step(4.0, cond_));
  ASSERT_OK_AND_ASSIGN(at::Tensor cond, Predict(*denoiser_, cond_));
  ASSERT_OK_AND_ASSIGN(at::Tensor uncond,
                       Predict(*denoiser_, at::zeros_like(cond_)));
  EXPECT_TRUE(at::allclose(guided, uncond + 4.0 * (cond - uncond), 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(guided, cond));

  const at::Tensor negative = at::full_like(cond_, 0.5);
  ASSERT_OK_AND_ASSIGN(at::Tensor with_negative, Step(4.0, cond_, negative));
  ASSERT_OK_AND_ASSIGN(at::Tensor neg, Predict(*denoiser_, negative));
  EXPECT_TRUE(
      at::allclose(with_negative, neg + 4.0 * (cond - neg), 1e-5, 1e-6));
}

TEST_F(GuidanceTest, MismatchedNegativeIsNamed) {
  EXPECT_THAT(Step(4.0, cond_, at::zeros({2, 3, 4})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'negative_encoder_hidden_states' must "
                                 "have the shape of 'encoder_hidden_states'")));
  // A batch that is neither 1 nor the latents'.
  EXPECT_THAT(Step(4.0, at::zeros({3, 3, 5})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'encoder_hidden_states' must be "
                                 "[B,...] with B = 1 or 2, got Float "
                                 "[3,3,5]")));
}

// ---- TorchScript modules: dtype, decoding ----

TEST_F(GuidanceTest, ReducedPrecisionDenoiserStaysClose) {
  ASSERT_OK_AND_ASSIGN(
      auto bf16,
      TorchScriptDenoiser::Load(
          {.path =
               absl::StrCat(std::getenv("TEST_MODULES"), "/cond_denoiser.pt"),
           .dtype = at::kBFloat16,
           .arguments = {"sample", "timestep", "encoder_hidden_states"}}));
  ASSERT_OK_AND_ASSIGN(at::Tensor low, Predict(*bf16, cond_));
  ASSERT_OK_AND_ASSIGN(at::Tensor full, Predict(*denoiser_, cond_));
  EXPECT_EQ(low.scalar_type(), at::kFloat);  // the sample's dtype
  EXPECT_TRUE(at::allclose(low, full, 2e-2, 2e-2));
  EXPECT_FALSE(at::equal(low, full));
}

TEST_F(GuidanceTest, DecodeTurnsLatentsIntoUint8Images) {
  ASSERT_OK_AND_ASSIGN(
      std::shared_ptr<const TorchScriptDecoder> decoder,
      TorchScriptDecoder::Load(
          {.path = absl::StrCat(std::getenv("TEST_MODULES"), "/decoder.pt"),
           .scaling_factor = 2.0}));
  Components components;
  ASSERT_OK(components.Add<ImageDecoder>("decoder", decoder));
  PipelineState state;
  const at::Tensor latents =
      at::linspace(-3, 3, 2 * 4 * 5 * 6).reshape({2, 4, 5, 6});
  state.SetIntermediate("latents", latents);
  Decode block;
  RunContext context;
  ASSERT_OK(RunBlock(block, components, state, context));
  const at::Tensor image = state.GetIntermediate("image")->toTensor();
  EXPECT_EQ(image.scalar_type(), at::kByte);
  ASSERT_EQ(image.sizes(), (std::vector<int64_t>{2, 10, 12, 3}));
  // [-1, 1] -> [0, 255], after dividing by the scaling factor.
  const at::Tensor expected =
      ((at::tanh(latents.slice(1, 0, 3) / 2.0) / 2 + 0.5) * 255)
          .round()
          .to(at::kByte)
          .permute({0, 2, 3, 1});
  EXPECT_TRUE(at::equal(image.slice(1, 0, 10, 2).slice(2, 0, 12, 2), expected));

  EXPECT_THAT(Decode().Run(Components(), state, context),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("component 'decoder' is not loaded")));
}

}  // namespace
}  // namespace loopserve
