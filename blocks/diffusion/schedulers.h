// Schedulers: diffusers' DDIMScheduler and EulerDiscreteScheduler in C++,
// numerically the same in float32 (tests/blocks/diffusion/ checks them against
// a Python reference of diffusers' formulas).
//
// A Scheduler is a component: immutable and shared by every run. What
// diffusers keeps on the scheduler object between calls (timesteps, sigmas,
// the step index) is per run here, a Schedule that SetTimesteps returns and
// the pipeline state carries:
//
//   ASSIGN_OR_RETURN(Schedule schedule, scheduler.SetTimesteps(50));
//   at::Tensor latents = noise * schedule.init_noise_sigma;
//   for (int64_t i = 0; i < schedule.size(); ++i) {
//     at::Tensor input = scheduler.ScaleModelInput(schedule, latents, i);
//     at::Tensor eps = model(input, schedule.timesteps[i]);
//     ASSIGN_OR_RETURN(StepResult step,
//                      scheduler.Step(schedule, eps, i, latents, {}));
//     latents = step.prev_sample;
//   }
//
// Thread-safety: every method is const and safe from any number of runs.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/component_registry.h"
#include "blocks/diffusion/noise_schedule.h"

namespace loopserve {

// A run's schedule: diffusers' scheduler state after set_timesteps.
struct Schedule {
  // [n] on the CPU: int64 for DDIM, float32 for Euler (its timesteps may be
  // fractional). Passed to the model as diffusers passes them to a UNet.
  at::Tensor timesteps{};
  // float32 [n + 1] on the CPU, ending in 0: the noise level at each step.
  at::Tensor sigmas{};
  // The scale of the initial noise.
  double init_noise_sigma = 1.0;

  int64_t size() const { return timesteps.defined() ? timesteps.size(0) : 0; }
};

struct StepOptions {
  // DDIM's eta: 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling.
  double eta = 0.0;
  // Draws the step's noise (eta > 0) on the CPU, as diffusers' randn_tensor
  // does with a CPU generator; may be null when no noise is drawn.
  at::Generator* generator = nullptr;
};

struct StepResult {
  at::Tensor prev_sample{};
  // The predicted x0 ("denoised").
  at::Tensor pred_original_sample{};
};

// The configuration both schedulers read: diffusers' keys and defaults
// (timestep_spacing, set_alpha_to_one and clip_sample default per scheduler).
struct SchedulerConfig {
  NoiseSchedule noise{};
  // "epsilon", "v_prediction" or "sample".
  std::string prediction_type = "epsilon";
  // "leading", "trailing" or "linspace".
  std::string timestep_spacing = "leading";
  int64_t steps_offset = 0;
  // DDIM only.
  bool set_alpha_to_one = true;
  bool clip_sample = true;
  double clip_sample_range = 1.0;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // "ddim_scheduler" or "euler_scheduler".
  virtual absl::string_view type_name() const = 0;
  const SchedulerConfig& config() const { return config_; }
  // float32 [num_train_timesteps] on the CPU.
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }

  // diffusers' set_timesteps. INVALID_ARGUMENT naming num_inference_steps
  // when it is < 1 or above num_train_timesteps.
  virtual absl::StatusOr<Schedule> SetTimesteps(
      int64_t num_inference_steps) const = 0;

  // diffusers' scale_model_input for step `step_index`; DDIM returns
  // `sample` itself.
  virtual at::Tensor ScaleModelInput(const Schedule& schedule,
                                     const at::Tensor& sample,
                                     int64_t step_index) const = 0;

  // diffusers' step at `step_index`: the next sample and the predicted x0.
  virtual absl::StatusOr<StepResult> Step(const Schedule& schedule,
                                          const at::Tensor& model_output,
                                          int64_t step_index,
                                          const at::Tensor& sample,
                                          const StepOptions& options) const = 0;

 protected:
  explicit Scheduler(SchedulerConfig config);

  // The checks both SetTimesteps share.
  absl::Status CheckStepCount(int64_t num_inference_steps) const;
  absl::Status CheckStepIndex(const Schedule& schedule,
                              int64_t step_index) const;

  SchedulerConfig config_;
  at::Tensor alphas_cumprod_;
};

class DdimScheduler final : public Scheduler {
 public:
  static constexpr absl::string_view kTypeName = "ddim_scheduler";
  explicit DdimScheduler(SchedulerConfig config);

  absl::string_view type_name() const override { return kTypeName; }
  absl::StatusOr<Schedule> SetTimesteps(
      int64_t num_inference_steps) const override;
  at::Tensor ScaleModelInput(const Schedule& schedule,
                             const at::Tensor& sample,
                             int64_t step_index) const override;
  absl::StatusOr<StepResult> Step(const Schedule& schedule,
                                  const at::Tensor& model_output,
                                  int64_t step_index, const at::Tensor& sample,
                                  const StepOptions& options) const override;

 private:
  // ā at `timestep`, or final_alpha_cumprod for a timestep < 0.
  float AlphaProd(int64_t timestep) const;

  float final_alpha_cumprod_;
};

class EulerScheduler final : public Scheduler {
 public:
  static constexpr absl::string_view kTypeName = "euler_scheduler";
  explicit EulerScheduler(SchedulerConfig config);

  absl::string_view type_name() const override { return kTypeName; }
  absl::StatusOr<Schedule> SetTimesteps(
      int64_t num_inference_steps) const override;
  at::Tensor ScaleModelInput(const Schedule& schedule,
                             const at::Tensor& sample,
                             int64_t step_index) const override;
  absl::StatusOr<StepResult> Step(const Schedule& schedule,
                                  const at::Tensor& model_output,
                                  int64_t step_index, const at::Tensor& sample,
                                  const StepOptions& options) const override;

 private:
  at::Tensor training_sigmas_;
};

// Reads a scheduler's configuration: `config_file` (a diffusers
// scheduler_config.json, read as it is) first, then the other params over it.
// `ddim` picks DDIM's defaults (leading spacing) or Euler's (linspace).
absl::StatusOr<SchedulerConfig> ReadSchedulerConfig(
    const BlockParams& params, const ComponentContext& context, bool ddim);

// Registers ddim_scheduler and euler_scheduler, as Scheduler.
absl::Status RegisterSchedulers(ComponentRegistry& registry);

}  // namespace loopserve
