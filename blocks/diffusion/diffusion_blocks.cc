#include "blocks/diffusion/diffusion_blocks.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/param_reader.h"
#include "blocks/core/status_macros.h"
#include "blocks/diffusion/denoisers.h"
#include "blocks/diffusion/scheduler_config.h"
#include "blocks/diffusion/schedulers.h"

namespace loopserve {
namespace {

constexpr int64_t kMaxLatentBytes = int64_t{1} << 30;

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ","), "]");
}

ComponentSpec SchedulerSpec() {
  std::vector<std::string> types;
  for (const SchedulerType& type : SchedulerTypes()) {
    types.emplace_back(type.type_name);
  }
  return {.name = std::string(kSchedulerRole),
          .type = absl::StrJoin(types, " | "),
          .description = "Turns the model's predictions into the next latents",
          .interface = ComponentInterface::Of<Scheduler>()};
}

// The run's scheduler (the one it picked) and its schedule, which the
// scheduler's steps update: per run, carried through the pipeline state.
class RunSchedule final : public torch::CustomClassHolder {
 public:
  RunSchedule(const Scheduler* scheduler, Schedule schedule)
      : scheduler(scheduler), schedule(std::move(schedule)) {}
  const Scheduler* const scheduler;
  Schedule schedule;
};

// The run's schedule, as SetTimesteps left it in the block state.
absl::StatusOr<RunSchedule*> RunScheduleFrom(const BlockState& state) {
  const c10::IValue* value = state.Find("schedule");
  if (value == nullptr || !value->isCapsule()) {
    return absl::FailedPreconditionError(
        "the run has no schedule: SetTimesteps must run first");
  }
  return static_cast<RunSchedule*>(value->toCapsule().get());
}

InputParam ScheduleInput(absl::string_view name) {
  return {.name = std::string(name),
          .type_hint = TypeHint::Any(),
          .required = true,
          .description = "The run's schedule and scheduler (SetTimesteps)"};
}

// A tensor that may be absent (None): undefined then.
at::Tensor OptionalTensor(const BlockState& state, absl::string_view name) {
  const c10::IValue* value = state.Find(name);
  return value != nullptr && value->isTensor() ? value->toTensor()
                                               : at::Tensor();
}

