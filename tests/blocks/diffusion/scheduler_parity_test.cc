// loopserve's schedulers against diffusers' own (scheduler_reference.py
// runs them): for every scheduler and every option the reference lists, at
// 1, 2, 10, 25 and 50 steps, the timesteps, sigmas and init_noise_sigma, and
// the whole trajectory under a fixed analytic model (stochastic steps
// drawing from the run's generator after the initial noise), equal bit for
// bit but where Note [exact to diffusers] says why not. The reference file
// comes from the ctest fixture that runs the script (SCHEDULER_REFERENCE
// names it).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "blocks/builtin_blocks.h"
#include "blocks/core/composite.h"
#include "blocks/diffusion/denoisers.h"
#include "blocks/diffusion/diffusion_blocks.h"
#include "blocks/diffusion/scheduler_config.h"
#include "blocks/diffusion/schedulers.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

struct ReferenceCase {
  std::string name{};
  BlockParams params{};
  std::string type{};
  int64_t steps = 0;
  ScheduleRequest request{};
  std::vector<double> timesteps{}, sigmas{}, unit_noise{}, final{}, denoised{};
  // Image-to-image cases: the image's latents and the strength.
  std::vector<double> image_latents{};
  std::optional<double> strength{};
  // Base + refiner cases: where the base stops and the refiner starts, and
  // the base's last latents.
  std::optional<double> split{};
  std::vector<double> base_final{};
  double init_noise_sigma = 0;
  double eta = 0;
  int64_t seed = 0;
};

c10::IValue ParseValue(const std::string& text) {
  int64_t i = 0;
  double d = 0;
  if (text == "true" || text == "false") return c10::IValue(text == "true");
  if (!text.empty() && text.front() == '[') {
    c10::impl::GenericList list(c10::AnyType::get());
    for (absl::string_view item : absl::StrSplit(
             text.substr(1, text.size() - 2), ',', absl::SkipEmpty())) {
      list.push_back(ParseValue(std::string(item)));
    }
    return c10::IValue(list);
  }
  if (absl::SimpleAtoi(text, &i)) return c10::IValue(i);
  if (absl::SimpleAtod(text, &d)) return c10::IValue(d);
  return c10::IValue(text);
}

std::vector<double> ParseNumbers(const std::vector<std::string>& words) {
  std::vector<double> out;
  for (size_t i = 1; i < words.size(); ++i) {
    double d = 0;
    EXPECT_TRUE(absl::SimpleAtod(words[i], &d)) << words[i];
    out.push_back(d);
  }
  return out;
}

std::vector<ReferenceCase> LoadReference() {
  const char* path = std::getenv("SCHEDULER_REFERENCE");
  EXPECT_NE(path, nullptr) << "SCHEDULER_REFERENCE is not set";
  std::vector<ReferenceCase> cases;
  if (path == nullptr) return cases;
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::string line;
  ReferenceCase current;
  while (std::getline(in, line)) {
    std::vector<std::string> w = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (w.empty()) continue;
    const std::string& key = w[0];
    if (key == "case") {
      current = ReferenceCase{.name = w[1]};
    } else if (key == "config") {
      for (size_t i = 1; i < w.size(); ++i) {
        std::pair<std::string, std::string> kv = absl::StrSplit(w[i], '=');
        if (kv.first == "type") {
          current.type = kv.second;
        } else {
          current.params[kv.first] = ParseValue(kv.second);
        }
      }
    } else if (key == "request") {
      for (size_t i = 1; i < w.size(); ++i) {
        std::pair<std::string, std::string> kv = absl::StrSplit(w[i], '=');
        if (kv.first == "steps") {
          current.steps = std::stoll(kv.second);
          current.request.num_inference_steps = current.steps;
        } else if (kv.first == "strength") {
          current.strength = std::stod(kv.second);
        } else if (kv.first == "split") {
          current.split = std::stod(kv.second);
        } else if (kv.first == "mu") {
          current.request.mu = std::stod(kv.second);
        } else if (kv.first == "image_seq_len") {
          current.request.image_seq_len = std::stoll(kv.second);
        } else if (kv.first == "sigmas") {
          for (absl::string_view v : absl::StrSplit(kv.second, ',')) {
            current.request.sigmas.push_back(std::stod(std::string(v)));
          }
        }
      }
    } else if (key == "timesteps") {
      current.timesteps = ParseNumbers(w);
    } else if (key == "sigmas") {
      current.sigmas = ParseNumbers(w);
    } else if (key == "init_noise_sigma") {
      current.init_noise_sigma = ParseNumbers(w)[0];
    } else if (key == "eta") {
      current.eta = ParseNumbers(w)[0];
    } else if (key == "seed") {
      current.seed = std::stoll(w[1]);
    } else if (key == "unit_noise") {
      current.unit_noise = ParseNumbers(w);
    } else if (key == "image_latents") {
      current.image_latents = ParseNumbers(w);
    } else if (key == "base_final") {
      current.base_final = ParseNumbers(w);
    } else if (key == "final") {
      current.final = ParseNumbers(w);
    } else if (key == "denoised") {
      current.denoised = ParseNumbers(w);
    } else if (key == "end") {
      cases.push_back(current);
    }
  }
  return cases;
}

