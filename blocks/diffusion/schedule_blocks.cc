// The blocks before the loop: SetTimesteps (the run's schedule) and
// PrepareLatents (its starting latents and generator).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/diffusion/diffusion_blocks.h"
#include "blocks/diffusion/scheduler_config.h"
#include "blocks/diffusion/schedulers.h"
#include "util/status_macros.h"

namespace loopserve {

ComponentSpec SchedulerSpec() {
  std::vector<std::string> types;
  for (const SchedulerType& type : SchedulerTypes()) {
    types.emplace_back(type.type_name);
  }
  return {.role = std::string(kSchedulerRole),
          .type = absl::StrJoin(types, " | "),
          .description = "Turns the model's predictions into the next latents",
          .interface = ComponentInterface::Of<Scheduler>()};
}

// The run's schedule, as SetTimesteps left it in the block state.
absl::StatusOr<RunSchedule*> RunScheduleFrom(const BlockState& state) {
  const c10::IValue* value = state.Find("schedule");
  RunSchedule* run = value == nullptr
                         ? nullptr
                         : dynamic_cast<RunSchedule*>(AsRunState(*value));
  if (run == nullptr) {
    return absl::FailedPreconditionError(
        "the run has no schedule: SetTimesteps must run first");
  }
  return run;
}

namespace {

constexpr int64_t kMaxLatentBytes = int64_t{1} << 30;

InputParam ImageLatentsInput() {
  return {.name = "image_latents",
          .type_hint = TypeHint::Tensor(),
          .description =
              "Image-to-image: the image in latent space, float "
              "[B,C,H,W]; the run starts from it, noised to its "
              "first step (or as it is, with denoising_start)"};
}

InputParam DenoisingStartInput() {
  return {.name = "denoising_start",
          .type_hint = TypeHint::Double(),
          .description =
              "Start at this fraction of the schedule, in (0, 1), "
              "from image_latents as they are (not noised): the "
              "refiner of a base + refiner split (SDXL)"};
}

// An optional double input; nullopt when absent.
absl::StatusOr<std::optional<double>> OptionalDouble(const BlockState& state,
                                                     absl::string_view name) {
  const c10::IValue* value = state.Find(name);
  if (value == nullptr || value->isNone()) return std::nullopt;
  ASSIGN_OR_RETURN(const double d, state.Get<double>(name));
  return d;
}

absl::Status CheckFraction(absl::string_view name, double value) {
  if (!(value > 0.0 && value < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", name, "' must be in (0, 1), got ", value));
  }
  return absl::OkStatus();
}

// The steps of a schedule a run takes: [begin, end).
struct StepRange {
  int64_t begin = 0;
  int64_t end = 0;
};

// diffusers' timestep cutoff for a denoising_start or denoising_end of
// `fraction`: int(round(T − fraction · T)), Python's round (half to even).
double TimestepCutoff(const Scheduler& scheduler, double fraction) {
  const double train =
      static_cast<double>(scheduler.config().noise.num_train_timesteps);
  return std::nearbyint(train - fraction * train);
}

// The steps of `schedule` the run takes, as diffusers' pipelines choose
// them: image-to-image's get_timesteps (strength: the last
// min(int(n · strength), n) steps), SDXL's denoising_start (the steps below
// its cutoff) and denoising_end (the steps at or above its cutoff).
absl::StatusOr<StepRange> StepsToTake(const BlockState& state,
                                      const Scheduler& scheduler,
                                      const Schedule& schedule,
                                      double default_strength) {
  const int64_t n = schedule.size();
  const bool image = state.OptionalTensor("image_latents").defined();
  ASSIGN_OR_RETURN(const std::optional<double> strength,
                   OptionalDouble(state, "strength"));
  ASSIGN_OR_RETURN(const std::optional<double> start,
                   OptionalDouble(state, "denoising_start"));
  ASSIGN_OR_RETURN(const std::optional<double> end,
                   OptionalDouble(state, "denoising_end"));
  if ((strength.has_value() || start.has_value()) && !image) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", strength.has_value() ? "strength" : "denoising_start",
        "' needs an image to start from: 'image' or 'image_latents'"));
  }
  if (strength.has_value() && start.has_value()) {
    return absl::InvalidArgumentError(
        "inputs 'strength' and 'denoising_start' both say where to start; "
        "give one");
  }
  // Timesteps compared as diffusers compares them (tensor < int).
  const at::Tensor timesteps = schedule.timesteps.to(at::kDouble);
  StepRange range{.begin = 0, .end = n};
  if (start.has_value()) {
    RETURN_IF_ERROR(CheckFraction("denoising_start", *start));
    const int64_t below =
        (timesteps < TimestepCutoff(scheduler, *start)).sum().item<int64_t>();
    range.begin = n - below;
  } else if (image) {
    const double s = strength.value_or(default_strength);
    if (!(s > 0.0 && s <= 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input 'strength' must be in (0, 1], got ", s));
    }
    const int64_t init =
        std::min(static_cast<int64_t>(static_cast<double>(n) * s), n);
    range.begin = std::max<int64_t>(n - init, 0);
  }
  if (end.has_value()) {
    RETURN_IF_ERROR(CheckFraction("denoising_end", *end));
    const at::Tensor rest = timesteps.slice(0, range.begin, n);
    range.end = range.begin +
                (rest >= TimestepCutoff(scheduler, *end)).sum().item<int64_t>();
  }
  if (range.end - range.begin < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inputs 'strength', 'denoising_start' and 'denoising_end' leave no "
        "steps of ",
        n, " (num_inference_steps) to take"));
  }
  return range;
}