absl::Status CheckPositive(absl::string_view name, int64_t value,
                           int64_t max) {
  if (value < 1 || value > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", name, "' must be in [1, ", max, "], got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

// ---- SetTimesteps ----

std::string SetTimesteps::description() const {
  return "Sets the run's scheduler (the input 'scheduler', one of those bound "
         "to the role) and its timesteps for num_inference_steps steps";
}

std::vector<InputParam> SetTimesteps::inputs() const {
  std::vector<InputParam> inputs = {
      {.name = "num_inference_steps",
       .type_hint = TypeHint::Int(),
       .default_value = options_.default_steps,
       .description = "Denoising steps",
       .iteration_count = true},
      {.name = "scheduler",
       .type_hint = TypeHint::String(),
       .description = "The sampler: one of the components bound to the "
                      "pipeline's 'scheduler' role",
       .choices_of_role = std::string(kSchedulerRole)}};
  if (options_.flow) {
    inputs.push_back(
        {.name = "mu",
         .type_hint = TypeHint::Double(),
         .description = "Flow matching's dynamic shift; when absent, "
                        "computed from the latents' size as diffusers' Flux "
                        "pipeline does"});
    inputs.push_back(
        {.name = "sigmas",
         .type_hint = TypeHint::List(),
         .description = "Flow matching's sigmas, descending in (0, 1]; "
                        "their count is the step count"});
  }
  return inputs;
}

std::vector<InputParam> SetTimesteps::intermediate_inputs() const {
  if (!options_.flow) return {};
  return {{.name = "latents",
           .type_hint = TypeHint::Tensor(),
           .description = "The prepared latents: their size gives mu"}};
}

std::vector<OutputParam> SetTimesteps::intermediate_outputs() const {
  return {{.name = "timesteps",
           .type_hint = TypeHint::Tensor(),
           .description = "The timesteps, one per step",
           .internal = true},
          {.name = "schedule",
           .type_hint = TypeHint::Any(),
           .description = "The run's scheduler and schedule",
           .internal = true},
          {.name = "init_noise_sigma",
           .type_hint = TypeHint::Double(),
           .description = "The scale of the initial noise",
           .internal = true}};
}

std::vector<ComponentSpec> SetTimesteps::expected_components() const {
  return {SchedulerSpec()};
}

absl::Status SetTimesteps::Run(const Components& components,
                               PipelineState& state, RunContext&) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  ASSIGN_OR_RETURN(const int64_t steps,
                   block_state.Get<int64_t>("num_inference_steps"));
  const c10::IValue* choice = block_state.Find("scheduler");
  const std::string name =
      choice != nullptr && choice->isString() ? choice->toStringRef() : "";
  absl::StatusOr<const Scheduler*> scheduler =
      components.Get<Scheduler>(kSchedulerRole, name);
  if (absl::IsNotFound(scheduler.status()) && !name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'scheduler' must be one of: ",
        absl::StrJoin(components.Choices(kSchedulerRole), ", "), "; got '",
        name, "'"));
  }
  RETURN_IF_ERROR(scheduler.status());

  ScheduleRequest request{.num_inference_steps = steps};
  if (options_.flow) {
    if (const c10::IValue* mu = block_state.Find("mu");
        mu != nullptr && !mu->isNone()) {
      ASSIGN_OR_RETURN(request.mu, block_state.Get<double>("mu"));
    }
    if (const c10::IValue* sigmas = block_state.Find("sigmas");
        sigmas != nullptr && !sigmas->isNone()) {
      for (const c10::IValue& sigma : sigmas->toListRef()) {
        if (!sigma.isDouble() && !sigma.isInt()) {
          return absl::InvalidArgumentError(
              "input 'sigmas' must be a list of numbers");
        }
        request.sigmas.push_back(sigma.isDouble()
                                     ? sigma.toDouble()
                                     : static_cast<double>(sigma.toInt()));
      }
    }
    // diffusers' Flux packs 2x2 latent patches: (h / 2) · (w / 2).
    const at::Tensor latents = OptionalTensor(block_state, "latents");
    if (latents.defined() && latents.dim() == 4) {
      request.image_seq_len = (latents.size(2) / 2) * (latents.size(3) / 2);
    }
  }
  ASSIGN_OR_RETURN(Schedule schedule, (*scheduler)->SetTimesteps(request));
  block_state.Set("timesteps", schedule.timesteps);
  block_state.Set("init_noise_sigma", schedule.init_noise_sigma);
  block_state.Set("schedule",
                  c10::IValue::make_capsule(c10::make_intrusive<RunSchedule>(
                      *scheduler, std::move(schedule))));
  return SetBlockState(state, block_state);
}

// ---- PrepareLatents ----

std::string PrepareLatents::description() const {
  return "Prepares the initial latents: the given ones, or seeded noise, "
         "scaled by the scheduler's init_noise_sigma";
}

std::vector<InputParam> PrepareLatents::inputs() const {
  return {{.name = "latents",
           .type_hint = TypeHint::Tensor(),
           .description = absl::StrCat(
               "Initial unit noise, float32 [B,", options_.channels,
               ",H,W]; when absent, drawn from seed")},
          {.name = "seed",
           .type_hint = TypeHint::Int(),
           .description = "Seeds the CPU generator of the noise and of every "
                          "stochastic step; when absent the server draws one "
                          "and reports it (RunStarted.resolved_inputs)",
           .random_when_absent = true},
          {.name = "height",
           .type_hint = TypeHint::Int(),
           .default_value = options_.height,
           .description = "Image height in pixels"},
          {.name = "width",
           .type_hint = TypeHint::Int(),
           .default_value = options_.width,
           .description = "Image width in pixels"},
          {.name = "batch_size",
           .type_hint = TypeHint::Int(),
           .default_value = int64_t{1},
           .description = "Samples per run"}};
}

