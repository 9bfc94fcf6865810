// Schedulers: diffusers' samplers in C++, numerically the same in float32
// (tests/blocks/diffusion/ checks every one against a Python reference of
// diffusers' formulas):
//
//   ddim_scheduler                  DDIMScheduler
//   ddpm_scheduler                  DDPMScheduler
//   euler_scheduler                 EulerDiscreteScheduler
//   euler_ancestral_scheduler       EulerAncestralDiscreteScheduler
//   dpm_solver_multistep_scheduler  DPMSolverMultistepScheduler
//   unipc_multistep_scheduler       UniPCMultistepScheduler
//   lcm_scheduler                   LCMScheduler
//   flow_match_euler_scheduler      FlowMatchEulerDiscreteScheduler
//   diffusers_scheduler             the one a scheduler_config.json's
//                                   _class_name names
//
// A Scheduler is a component: immutable and shared by every run. What
// diffusers keeps on the scheduler object between calls (timesteps, sigmas,
// the step index, a multistep solver's previous model outputs) is per run
// here, a Schedule that SetTimesteps returns and Step updates:
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
// Thread-safety: every method is const and safe from any number of runs; a
// Schedule belongs to one run.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/run_state.h"
#include "blocks/diffusion/noise_schedule.h"

namespace loopserve {

// A run's scheduler state: diffusers' scheduler attributes after
// set_timesteps, and what its step keeps between calls.
struct Schedule {
  // [n] on the CPU, as diffusers passes them to the model: int64 for the
  // discrete schedulers, float32 for Euler's (fractional) and flow
  // matching's.
  at::Tensor timesteps{};
  // float32 [n + 1] on the CPU: the noise level at each step, then the
  // final one (0, or sigma_min).
  at::Tensor sigmas{};
  // The scale of the initial noise.
  double init_noise_sigma = 1.0;

  // DPM-Solver, UniPC: λ = log α − log σ of the VP model at each of
  // `sigmas`, computed once by SetTimesteps rather than at every step.
  std::vector<float> lambdas{};
  // A multistep solver's memory (DPM-Solver, UniPC): the converted model
  // outputs of the last steps, oldest first, and how many lower-order
  // warm-up steps it has taken.
  std::vector<at::Tensor> model_outputs{};
  int64_t lower_order_nums = 0;
  // UniPC: the sample before the last predictor, and its order.
  at::Tensor last_sample{};
  int64_t this_order = 0;
  // The step a run starts at: diffusers' set_begin_index, as image-to-image
  // (strength) and a refiner (denoising_start) skip the first steps. Step
  // and ScaleModelInput take indices into the whole schedule.
  int64_t begin_index = 0;

