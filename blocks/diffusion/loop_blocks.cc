// The loop and its interior: DenoiseLoop, ScaleModelInput, PredictNoise
// (the denoiser call, guidance pairs) and SchedulerStep.
#include <ATen/ATen.h>

#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/diffusion/denoisers.h"
#include "blocks/diffusion/diffusion_blocks.h"
#include "blocks/diffusion/schedulers.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

InputParam ScheduleInput(absl::string_view name) {
  return {.name = std::string(name),
          .type_hint = TypeHint::Any(),
          .required = true,
          .description = "The run's schedule and scheduler (SetTimesteps)"};
}

}  // namespace

// ---- DenoiseLoop ----

std::string DenoiseLoop::description() const {
  return "The denoising loop: runs its loop blocks once per timestep";
}

std::vector<std::pair<std::string, std::string>>
DenoiseLoop::default_sub_blocks() const {
  return {{"before_denoiser", std::string(ScaleModelInput::kTypeName)},
          {"denoiser", std::string(PredictNoise::kTypeName)},
          {"after_denoiser", std::string(SchedulerStep::kTypeName)}};
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
            run->scheduler->ScaleModelInput(
                run->schedule, latents, run->schedule.begin_index + index.i));
  return absl::OkStatus();
}

// ---- PredictNoise ----

std::string PredictNoise::description() const {
  return "Predicts the noise (or v) with the denoiser, with classifier-free "
         "guidance when guidance_scale > 1";
}

std::vector<InputParam> PredictNoise::inputs() const {
  std::vector<InputParam> inputs = {
      {.name = "guidance_scale",
       .type_hint = TypeHint::Double(),
       .default_value = default_guidance_scale_,
       .description = "Classifier-free guidance scale; > 1 enables it; in "
                      "[0, 100]",
       .minimum = 0.0,
       .maximum = 100.0}};
  for (const ModelArgument& argument : conditioning_) {
    inputs.push_back(
        {.name = argument.name,
         .type_hint = TypeHint::Tensor(),
         .description = absl::StrCat(
             "Conditioning the denoiser takes",
             argument.shape.empty()
                 ? ""
                 : absl::StrCat(", [", absl::StrJoin(argument.shape, ","),
                                "] (-1: any)"),
             argument.shared ? "; the same for both halves under guidance"
                             : "")});
    if (!argument.shared) {
      inputs.push_back({.name = absl::StrCat("negative_", argument.name),
                        .type_hint = TypeHint::Tensor(),
                        .description = absl::StrCat(
                            "The unconditional half's '", argument.name,
                            "' under guidance; zeros when absent")});
    }
  }
  return inputs;
}

absl::Status PredictNoise::Bind(const Components& components) {
  ASSIGN_OR_RETURN(const Denoiser* denoiser,
                   components.Get<Denoiser>(kDenoiserRole));
  const std::span<const ModelArgument> conditioning = denoiser->conditioning();
  conditioning_.assign(conditioning.begin(), conditioning.end());
  // The block's path keeps two PredictNoise in one loop apart.
  prepared_key_ = absl::StrCat(path(), "#conditioning");
  return absl::OkStatus();
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
  return {{.role = std::string(kDenoiserRole),
           .type = "torchscript_denoiser | gaussian_mixture_denoiser",
           .description = "The model",
           .interface = ComponentInterface::Of<Denoiser>()}};
}

namespace {

// Whether `value` has a model's declared `shape` (-1: any size; empty:
// any shape), from dimension `from` on (1 for a batched value, whose
// dimension 0 is checked apart).
bool HasShape(const at::Tensor& value, std::span<const int64_t> shape,
              int64_t from) {
  if (shape.empty()) return true;
  if (value.dim() != static_cast<int64_t>(shape.size())) return false;
  for (int64_t d = from; d < value.dim(); ++d) {
    if (shape[d] != -1 && shape[d] != value.size(d)) return false;
  }
  return true;
}

// A declared shape as an error message shows it: [B,*,10] (B when `from` is
// 1), [B,...] when any.
std::string ShapePattern(std::span<const int64_t> shape, int64_t from) {
  if (shape.empty()) return from == 0 ? "[...]" : "[B,...]";
  std::vector<std::string> dims;
  for (size_t d = 0; d < shape.size(); ++d) {
    dims.push_back(static_cast<int64_t>(d) < from ? "B"
                   : shape[d] == -1               ? "*"
                                                  : absl::StrCat(shape[d]));
  }
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

// `value` (the input `name`) fitted to `argument` for a batch of `batch`:
// its declared shape, and a batch of 1 or `batch`, expanded to `batch`.
absl::StatusOr<at::Tensor> FitConditioning(const ModelArgument& argument,
                                           absl::string_view name,
                                           const at::Tensor& value,
                                           int64_t batch) {
  const int64_t from = argument.shared ? 0 : 1;
  const bool fits =
      (argument.shared ||
       (value.dim() >= 1 && (value.size(0) == 1 || value.size(0) == batch))) &&
      HasShape(value, argument.shape, from);
  if (!fits) {
    const std::string wanted = ShapePattern(argument.shape, from);
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", name, "' must be ", wanted,
        argument.shared ? ""
        : batch == 1    ? " with B = 1"
                        : absl::StrCat(" with B = 1 or ", batch),
        ", got ", c10::toString(value.scalar_type()), " ", ShapeString(value)));
  }
  if (argument.shared || value.size(0) == batch) return value;
  std::vector<int64_t> expanded = value.sizes().vec();
  expanded[0] = batch;
  return value.expand(expanded);
}

}  // namespace