absl::Status CheckPositive(absl::string_view name, int64_t value, int64_t max) {
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
       .choices_of_role = std::string(kSchedulerRole)},
      ImageLatentsInput(),
      {.name = "strength",
       .type_hint = TypeHint::Double(),
       .description = absl::StrCat(
           "Image-to-image: how much of the image to re-draw, in (0, 1]: "
           "the run takes the last int(num_inference_steps · strength) "
           "steps (default ",
           options_.strength, ")")},
      DenoisingStartInput(),
      {.name = "denoising_end",
       .type_hint = TypeHint::Double(),
       .description = "Stop at this fraction of the schedule, in (0, 1), "
                      "and return the latents still noisy: the base of a "
                      "base + refiner split (SDXL)"}};
  if (options_.flow) {
    inputs.push_back({.name = "mu",
                      .type_hint = TypeHint::Double(),
                      .description =
                          "Flow matching's dynamic shift; when absent, "
                          "computed from the latents' size as diffusers' Flux "
                          "pipeline does"});
    inputs.push_back({.name = "sigmas",
                      .type_hint = TypeHint::List(),
                      .description =
                          "Flow matching's sigmas, descending in (0, 1]; "
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
    return absl::InvalidArgumentError(
        absl::StrCat("input 'scheduler' must be one of: ",
                     absl::StrJoin(components.Choices(kSchedulerRole), ", "),
                     "; got '", name, "'"));
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
    const at::Tensor latents = block_state.OptionalTensor("latents");
    if (latents.defined() && latents.dim() == 4) {
      request.image_seq_len = (latents.size(2) / 2) * (latents.size(3) / 2);
    }
  }
  ASSIGN_OR_RETURN(Schedule schedule, (*scheduler)->SetTimesteps(request));
  ASSIGN_OR_RETURN(
      const StepRange range,
      StepsToTake(block_state, **scheduler, schedule, options_.strength));
  schedule.begin_index = range.begin;
  block_state.Set("timesteps",
                  schedule.timesteps.slice(0, range.begin, range.end));
  block_state.Set("init_noise_sigma", schedule.init_noise_sigma);
  // The choice is named, so that a checkpoint restores this scheduler.
  block_state.Set(
      "schedule",
      RunStateValue(c10::make_intrusive<RunSchedule>(
          *scheduler,
          RunStateOwner{.role = std::string(kSchedulerRole),
                        .choice = name.empty()
                                      ? components.Choices(kSchedulerRole)[0]
                                      : name},
          std::move(schedule))));
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
           .description = absl::StrCat("Initial unit noise, float32 [B,",
                                       options_.channels,
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
           .description = "Image height in pixels",
           .excluded_by = {"latents", "image_latents"}},
          {.name = "width",
           .type_hint = TypeHint::Int(),
           .default_value = options_.width,
           .description = "Image width in pixels",
           .excluded_by = {"latents", "image_latents"}},
          {.name = "batch_size",
           .type_hint = TypeHint::Int(),
           .default_value = int64_t{1},
           .description = "Samples per run, in [1, 1024]; with latents or "
                          "image_latents, 1 or their batch",
           .minimum = 1.0,
           .maximum = 1024.0},
          ImageLatentsInput(),
          DenoisingStartInput()};
}