std::vector<InputParam> PrepareLatents::intermediate_inputs() const {
  return {{.name = "init_noise_sigma",
           .type_hint = TypeHint::Double(),
           .description = "The scale of the initial noise (SetTimesteps); 1 "
                          "when the latents come first (flow matching)"}};
}

std::vector<OutputParam> PrepareLatents::intermediate_outputs() const {
  return {{.name = "latents",
           .type_hint = TypeHint::Tensor(),
           .description = "The latents being denoised"},
          {.name = "generator",
           .type_hint = TypeHint::Any(),
           .description = "The run's CPU random generator",
           .internal = true}};
}

absl::Status PrepareLatents::Run(const Components&, PipelineState& state,
                                 RunContext& context) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  const c10::IValue* sigma_value = block_state.Find("init_noise_sigma");
  const double init_noise_sigma = sigma_value != nullptr &&
                                          sigma_value->isDouble()
                                      ? sigma_value->toDouble()
                                      : 1.0;
  const c10::IValue* seed_value = block_state.Find("seed");
  const uint64_t seed = seed_value != nullptr && seed_value->isInt()
                            ? static_cast<uint64_t>(seed_value->toInt())
                            : std::random_device{}();
  at::Generator generator = at::detail::createCPUGenerator(seed);

  at::Tensor latents = OptionalTensor(block_state, "latents");
  if (latents.defined()) {
    if (latents.dim() != 4 || latents.size(1) != options_.channels ||
        latents.numel() == 0 || !at::isFloatingType(latents.scalar_type())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'latents' must be a floating-point [B,", options_.channels,
          ",H,W] tensor, got ", c10::toString(latents.scalar_type()), " ",
          ShapeString(latents)));
    }
    latents = latents.to(context.device, at::kFloat);
  } else {
    ASSIGN_OR_RETURN(const int64_t batch,
                     block_state.Get<int64_t>("batch_size"));
    ASSIGN_OR_RETURN(const int64_t height, block_state.Get<int64_t>("height"));
    ASSIGN_OR_RETURN(const int64_t width, block_state.Get<int64_t>("width"));
    RETURN_IF_ERROR(CheckPositive("batch_size", batch, 1024));
    RETURN_IF_ERROR(CheckPositive("height", height, 1 << 16));
    RETURN_IF_ERROR(CheckPositive("width", width, 1 << 16));
    const int64_t factor = options_.vae_scale_factor;
    if (height % factor != 0 || width % factor != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "inputs 'height' and 'width' must be multiples of ", factor,
          ", got ", height, " x ", width));
    }
    const std::vector<int64_t> shape = {batch, options_.channels,
                                        height / factor, width / factor};
    const int64_t bytes = batch * options_.channels * (height / factor) *
                          (width / factor) * int64_t{4};
    if (bytes > kMaxLatentBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "latents of [", absl::StrJoin(shape, ","), "] would take ", bytes,
          " bytes, above the limit of ", kMaxLatentBytes));
    }
    // Drawn on the CPU and then moved, as diffusers' randn_tensor does with
    // a CPU generator: a seed gives the same noise on every device.
    latents = at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat))
                  .to(context.device);
  }
  block_state.Set("latents", latents * init_noise_sigma);
  block_state.Set("generator", std::move(generator));
  return SetBlockState(state, block_state);
}

// ---- DenoiseLoop ----

std::string DenoiseLoop::description() const {
  return "The denoising loop: runs its loop blocks once per timestep";
}

std::vector<InputParam> DenoiseLoop::loop_intermediate_inputs() const {
  return {{.name = "timesteps",
           .type_hint = TypeHint::Tensor(),
           .required = true,
           .description = "The run's timesteps (SetTimesteps)"}};
}