  int64_t size() const { return timesteps.defined() ? timesteps.size(0) : 0; }
};

// What set_timesteps takes besides the step count: flow matching's `mu`
// and custom `sigmas`, and the latents' sequence length that `mu` defaults
// from.
struct ScheduleRequest {
  int64_t num_inference_steps = 50;
  // Flow matching with use_dynamic_shifting: the shift exponent. When
  // absent it is computed from image_seq_len as diffusers' Flux pipeline
  // does (calculate_shift).
  std::optional<double> mu{};
  // Flow matching: the sigmas to pass to set_timesteps (FluxPipeline passes
  // linspace(1, 1/n, n)); their count is the step count.
  std::vector<double> sigmas{};
  // (latent height / 2) · (latent width / 2); 0 when unknown.
  int64_t image_seq_len = 0;
};

struct StepOptions {
  // DDIM's eta: 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling.
  double eta = 0.0;
  // Draws a stochastic step's noise on the CPU, as diffusers' randn_tensor
  // does with a CPU generator; may be null when the step draws none.
  at::Generator* generator = nullptr;
};

struct StepResult {
  at::Tensor prev_sample{};
  // The predicted x0 ("denoised"): LCM's `denoised`, flow matching's
  // sample − σ·v.
  at::Tensor pred_original_sample{};
};

// Every scheduler's configuration: diffusers' keys. Each scheduler reads
// the keys its diffusers class has, with that class's defaults.
struct SchedulerConfig {
  NoiseSchedule noise{};
  // "epsilon", "v_prediction" or "sample".
  std::string prediction_type = "epsilon";
  // "leading", "trailing" or "linspace".
  std::string timestep_spacing = "leading";
  int64_t steps_offset = 0;
  // DDPM: "fixed_small" or "fixed_large".
  std::string variance_type = "fixed_small";
  // DDIM, LCM.
  bool set_alpha_to_one = true;
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  // Euler, DPM-Solver, UniPC.
  bool use_karras_sigmas = false;
  // DPM-Solver, UniPC.
  int64_t solver_order = 2;
  bool lower_order_final = true;
  // "zero" or "sigma_min".
  std::string final_sigmas_type = "zero";
  // DPM-Solver: "dpmsolver++" or "sde-dpmsolver++"; "midpoint" or "heun".
  // UniPC: "bh1" or "bh2".
  std::string algorithm_type = "dpmsolver++";
  std::string solver_type = "midpoint";
  bool euler_at_final = false;
  // UniPC.
  bool predict_x0 = true;
  std::vector<int64_t> disable_corrector{};
  // LCM.
  int64_t original_inference_steps = 50;
  double timestep_scaling = 10.0;
  // Flow matching.
  double shift = 1.0;
  bool use_dynamic_shifting = false;
  double base_shift = 0.5;
  double max_shift = 1.15;
  int64_t base_image_seq_len = 256;
  int64_t max_image_seq_len = 4096;
};

// Note [no host sync per step]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// On a GPU the loop's thread queues a step's kernels and goes on; anything
// that waits for the device (reading a device value, a blocking copy)
// drains the queue every step. So a schedule's scalars (sigmas, alphas,
// timesteps) stay on the host and are read there, step arithmetic with
// them passes host scalars to device kernels, and the few small tensors a
// step moves to the device (a timestep, a solver's coefficients, noise drawn
// on the run's CPU generator) go non-blocking.
//
// A Scheduler restores the RunSchedules of its runs from checkpoints.
class Scheduler : public RunStateRestorer {
 public:
  // "ddim_scheduler", ...
  virtual absl::string_view type_name() const = 0;
  const SchedulerConfig& config() const { return config_; }
  // float32 [num_train_timesteps] on the CPU.
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }
  // Whether the model predicts a flow-matching velocity: such a scheduler
  // does not scale its initial noise, and `mu` may come from the latents.
  virtual bool flow_matching() const { return false; }

  // diffusers' set_timesteps. INVALID_ARGUMENT naming num_inference_steps
  // when it is < 1 or above what the scheduler allows.
  virtual absl::StatusOr<Schedule> SetTimesteps(
      const ScheduleRequest& request) const = 0;
  absl::StatusOr<Schedule> SetTimesteps(int64_t num_inference_steps) const {
    return SetTimesteps(
        ScheduleRequest{.num_inference_steps = num_inference_steps});
  }

  // diffusers' scale_model_input for step `step_index`; most return
  // `sample` itself.
  virtual at::Tensor ScaleModelInput(const Schedule& schedule,
                                     const at::Tensor& sample,
                                     int64_t step_index) const;

  // diffusers' step at `step_index`: the next sample and the predicted x0.
  // Multistep schedulers update `schedule`'s memory.
  virtual absl::StatusOr<StepResult> Step(Schedule& schedule,
                                          const at::Tensor& model_output,
                                          int64_t step_index,
                                          const at::Tensor& sample,
                                          const StepOptions& options) const = 0;

  // diffusers' add_noise (flow matching's scale_noise) at the schedule's
  // begin_index: `original` (float32 latents) noised with `noise` to the
  // level the run starts at, as an image-to-image pipeline prepares its
  // latents. The default is the DDPM form, √ā·x0 + √(1 − ā)·ε at that
  // timestep (DDIM, LCM).
  virtual at::Tensor AddNoise(const Schedule& schedule,
                              const at::Tensor& original,
                              const at::Tensor& noise) const;

  // RunStateRestorer: a RunSchedule of this scheduler.
  absl::StatusOr<c10::intrusive_ptr<RunState>> RestoreRunState(
      const c10::IValue& saved, const RunStateOwner& owner) const override;