std::vector<InputParam> PrepareLatents::intermediate_inputs() const {
  return {{.name = "init_noise_sigma",
           .type_hint = TypeHint::Double(),
           .description = "The scale of the initial noise (SetTimesteps); 1 "
                          "when the latents come first (flow matching)"},
          {.name = "schedule",
           .type_hint = TypeHint::Any(),
           .description = "The run's schedule (SetTimesteps): image-to-image "
                          "noises the image to its first step"},
          {.name = "image_latents_std",
           .type_hint = TypeHint::Tensor(),
           .description = "The image's latent distribution's standard "
                          "deviation (EncodeImage): image_latents are then "
                          "sampled from the run's generator first"}};
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

absl::StatusOr<at::Tensor> PrepareLatents::StartFromImage(
    const BlockState& state, const at::Tensor& image_latents,
    at::Generator& generator, c10::Device device) const {
  if (state.OptionalTensor("latents").defined()) {
    return absl::InvalidArgumentError(
        "inputs 'latents' and 'image_latents' both give the start; give one");
  }
  if (image_latents.dim() != 4 || image_latents.size(1) != options_.channels ||
      image_latents.numel() == 0 ||
      !at::isFloatingType(image_latents.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'image_latents' must be a floating-point [B,", options_.channels,
        ",H,W] tensor, got ", c10::toString(image_latents.scalar_type()), " ",
        ShapeString(image_latents)));
  }
  // diffusers duplicates one image for a batch.
  ASSIGN_OR_RETURN(const int64_t batch, state.Get<int64_t>("batch_size"));
  RETURN_IF_ERROR(CheckPositive("batch_size", batch, 1024));
  at::Tensor start = image_latents.to(device, at::kFloat);
  // A VAE's latents are a sample of its distribution, drawn before the
  // noise, as diffusers' img2img prepare_latents draws it.
  if (const at::Tensor std = state.OptionalTensor("image_latents_std");
      std.defined()) {
    start = start + std * at::randn(start.sizes(), generator,
                                    at::TensorOptions().dtype(at::kFloat))
                              .to(device);
  }
  if (start.size(0) == 1 && batch > 1) {
    start = start.repeat({batch, 1, 1, 1});
  } else if (batch != 1 && batch != start.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'batch_size' (", batch, ") must be 1 or the batch of ",
        "'image_latents' (", start.size(0), ")"));
  }
  ASSIGN_OR_RETURN(const std::optional<double> denoising_start,
                   OptionalDouble(state, "denoising_start"));
  if (denoising_start.has_value()) {
    return start;  // a refiner continues from the latents as they are
  }
  absl::StatusOr<RunSchedule*> run = RunScheduleFrom(state);
  if (!run.ok()) {
    return absl::InvalidArgumentError(
        "input 'image_latents': this pipeline prepares its latents before "
        "its timesteps (flow matching), so it cannot start from an image");
  }
  // The noise comes from the run's generator, drawn on the CPU, as
  // diffusers' img2img prepare_latents draws it.
  const at::Tensor noise =
      at::randn(start.sizes(), generator, at::TensorOptions().dtype(at::kFloat))
          .to(device);
  return (*run)->scheduler->AddNoise((*run)->schedule, start, noise);
}

absl::Status PrepareLatents::Run(const Components&, PipelineState& state,
                                 RunContext& context) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  const c10::IValue* sigma_value = block_state.Find("init_noise_sigma");
  const double init_noise_sigma =
      sigma_value != nullptr && sigma_value->isDouble()
          ? sigma_value->toDouble()
          : 1.0;
  const c10::IValue* seed_value = block_state.Find("seed");
  const uint64_t seed = seed_value != nullptr && seed_value->isInt()
                            ? static_cast<uint64_t>(seed_value->toInt())
                            : std::random_device{}();
  at::Generator generator = at::detail::createCPUGenerator(seed);

  at::Tensor image_latents = block_state.OptionalTensor("image_latents");
  if (image_latents.defined()) {
    ASSIGN_OR_RETURN(
        at::Tensor latents,
        StartFromImage(block_state, image_latents, generator, context.device));
    block_state.Set("latents", std::move(latents));
    block_state.Set("generator", std::move(generator));
    return SetBlockState(state, block_state);
  }
  at::Tensor latents = block_state.OptionalTensor("latents");
  if (latents.defined()) {
    if (latents.dim() != 4 || latents.size(1) != options_.channels ||
        latents.numel() == 0 || !at::isFloatingType(latents.scalar_type())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'latents' must be a floating-point [B,", options_.channels,
          ",H,W] tensor, got ", c10::toString(latents.scalar_type()), " ",
          ShapeString(latents)));
    }
    ASSIGN_OR_RETURN(const int64_t batch,
                     block_state.Get<int64_t>("batch_size"));
    if (batch != 1 && batch != latents.size(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input 'batch_size' (", batch,
                       ") must be 1 or the batch of "
                       "'latents' (",
                       latents.size(0), ")"));
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
    const int64_t multiple = std::max(options_.size_multiple, factor);
    if (height % multiple != 0 || width % multiple != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "inputs 'height' and 'width' must be multiples of ", multiple,
          " for this model, got ", height, " x ", width));
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

}  // namespace loopserve