absl::Status DenoiseLoop::Run(const Components& components,
                              PipelineState& state, RunContext& context) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  ASSIGN_OR_RETURN(const at::Tensor timesteps,
                   block_state.Get<at::Tensor>("timesteps"));
  const int64_t total = timesteps.size(0);
  for (int64_t i = 0; i < total; ++i) {
    RETURN_IF_ERROR(LoopStep(components, block_state,
                             {.i = i, .total = total, .t = timesteps[i]},
                             context));
  }
  return SetBlockState(state, block_state);
}

// ---- ScaleModelInput ----

std::string ScaleModelInput::description() const {
  return "Scales the latents for the model at this step";
}

std::vector<InputParam> ScaleModelInput::intermediate_inputs() const {
  return {{.name = "latents",
           .type_hint = TypeHint::Tensor(),
           .required = true,
           .description = "The latents being denoised"},
          ScheduleInput("schedule")};
}

std::vector<OutputParam> ScaleModelInput::intermediate_outputs() const {
  return {{.name = "latent_model_input",
           .type_hint = TypeHint::Tensor(),
           .description = "The model's input at this step",
           .internal = true}};
}

std::vector<ComponentSpec> ScaleModelInput::expected_components() const {
  return {SchedulerSpec()};
}

absl::Status ScaleModelInput::RunStep(const Components&, BlockState& state,
                                      const LoopIndex& index) const {
  ASSIGN_OR_RETURN(const RunSchedule* run, RunScheduleFrom(state));
  ASSIGN_OR_RETURN(const at::Tensor latents, state.Get<at::Tensor>("latents"));
  state.Set("latent_model_input",
            run->scheduler->ScaleModelInput(run->schedule, latents, index.i));
  return absl::OkStatus();
}

// ---- PredictNoise ----

std::string PredictNoise::description() const {
  return "Predicts the noise (or v) with the denoiser, with classifier-free "
         "guidance when guidance_scale > 1";
}

std::vector<InputParam> PredictNoise::inputs() const {
  return {{.name = "guidance_scale",
           .type_hint = TypeHint::Double(),
           .default_value = default_guidance_scale_,
           .description = "Classifier-free guidance scale; > 1 enables it"},
          {.name = "encoder_hidden_states",
           .type_hint = TypeHint::Tensor(),
           .description = "Conditioning, for a conditioned denoiser"},
          {.name = "negative_encoder_hidden_states",
           .type_hint = TypeHint::Tensor(),
           .description = "The unconditional branch's conditioning under "
                          "guidance; zeros when absent"}};
}

std::vector<InputParam> PredictNoise::intermediate_inputs() const {
  return {{.name = "latent_model_input",
           .type_hint = TypeHint::Tensor(),
           .required = true,
           .description = "The model's input (ScaleModelInput)"}};
}

std::vector<OutputParam> PredictNoise::intermediate_outputs() const {
  return {{.name = "noise_pred",
           .type_hint = TypeHint::Tensor(),
           .description = "The model's prediction at this step",
           .internal = true}};
}

std::vector<ComponentSpec> PredictNoise::expected_components() const {
  return {{.name = std::string(kDenoiserRole),
           .type = "torchscript_denoiser | gaussian_mixture_denoiser",
           .description = "The model",
           .interface = ComponentInterface::Of<Denoiser>()}};
}

absl::Status PredictNoise::RunStep(const Components& components,
                                   BlockState& state,
                                   const LoopIndex& index) const {
  ASSIGN_OR_RETURN(const Denoiser* denoiser,
                   components.Get<Denoiser>(kDenoiserRole));
  ASSIGN_OR_RETURN(const at::Tensor x,
                   state.Get<at::Tensor>("latent_model_input"));
  ASSIGN_OR_RETURN(const double scale, state.Get<double>("guidance_scale"));
  const at::Tensor cond = OptionalTensor(state, "encoder_hidden_states");
  // diffusers passes the timestep as a tensor on the model's device.
  const at::Tensor t = index.t.to(x.device());

  if (scale > 1.0 && cond.defined() && denoiser->conditioned()) {
    at::Tensor uncond = OptionalTensor(state, "negative_encoder_hidden_states");
    if (!uncond.defined()) {
      uncond = at::zeros_like(cond);
    } else if (uncond.sizes() != cond.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'negative_encoder_hidden_states' must have the shape of "
          "'encoder_hidden_states' ",
          ShapeString(cond), ", got ", ShapeString(uncond)));
    }
    ASSIGN_OR_RETURN(const at::Tensor both,
                     denoiser->Predict(at::cat({x, x}),
                                       t, at::cat({uncond.to(cond.device()),
                                                   cond})));
    const std::vector<at::Tensor> halves = both.chunk(2);
    state.Set("noise_pred", halves[0] + scale * (halves[1] - halves[0]));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(at::Tensor noise_pred, denoiser->Predict(x, t, cond));
  state.Set("noise_pred", std::move(noise_pred));
  return absl::OkStatus();
}