 protected:
  explicit Scheduler(SchedulerConfig config);

  absl::Status CheckStepCount(int64_t num_inference_steps) const;
  absl::Status CheckStepIndex(const Schedule& schedule,
                              int64_t step_index) const;
  // DDIM's and DDPM's set_timesteps: `n` integer timesteps spaced as
  // timestep_spacing says.
  absl::StatusOr<Schedule> SpacedDiscreteSchedule(int64_t n) const;
  // DDIM's and LCM's ā before the first training step: 1 with
  // set_alpha_to_one, else ā_0.
  float FinalAlphaCumprod() const;
  // One randn of `like`'s shape from the run's generator, drawn on the CPU
  // in `dtype` (`like`'s when unset) and moved to `like`'s device, as
  // diffusers' randn_tensor draws with a CPU generator. FAILED_PRECONDITION
  // naming `who` when there is no generator.
  static absl::StatusOr<at::Tensor> DrawNoise(
      const at::Tensor& like, const StepOptions& options, absl::string_view who,
      std::optional<at::ScalarType> dtype = std::nullopt);

  SchedulerConfig config_;
  at::Tensor alphas_cumprod_;
};

// A run's scheduler (the one it picked, bound as `owner` says) and its
// schedule, which the scheduler's steps update: per run, carried through the
// pipeline state, and saved in checkpoints with everything a multistep
// solver remembers.
class RunSchedule final : public RunState {
 public:
  RunSchedule(const Scheduler* scheduler, RunStateOwner owner,
              Schedule schedule)
      : scheduler(scheduler),
        schedule(std::move(schedule)),
        owner_(std::move(owner)) {}

  RunStateOwner owner() const override { return owner_; }
  absl::StatusOr<c10::IValue> Save() const override;

  const Scheduler* const scheduler;
  Schedule schedule;

 private:
  const RunStateOwner owner_;
};

class DdimScheduler final : public Scheduler {
 public:
  static constexpr absl::string_view kTypeName = "ddim_scheduler";
  explicit DdimScheduler(SchedulerConfig config);

  using Scheduler::SetTimesteps;
  absl::string_view type_name() const override { return kTypeName; }
  absl::StatusOr<Schedule> SetTimesteps(
      const ScheduleRequest& request) const override;
  absl::StatusOr<StepResult> Step(Schedule& schedule,
                                  const at::Tensor& model_output,
                                  int64_t step_index, const at::Tensor& sample,
                                  const StepOptions& options) const override;

 private:
  // ā at `timestep`, or final_alpha_cumprod for a timestep < 0.
  float AlphaProd(int64_t timestep) const;

  float final_alpha_cumprod_;
};

// DDPMScheduler: ancestral sampling, drawing noise from the run's
// generator at every step but the one at t = 0.
class DdpmScheduler final : public Scheduler {
 public:
  static constexpr absl::string_view kTypeName = "ddpm_scheduler";
  explicit DdpmScheduler(SchedulerConfig config)
      : Scheduler(std::move(config)) {}

  using Scheduler::SetTimesteps;
  absl::string_view type_name() const override { return kTypeName; }
  absl::StatusOr<Schedule> SetTimesteps(
      const ScheduleRequest& request) const override;
  absl::StatusOr<StepResult> Step(Schedule& schedule,
                                  const at::Tensor& model_output,
                                  int64_t step_index, const at::Tensor& sample,
                                  const StepOptions& options) const override;
};

// EulerDiscreteScheduler, and with `ancestral` EulerAncestralDiscrete-
// Scheduler: the same schedule, a deterministic or a stochastic step.
class EulerScheduler final : public Scheduler {
 public:
  static constexpr absl::string_view kTypeName = "euler_scheduler";
  static constexpr absl::string_view kAncestralTypeName =
      "euler_ancestral_scheduler";
  EulerScheduler(SchedulerConfig config, bool ancestral);