std::shared_ptr<const Scheduler> MakeScheduler(const ReferenceCase& c) {
  ComponentRegistry registry;
  EXPECT_OK(RegisterBuiltinComponents(registry));
  Components loaded;
  EXPECT_OK(registry.Create(c.type, "scheduler", c.params, {}, loaded));
  auto scheduler = loaded.Get<Scheduler>("scheduler");
  EXPECT_OK(scheduler.status());
  // Keep the component alive past `loaded`: share it through a Components
  // copy held by the deleter.
  return std::shared_ptr<const Scheduler>(
      *scheduler, [keep = std::move(loaded)](const Scheduler*) {});
}

// Note [exact to diffusers]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// loopserve's schedulers compute what diffusers computes, in the same order
// and through the same libtorch kernels (Note [scalars as diffusers computes
// them]), so their trajectories are diffusers' bit for bit. The one
// exception: Euler with Karras sigmas maps each sigma back to a timestep
// through numpy's float32 log (EulerDiscreteScheduler._sigma_to_t), which is
// numpy's own vectorised implementation, rounding unlike libm's and
// libtorch's in the last bit; those cases are held to 1e-6 of the tensor's
// scale instead.
double Tolerance(const ReferenceCase& c) {
  const auto karras = c.params.find("use_karras_sigmas");
  const bool numpy_float32_log =
      c.type == "euler_scheduler" && karras != c.params.end() &&
      karras->second.isBool() && karras->second.toBool();
  return numpy_float32_log ? 1e-6 : 0;
}

// The largest error ExpectClose saw, relative to the tensor's largest
// |expected|: printed at the end, for the record.
double worst_relative_error = 0;

// |actual - expected| <= tolerance · scale elementwise, `scale` the largest
// |expected|; a tolerance of 0 asks for equality.
void ExpectClose(const at::Tensor& actual, const std::vector<double>& expected,
                 double tolerance, const std::string& what) {
  const at::Tensor a = actual.to(at::kDouble).flatten().contiguous();
  ASSERT_EQ(a.numel(), static_cast<int64_t>(expected.size())) << what;
  double scale = 0;
  for (double e : expected) scale = std::max(scale, std::abs(e));
  int bad = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double got = a.data_ptr<double>()[i];
    if (scale > 0) {
      worst_relative_error =
          std::max(worst_relative_error, std::abs(got - expected[i]) / scale);
    }
    if (std::abs(got - expected[i]) > tolerance * scale && ++bad <= 3) {
      ADD_FAILURE() << what << "[" << i << "]: " << got << " vs " << expected[i]
                    << " (tolerance " << tolerance << " of the scale " << scale
                    << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

class SchedulerParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cases_ = new std::vector(LoadReference()); }
  static size_t ImageToImageCases() {
    return std::count_if(
        cases_->begin(), cases_->end(),
        [](const ReferenceCase& c) { return c.strength.has_value(); });
  }
  static size_t SplitCases() {
    return std::count_if(
        cases_->begin(), cases_->end(),
        [](const ReferenceCase& c) { return c.split.has_value(); });
  }
  static std::vector<ReferenceCase>* cases_;
};
std::vector<ReferenceCase>* SchedulerParityTest::cases_ = nullptr;

// Every scheduler loopserve serves is in the reference, each at every step
// count, with a trajectory.
TEST_F(SchedulerParityTest, ReferenceHasEveryScheduler) {
  std::map<std::string, std::set<int64_t>> steps_by_type;
  for (const ReferenceCase& c : *cases_) {
    EXPECT_FALSE(c.final.empty()) << c.name;
    steps_by_type[c.type].insert(c.steps);
  }
  for (const SchedulerType& type : SchedulerTypes()) {
    EXPECT_THAT(steps_by_type[std::string(type.type_name)],
                ::testing::ElementsAre(1, 2, 10, 25, 50))
        << type.type_name;
  }
  EXPECT_GE(cases_->size(), 250u);
}