absl::StatusOr<std::vector<at::Tensor>> PredictNoise::PrepareConditioning(
    const BlockState& state, int64_t batch, bool guided,
    c10::Device device) const {
  std::vector<at::Tensor> conditioning;
  conditioning.reserve(conditioning_.size());
  for (const ModelArgument& argument : conditioning_) {
    at::Tensor cond = state.OptionalTensor(argument.name);
    if (!cond.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", argument.name, "' is required: the denoiser takes it"));
    }
    ASSIGN_OR_RETURN(cond,
                     FitConditioning(argument, argument.name, cond, batch));
    cond = cond.to(device);
    if (guided && !argument.shared) {
      const std::string negative_name =
          absl::StrCat("negative_", argument.name);
      at::Tensor uncond = state.OptionalTensor(negative_name);
      if (!uncond.defined()) {
        uncond = at::zeros_like(cond);
      } else {
        ASSIGN_OR_RETURN(
            uncond, FitConditioning(argument, negative_name, uncond, batch));
        if (uncond.sizes() != cond.sizes()) {
          return absl::InvalidArgumentError(
              absl::StrCat("input '", negative_name,
                           "' must have the shape of '", argument.name, "' ",
                           ShapeString(cond), ", got ", ShapeString(uncond)));
        }
      }
      cond = at::cat({uncond.to(device, cond.scalar_type()), cond});
    }
    conditioning.push_back(std::move(cond));
  }
  return conditioning;
}

absl::Status PredictNoise::RunStep(const Components& components,
                                   BlockState& state,
                                   const LoopIndex& index) const {
  ASSIGN_OR_RETURN(const Denoiser* denoiser,
                   components.Get<Denoiser>(kDenoiserRole));
  ASSIGN_OR_RETURN(const at::Tensor x,
                   state.Get<at::Tensor>("latent_model_input"));
  ASSIGN_OR_RETURN(const double scale, state.Get<double>("guidance_scale"));
  // The sample's shape is checked here, before the model sees it, so that
  // the client hears which inputs to change rather than the model's error.
  if (!HasShape(x, denoiser->sample_shape(), 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the denoiser takes samples ",
        ShapePattern(denoiser->sample_shape(), 1), "; these latents are ",
        ShapeString(x), " (set by the inputs height and width, or latents)"));
  }
  const int64_t batch = x.size(0);
  const bool guided =
      scale > 1.0 && std::any_of(conditioning_.begin(), conditioning_.end(),
                                 [](const ModelArgument& argument) {
                                   return !argument.shared;
                                 });
  // The batch, the guidance scale and the values are the run's: prepared
  // on its first step, kept in the loop's state (not an output: the loop
  // does not write it back).
  std::vector<at::Tensor> conditioning;
  if (!conditioning_.empty()) {
    if (const c10::IValue* prepared = state.Find(prepared_key_)) {
      conditioning = prepared->toTensorVector();
    } else {
      ASSIGN_OR_RETURN(conditioning,
                       PrepareConditioning(state, batch, guided, x.device()));
      state.Set(prepared_key_, c10::List<at::Tensor>(conditioning));
    }
  }
  // diffusers passes the timestep as a tensor on the model's device, one
  // per row of the call.
  const int64_t rows = guided ? 2 * batch : batch;
  const at::Tensor t =
      index.t.to(x.device(), index.t.scalar_type(), /*non_blocking=*/true)
          .reshape({1})
          .expand({rows});
  if (guided) {
    ASSIGN_OR_RETURN(const at::Tensor both,
                     denoiser->Predict(at::cat({x, x}), t, conditioning));
    const std::vector<at::Tensor> halves = both.chunk(2);
    state.Set("noise_pred", halves[0] + scale * (halves[1] - halves[0]));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(at::Tensor noise_pred,
                   denoiser->Predict(x, t, conditioning));
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
           .description = "DDIM's eta, in [0, 1]: 0 deterministic, 1 "
                          "DDPM-like noise (other schedulers ignore it)",
           .minimum = 0.0,
           .maximum = 1.0}};
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
  ASSIGN_OR_RETURN(RunSchedule * run, RunScheduleFrom(state));
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
      run->scheduler->Step(
          run->schedule, noise_pred, run->schedule.begin_index + index.i,
          latents,
          {.eta = eta,
           .generator = generator.defined() ? &generator : nullptr}));
  state.Set("latents", std::move(step.prev_sample));
  state.Set("denoised", std::move(step.pred_original_sample));
  return absl::OkStatus();
}

}  // namespace loopserve