  using Scheduler::SetTimesteps;
  absl::string_view type_name() const override {
    return ancestral_ ? kAncestralTypeName : kTypeName;
  }
  absl::StatusOr<Schedule> SetTimesteps(
      const ScheduleRequest& request) const override;
  at::Tensor ScaleModelInput(const Schedule& schedule, const at::Tensor& sample,
                             int64_t step_index) const override;
  absl::StatusOr<StepResult> Step(Schedule& schedule,
                                  const at::Tensor& model_output,
                                  int64_t step_index, const at::Tensor& sample,
                                  const StepOptions& options) const override;
  at::Tensor AddNoise(const Schedule& schedule, const at::Tensor& original,
                      const at::Tensor& noise) const override;

 private:
  at::Tensor training_sigmas_;
  bool ancestral_;
};

class DpmSolverMultistepScheduler final : public Scheduler {
 public:
  static constexpr absl::string_view kTypeName =
      "dpm_solver_multistep_scheduler";
  explicit DpmSolverMultistepScheduler(SchedulerConfig config);

  using Scheduler::SetTimesteps;
  absl::string_view type_name() const override { return kTypeName; }
  absl::StatusOr<Schedule> SetTimesteps(
      const ScheduleRequest& request) const override;
  absl::StatusOr<StepResult> Step(Schedule& schedule,
                                  const at::Tensor& model_output,
                                  int64_t step_index, const at::Tensor& sample,
                                  const StepOptions& options) const override;
  at::Tensor AddNoise(const Schedule& schedule, const at::Tensor& original,
                      const at::Tensor& noise) const override;
};

class UniPcMultistepScheduler final : public Scheduler {
 public:
  static constexpr absl::string_view kTypeName = "unipc_multistep_scheduler";
  explicit UniPcMultistepScheduler(SchedulerConfig config);

  using Scheduler::SetTimesteps;
  absl::string_view type_name() const override { return kTypeName; }
  absl::StatusOr<Schedule> SetTimesteps(
      const ScheduleRequest& request) const override;
  absl::StatusOr<StepResult> Step(Schedule& schedule,
                                  const at::Tensor& model_output,
                                  int64_t step_index, const at::Tensor& sample,
                                  const StepOptions& options) const override;
  at::Tensor AddNoise(const Schedule& schedule, const at::Tensor& original,
                      const at::Tensor& noise) const override;

 private:
  at::Tensor Predictor(const Schedule& schedule, int64_t step_index,
                       const at::Tensor& sample, int64_t order) const;
  at::Tensor Corrector(const Schedule& schedule, int64_t step_index,
                       const at::Tensor& model_output, int64_t order) const;
};

class LcmScheduler final : public Scheduler {
 public:
  static constexpr absl::string_view kTypeName = "lcm_scheduler";
  explicit LcmScheduler(SchedulerConfig config);

  using Scheduler::SetTimesteps;
  absl::string_view type_name() const override { return kTypeName; }
  absl::StatusOr<Schedule> SetTimesteps(
      const ScheduleRequest& request) const override;
  absl::StatusOr<StepResult> Step(Schedule& schedule,
                                  const at::Tensor& model_output,
                                  int64_t step_index, const at::Tensor& sample,
                                  const StepOptions& options) const override;

 private:
  float final_alpha_cumprod_;
};

class FlowMatchEulerScheduler final : public Scheduler {
 public:
  static constexpr absl::string_view kTypeName = "flow_match_euler_scheduler";
  explicit FlowMatchEulerScheduler(SchedulerConfig config);

  using Scheduler::SetTimesteps;
  absl::string_view type_name() const override { return kTypeName; }
  bool flow_matching() const override { return true; }
  absl::StatusOr<Schedule> SetTimesteps(
      const ScheduleRequest& request) const override;
  absl::StatusOr<StepResult> Step(Schedule& schedule,
                                  const at::Tensor& model_output,
                                  int64_t step_index, const at::Tensor& sample,
                                  const StepOptions& options) const override;
  at::Tensor AddNoise(const Schedule& schedule, const at::Tensor& original,
                      const at::Tensor& noise) const override;

  // diffusers' calculate_shift: mu for a sequence of `image_seq_len`.
  double CalculateShift(int64_t image_seq_len) const;

 private:
  // The training sigmas' ends, after the static shift (diffusers'
  // sigma_max and sigma_min).
  double sigma_max_;
  double sigma_min_;
};

}  // namespace loopserve