TEST_F(SchedulerParityTest, TimestepsSigmasAndInitNoiseSigma) {
  for (const ReferenceCase& c : *cases_) {
    SCOPED_TRACE(c.name);
    auto scheduler = MakeScheduler(c);
    ASSERT_NE(scheduler, nullptr);
    ASSERT_OK_AND_ASSIGN(Schedule schedule, scheduler->SetTimesteps(c.request));
    const at::Tensor t = schedule.timesteps.to(at::kDouble);
    ASSERT_EQ(t.numel(), static_cast<int64_t>(c.timesteps.size()));
    if (!at::isFloatingType(schedule.timesteps.scalar_type())) {
      // Integer timesteps: exact.
      for (size_t i = 0; i < c.timesteps.size(); ++i) {
        EXPECT_EQ(t[i].item<double>(), c.timesteps[i]) << "timestep " << i;
      }
    } else {
      ExpectClose(schedule.timesteps, c.timesteps, Tolerance(c), "timesteps");
    }
    ExpectClose(schedule.sigmas, c.sigmas, Tolerance(c), "sigmas");
    EXPECT_EQ(schedule.init_noise_sigma, c.init_noise_sigma);
  }
}

at::Tensor Model(const at::Tensor& x, const at::Tensor& t) {
  return at::sin(x) * 0.3 + t.to(at::kFloat) / 1000 * 0.1;
}

// Prints how many trajectories are equal bit for bit, and which are not
// (Note [exact to diffusers]).
TEST_F(SchedulerParityTest, Trajectories) {
  int exact = 0;
  std::vector<std::string> inexact;
  for (const ReferenceCase& c : *cases_) {
    // ImageToImageThroughTheBlocks, BaseAndRefinerThroughTheBlocks
    if (c.strength.has_value() || c.split.has_value()) continue;
    SCOPED_TRACE(c.name);
    auto scheduler = MakeScheduler(c);
    ASSERT_NE(scheduler, nullptr);
    ASSERT_OK_AND_ASSIGN(Schedule schedule, scheduler->SetTimesteps(c.request));
    at::Generator generator = at::detail::createCPUGenerator(c.seed);
    const at::Tensor unit = at::randn({1, 4, 8, 8}, generator);
    // The same seed draws the same noise as Python's torch.Generator.
    ExpectClose(unit, c.unit_noise, 0, "unit noise");
    at::Tensor x = unit * schedule.init_noise_sigma;
    at::Tensor denoised;
    for (int64_t i = 0; i < schedule.size(); ++i) {
      const at::Tensor input = scheduler->ScaleModelInput(schedule, x, i);
      const at::Tensor eps = Model(input, schedule.timesteps[i]);
      ASSERT_OK_AND_ASSIGN(
          StepResult step,
          scheduler->Step(schedule, eps, i, x,
                          {.eta = c.eta, .generator = &generator}));
      x = step.prev_sample;
      denoised = step.pred_original_sample;
    }
    const double before = worst_relative_error;
    worst_relative_error = 0;
    ExpectClose(x, c.final, Tolerance(c), "final latents");
    ExpectClose(denoised, c.denoised, Tolerance(c), "final denoised");
    if (worst_relative_error == 0) {
      ++exact;
    } else {
      inexact.push_back(c.name);
    }
    worst_relative_error = std::max(before, worst_relative_error);
  }
  std::cout << "trajectories equal to the reference bit for bit: " << exact
            << " of " << cases_->size() - ImageToImageCases() - SplitCases()
            << "; largest error relative to the tensor's scale: "
            << worst_relative_error << "\n";
  if (!inexact.empty()) {
    std::cout << "not bit for bit: " << absl::StrJoin(inexact, " ") << "\n";
  }
}

// The reference's model as a Denoiser, one timestep for the batch.
class ReferenceModel final : public Denoiser {
 public:
  absl::string_view type_name() const override { return "reference"; }
  absl::StatusOr<at::Tensor> Predict(
      const at::Tensor& sample, const at::Tensor& timestep,
      std::span<const at::Tensor>) const override {
    return Model(sample, timestep[0]);
  }
};

// set_timesteps, prepare_latents, denoise{scale, predict, step}: a
// text-to-image pipeline, which image_latents and strength make an
// image-to-image one.
absl::StatusOr<std::unique_ptr<Block>> DenoisingPipeline() {
  std::vector<SubBlock> steps;
  steps.push_back({"before_denoiser", std::make_unique<ScaleModelInput>()});
  steps.push_back({"denoiser", std::make_unique<PredictNoise>()});
  steps.push_back({"after_denoiser", std::make_unique<SchedulerStep>()});
  auto loop = std::make_unique<DenoiseLoop>();
  RETURN_IF_ERROR(loop->SetSubBlocks(std::move(steps)));
  std::vector<SubBlock> blocks;
  blocks.push_back({"set_timesteps", std::make_unique<SetTimesteps>()});
  blocks.push_back({"prepare_latents",
                    std::make_unique<PrepareLatents>(PrepareLatents::Options{
                        .channels = 4, .height = 8, .width = 8})});
  blocks.push_back({"denoise", std::move(loop)});
  auto root = std::make_unique<SequentialBlocks>();
  RETURN_IF_ERROR(root->SetSubBlocks(std::move(blocks)));
  return root;
}