// ---- SchedulerStep ----

std::string SchedulerStep::description() const {
  return "Steps the scheduler: the next latents and the predicted x0";
}

std::vector<InputParam> SchedulerStep::inputs() const {
  return {{.name = "eta",
           .type_hint = TypeHint::Double(),
           .default_value = 0.0,
           .description = "DDIM's eta: 0 deterministic, 1 DDPM-like noise "
                          "(other schedulers ignore it)"}};
}

std::vector<InputParam> SchedulerStep::intermediate_inputs() const {
  return {{.name = "noise_pred",
           .type_hint = TypeHint::Tensor(),
           .required = true,
           .description = "The model's prediction (PredictNoise)"},
          {.name = "latents",
           .type_hint = TypeHint::Tensor(),
           .required = true,
           .description = "The latents being denoised"},
          ScheduleInput("schedule"),
          {.name = "generator",
           .type_hint = TypeHint::Any(),
           .description = "The run's CPU generator (PrepareLatents)"}};
}

std::vector<OutputParam> SchedulerStep::intermediate_outputs() const {
  return {{.name = "latents",
           .type_hint = TypeHint::Tensor(),
           .description = "The latents after this step"},
          {.name = "denoised",
           .type_hint = TypeHint::Tensor(),
           .description = "The predicted clean latents (x0) at this step"}};
}

std::vector<ComponentSpec> SchedulerStep::expected_components() const {
  return {SchedulerSpec()};
}

absl::Status SchedulerStep::RunStep(const Components&, BlockState& state,
                                    const LoopIndex& index) const {
  ASSIGN_OR_RETURN(RunSchedule* run, RunScheduleFrom(state));
  ASSIGN_OR_RETURN(const at::Tensor noise_pred,
                   state.Get<at::Tensor>("noise_pred"));
  ASSIGN_OR_RETURN(const at::Tensor latents, state.Get<at::Tensor>("latents"));
  ASSIGN_OR_RETURN(const double eta, state.Get<double>("eta"));
  if (eta < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'eta' must be >= 0, got ", eta));
  }
  at::Generator generator;
  const c10::IValue* generator_value = state.Find("generator");
  if (generator_value != nullptr && generator_value->isGenerator()) {
    generator = generator_value->toGenerator();
  }
  ASSIGN_OR_RETURN(
      StepResult step,
      run->scheduler->Step(run->schedule, noise_pred, index.i, latents,
                      {.eta = eta,
                       .generator = generator.defined() ? &generator
                                                        : nullptr}));
  state.Set("latents", std::move(step.prev_sample));
  state.Set("denoised", std::move(step.pred_original_sample));
  return absl::OkStatus();
}

// ---- Decode and Preview ----

std::vector<InputParam> LatentsToImage::intermediate_inputs() const {
  return {{.name = "latents",
           .type_hint = TypeHint::Tensor(),
           .required = true,
           .description = "The denoised latents"}};
}

std::vector<OutputParam> LatentsToImage::intermediate_outputs() const {
  return {{.name = std::string(spec_.output),
           .type_hint = TypeHint::Tensor(),
           .description = std::string(spec_.output_description)}};
}

std::vector<ComponentSpec> LatentsToImage::expected_components() const {
  return {{.name = std::string(spec_.role),
           .type = std::string(spec_.component_types),
           .description = "Latents -> UINT8 [B,H,W,3] images",
           .interface = ComponentInterface::Of<ImageDecoder>()}};
}

absl::Status LatentsToImage::Run(const Components& components,
                                 PipelineState& state, RunContext&) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  ASSIGN_OR_RETURN(const ImageDecoder* decoder,
                   components.Get<ImageDecoder>(spec_.role));
  ASSIGN_OR_RETURN(const at::Tensor latents,
                   block_state.Get<at::Tensor>("latents"));
  ASSIGN_OR_RETURN(at::Tensor image, decoder->Decode(latents));
  block_state.Set(spec_.output, std::move(image));
  return SetBlockState(state, block_state);
}

Decode::Decode()
    : LatentsToImage({.role = kDecoderRole,
                      .output = "image",
                      .output_description = "The image, UINT8 [B,H,W,3]",
                      .component_types =
                          "torchscript_decoder | latent_preview"}) {}

std::string Decode::description() const {
  return "Decodes the latents into an image";
}

Preview::Preview()
    : LatentsToImage(
          {.role = kPreviewRole,
           .output = "preview",
           .output_description = "The latent preview, UINT8 [B,H,W,3]",
           .component_types = "latent_preview"}) {}

std::string Preview::description() const {
  return "A quick linear RGB preview of the latents";
}

// ---- registration ----

absl::Status RegisterDiffusionBlocks(BlockRegistry& registry) {
  RETURN_IF_ERROR(registry.Register(
      std::string(SetTimesteps::kTypeName),
      [](const BlockParams& raw) -> absl::StatusOr<std::unique_ptr<Block>> {
        ParamReader params(raw);
        SetTimesteps::Options o;
        ASSIGN_OR_RETURN(o.default_steps,
                         params.Int("num_inference_steps", o.default_steps));
        ASSIGN_OR_RETURN(o.flow, params.Bool("flow", o.flow));
        RETURN_IF_ERROR(params.CheckAllRead());
        if (o.default_steps < 1) {
          return ParamError("num_inference_steps", "must be >= 1");
        }
        return std::make_unique<SetTimesteps>(o);
      }));
  RETURN_IF_ERROR(registry.Register(
      std::string(PrepareLatents::kTypeName),
      [](const BlockParams& raw) -> absl::StatusOr<std::unique_ptr<Block>> {
        ParamReader params(raw);
        PrepareLatents::Options o;
        ASSIGN_OR_RETURN(o.channels, params.Int("channels", o.channels));
        ASSIGN_OR_RETURN(o.height, params.Int("height", o.height));
        ASSIGN_OR_RETURN(o.width, params.Int("width", o.width));
        ASSIGN_OR_RETURN(o.vae_scale_factor,
                         params.Int("vae_scale_factor", o.vae_scale_factor));
        RETURN_IF_ERROR(params.CheckAllRead());
        for (auto [name, value] : {std::pair{"channels", o.channels},
                                   {"height", o.height},
                                   {"width", o.width},
                                   {"vae_scale_factor", o.vae_scale_factor}}) {
          if (value < 1) return ParamError(name, "must be >= 1");
        }
        return std::make_unique<PrepareLatents>(o);
      }));
  RETURN_IF_ERROR(registry.Register<DenoiseLoop>());
  RETURN_IF_ERROR(registry.Register<ScaleModelInput>());
  RETURN_IF_ERROR(registry.Register(
      std::string(PredictNoise::kTypeName),
      [](const BlockParams& raw) -> absl::StatusOr<std::unique_ptr<Block>> {
        ParamReader params(raw);
        ASSIGN_OR_RETURN(double scale, params.Double("guidance_scale", 1.0));
        RETURN_IF_ERROR(params.CheckAllRead());
        return std::make_unique<PredictNoise>(scale);
      }));
  RETURN_IF_ERROR(registry.Register<SchedulerStep>());
  RETURN_IF_ERROR(registry.Register<Decode>());
  return registry.Register<Preview>();
}

}  // namespace loopserve