// DenoisingPipeline with the case's scheduler and the reference's model;
// Run() runs it on one state's inputs.
struct ReferencePipeline {
  Components components;
  std::unique_ptr<Block> root;

  static absl::StatusOr<ReferencePipeline> For(const ReferenceCase& c) {
    ReferencePipeline pipeline;
    RETURN_IF_ERROR(
        pipeline.components.Add<Scheduler>("scheduler", MakeScheduler(c)));
    RETURN_IF_ERROR(pipeline.components.Add<Denoiser>(
        "denoiser", std::make_shared<const ReferenceModel>()));
    ASSIGN_OR_RETURN(pipeline.root, DenoisingPipeline());
    RETURN_IF_ERROR(BindComponents(*pipeline.root, pipeline.components));
    return pipeline;
  }

  absl::StatusOr<PipelineState> Run(
      const std::map<std::string, c10::IValue>& inputs) const {
    PipelineState state;
    for (const auto& [name, value] : inputs) state.SetInput(name, value);
    RunContext context;
    RETURN_IF_ERROR(RunBlock(*root, components, state, context));
    return state;
  }
};

// Image-to-image through loopserve's own blocks (SetTimesteps' strength,
// PrepareLatents' add_noise from the run's generator, the steps from the
// begin index) against the reference's img2img pipeline, for DDIM, Euler,
// Euler a, DPM++ (2M, Karras, 3M), UniPC and LCM.
TEST_F(SchedulerParityTest, ImageToImageThroughTheBlocks) {
  ASSERT_GE(ImageToImageCases(), 16u);
  int exact = 0;
  for (const ReferenceCase& c : *cases_) {
    if (!c.strength.has_value()) continue;
    SCOPED_TRACE(c.name);
    ASSERT_OK_AND_ASSIGN(const ReferencePipeline pipeline,
                         ReferencePipeline::For(c));
    ASSERT_OK_AND_ASSIGN(
        const PipelineState state,
        pipeline.Run({{"num_inference_steps", c.steps},
                      {"strength", *c.strength},
                      {"seed", c.seed},
                      {"image_latents", at::tensor(c.image_latents)
                                            .to(at::kFloat)
                                            .reshape({1, 4, 8, 8})}}));
    const double before = worst_relative_error;
    worst_relative_error = 0;
    ExpectClose(state.GetIntermediate("latents")->toTensor(), c.final,
                Tolerance(c), "final latents");
    ExpectClose(state.GetIntermediate("denoised")->toTensor(), c.denoised,
                Tolerance(c), "final denoised");
    exact += worst_relative_error == 0;
    worst_relative_error = std::max(before, worst_relative_error);
  }
  std::cout << "image-to-image runs equal to the reference bit for bit: "
            << exact << " of " << ImageToImageCases() << "\n";
}

// SDXL's base + refiner through loopserve's blocks: a base run with
// denoising_end hands its latents to a refiner run with denoising_start and
// image_latents, against diffusers' split (StableDiffusionXLPipeline's
// cutoff, StableDiffusionXLImg2ImgPipeline.get_timesteps) of the same
// schedulers: both runs' latents, bit for bit.
TEST_F(SchedulerParityTest, BaseAndRefinerThroughTheBlocks) {
  ASSERT_GE(SplitCases(), 10u);
  for (const ReferenceCase& c : *cases_) {
    if (!c.split.has_value()) continue;
    SCOPED_TRACE(c.name);
    ASSERT_OK_AND_ASSIGN(const ReferencePipeline pipeline,
                         ReferencePipeline::For(c));
    ASSERT_OK_AND_ASSIGN(const PipelineState base,
                         pipeline.Run({{"num_inference_steps", c.steps},
                                       {"seed", c.seed},
                                       {"denoising_end", *c.split}}));
    const at::Tensor handed_over = base.GetIntermediate("latents")->toTensor();
    ExpectClose(handed_over, c.base_final, Tolerance(c), "base latents");
    ASSERT_OK_AND_ASSIGN(const PipelineState refined,
                         pipeline.Run({{"num_inference_steps", c.steps},
                                       {"seed", c.seed},
                                       {"denoising_start", *c.split},
                                       {"image_latents", handed_over}}));
    ExpectClose(refined.GetIntermediate("latents")->toTensor(), c.final,
                Tolerance(c), "refined latents");
    ExpectClose(refined.GetIntermediate("denoised")->toTensor(), c.denoised,
                Tolerance(c), "refined denoised");
  }
}

}  // namespace
}  // namespace loopserve
