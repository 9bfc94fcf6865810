// The single-step schedulers (DDIM, Euler, Euler ancestral, LCM, flow
// matching), what every scheduler shares, and registration. The multistep
// solvers are in multistep_schedulers.cc.
//
// Scalar arithmetic is float32 where diffusers computes on 0-d float32
// tensors, through the same libtorch kernels for sqrt, log, exp and expm1
// (scheduler_internal.h), double where it computes in numpy float64, in the
// same order.
#include "blocks/diffusion/schedulers.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "blocks/diffusion/scheduler_internal.h"
#include "util/status_macros.h"

namespace loopserve {
namespace internal {

std::vector<double> SpacedTimesteps(const SchedulerConfig& config, int64_t n,
                                    bool round_linspace) {
  const int64_t train = config.noise.num_train_timesteps;
  std::vector<double> t;
  if (config.timestep_spacing == "linspace") {
    t = Linspace(0, static_cast<double>(train - 1), n);
    if (round_linspace) {
      for (double& v : t) v = std::nearbyint(v);  // numpy rounds half to even
    }
    std::reverse(t.begin(), t.end());
  } else if (config.timestep_spacing == "leading") {
    const int64_t ratio = train / n;
    for (int64_t i = n - 1; i >= 0; --i) {
      t.push_back(static_cast<double>(i * ratio + config.steps_offset));
    }
  } else {  // trailing
    const double ratio = static_cast<double>(train) / static_cast<double>(n);
    t = Arange(static_cast<double>(train), 0, -ratio);
    for (double& v : t) v = std::nearbyint(v) - 1;
  }
  return t;
}

at::Tensor CpuTensor(const std::vector<double>& values, at::ScalarType dtype) {
  return at::tensor(values, at::TensorOptions().dtype(at::kDouble)).to(dtype);
}

std::vector<float> ToFloats(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

absl::Status CheckTrainingRange(const std::vector<double>& timesteps,
                                const SchedulerConfig& config, int64_t n) {
  for (double v : timesteps) {
    if (v < 0 || v >= static_cast<double>(config.noise.num_train_timesteps)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input 'num_inference_steps' = ", n,
                       " with steps_offset ", config.steps_offset,
                       " gives timestep ", v, ", outside the training range"));
    }
  }
  return absl::OkStatus();
}

Schedule DiscreteSchedule(const std::vector<double>& timesteps,
                          const at::Tensor& alphas_cumprod) {
  Schedule schedule;
  schedule.timesteps = CpuTensor(timesteps, at::kLong);
  // Not used by their steps; reported so that every scheduler's schedule
  // says its noise levels.
  const at::Tensor sigmas =
      TrainingSigmas(alphas_cumprod).index_select(0, schedule.timesteps);
  schedule.sigmas = at::cat({sigmas, at::zeros({1}, sigmas.options())});
  return schedule;
}

namespace {

template <at::Tensor (*Op)(const at::Tensor&)>
float OnScalarTensor(float x) {
  return Op(at::scalar_tensor(x, at::TensorOptions().dtype(at::kFloat)))
      .item<float>();
}

}  // namespace

float TorchSqrt(float x) { return OnScalarTensor<&at::sqrt>(x); }
float TorchLog(float x) { return OnScalarTensor<&at::log>(x); }
float TorchExp(float x) { return OnScalarTensor<&at::exp>(x); }
float TorchExpm1(float x) { return OnScalarTensor<&at::expm1>(x); }

at::Tensor PredictOriginal(const SchedulerConfig& config,
                           const at::Tensor& sample,
                           const at::Tensor& model_output, float sqrt_alpha_t,
                           float sqrt_beta_t) {
  if (config.prediction_type == "epsilon") {
    return (sample - sqrt_beta_t * model_output) / sqrt_alpha_t;
  }
  if (config.prediction_type == "v_prediction") {
    return sqrt_alpha_t * sample - sqrt_beta_t * model_output;
  }
  return model_output;  // sample
}

at::Tensor ClipSample(const SchedulerConfig& config, at::Tensor x0) {
  if (!config.clip_sample) return x0;
  return x0.clamp(-config.clip_sample_range, config.clip_sample_range);
}

}  // namespace internal

using internal::CpuTensor;
using internal::TorchSqrt;

Scheduler::Scheduler(SchedulerConfig config)
    : config_(std::move(config)),
      alphas_cumprod_(config_.noise.AlphasCumprod()) {}

at::Tensor Scheduler::ScaleModelInput(const Schedule&, const at::Tensor& sample,
                                      int64_t) const {
  return sample;
}

at::Tensor Scheduler::AddNoise(const Schedule& schedule,
                               const at::Tensor& original,
                               const at::Tensor& noise) const {
  const int64_t t =
      schedule.timesteps.data_ptr<int64_t>()[schedule.begin_index];
  const float alpha_prod = alphas_cumprod_.data_ptr<float>()[t];
  return TorchSqrt(alpha_prod) * original +
         TorchSqrt(1.0f - alpha_prod) * noise;
}

absl::Status Scheduler::CheckStepCount(int64_t n) const {
  if (n < 1 || n > config_.noise.num_train_timesteps) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'num_inference_steps' must be in [1, ",
                     config_.noise.num_train_timesteps, "] (the scheduler's ",
                     "num_train_timesteps), got ", n));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::CheckStepIndex(const Schedule& schedule,
                                       int64_t step_index) const {
  if (step_index < 0 || step_index >= schedule.size()) {
    return absl::OutOfRangeError(absl::StrCat("step ", step_index,
                                              " is outside the schedule of ",
                                              schedule.size(), " steps"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Schedule> Scheduler::SpacedDiscreteSchedule(int64_t n) const {
  RETURN_IF_ERROR(CheckStepCount(n));
  const std::vector<double> t =
      internal::SpacedTimesteps(config_, n, /*round_linspace=*/true);
  RETURN_IF_ERROR(internal::CheckTrainingRange(t, config_, n));
  return internal::DiscreteSchedule(t, alphas_cumprod_);
}

float Scheduler::FinalAlphaCumprod() const {
  return config_.set_alpha_to_one ? 1.0f : alphas_cumprod_[0].item<float>();
}

absl::StatusOr<at::Tensor> Scheduler::DrawNoise(
    const at::Tensor& like, const StepOptions& options, absl::string_view who,
    std::optional<at::ScalarType> dtype) {
  if (options.generator == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(who,
                     " draws noise every step and needs the run's "
                     "generator"));
  }
  // Drawn on the CPU, then moved: a seed gives the same noise on every
  // device. The move does not wait for the device (Note [no host sync per
  // step] in schedulers.h).
  const at::ScalarType type = dtype.value_or(like.scalar_type());
  return at::randn(like.sizes(), *options.generator,
                   at::TensorOptions().dtype(type))
      .to(like.device(), type, /*non_blocking=*/true);
}

// ---- DDIM ----

DdimScheduler::DdimScheduler(SchedulerConfig config)
    : Scheduler(std::move(config)), final_alpha_cumprod_(FinalAlphaCumprod()) {}

float DdimScheduler::AlphaProd(int64_t timestep) const {
  if (timestep < 0) return final_alpha_cumprod_;
  return alphas_cumprod_.data_ptr<float>()[timestep];
}

absl::StatusOr<Schedule> DdimScheduler::SetTimesteps(
    const ScheduleRequest& request) const {
  return SpacedDiscreteSchedule(request.num_inference_steps);
}

absl::StatusOr<StepResult> DdimScheduler::Step(
    Schedule& schedule, const at::Tensor& model_output, int64_t step_index,
    const at::Tensor& sample, const StepOptions& options) const {
  RETURN_IF_ERROR(CheckStepIndex(schedule, step_index));
  const int64_t timestep = schedule.timesteps.data_ptr<int64_t>()[step_index];
  const int64_t prev_timestep =
      timestep - config_.noise.num_train_timesteps / schedule.size();

  const float alpha_prod_t = AlphaProd(timestep);
  const float alpha_prod_t_prev = AlphaProd(prev_timestep);
  const float beta_prod_t = 1.0f - alpha_prod_t;
  const float sqrt_alpha_t = TorchSqrt(alpha_prod_t);
  const float sqrt_beta_t = TorchSqrt(beta_prod_t);

  at::Tensor pred_original_sample = internal::PredictOriginal(
      config_, sample, model_output, sqrt_alpha_t, sqrt_beta_t);
  // ε from the unclipped x0, as diffusers' DDIM step.
  const at::Tensor pred_epsilon =
      config_.prediction_type == "epsilon" ? model_output
      : config_.prediction_type == "v_prediction"
          ? sqrt_alpha_t * model_output + sqrt_beta_t * sample
          : (sample - sqrt_alpha_t * pred_original_sample) / sqrt_beta_t;
  pred_original_sample =
      internal::ClipSample(config_, std::move(pred_original_sample));

  const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
  const float variance = (beta_prod_t_prev / beta_prod_t) *
                         (1.0f - alpha_prod_t / alpha_prod_t_prev);
  const float std_dev_t = static_cast<float>(options.eta) * TorchSqrt(variance);
  const float direction_scale =
      TorchSqrt(1.0f - alpha_prod_t_prev - std_dev_t * std_dev_t);
  at::Tensor prev_sample = TorchSqrt(alpha_prod_t_prev) * pred_original_sample +
                           direction_scale * pred_epsilon;

  if (options.eta > 0) {
    ASSIGN_OR_RETURN(const at::Tensor noise,
                     DrawNoise(model_output, options, "DDIM with eta > 0"));
    prev_sample = prev_sample + std_dev_t * noise;
  }
  return StepResult{.prev_sample = std::move(prev_sample),
                    .pred_original_sample = std::move(pred_original_sample)};
}

// ---- DDPM ----

absl::StatusOr<Schedule> DdpmScheduler::SetTimesteps(
    const ScheduleRequest& request) const {
  return SpacedDiscreteSchedule(request.num_inference_steps);
}

absl::StatusOr<StepResult> DdpmScheduler::Step(
    Schedule& schedule, const at::Tensor& model_output, int64_t step_index,
    const at::Tensor& sample, const StepOptions& options) const {
  RETURN_IF_ERROR(CheckStepIndex(schedule, step_index));
  const int64_t* timesteps = schedule.timesteps.data_ptr<int64_t>();
  const int64_t timestep = timesteps[step_index];
  // diffusers' previous_timestep: the next one of the schedule, -1 last.
  const int64_t prev_timestep =
      step_index + 1 < schedule.size() ? timesteps[step_index + 1] : -1;
  const float* alphas = alphas_cumprod_.data_ptr<float>();
  const float alpha_prod_t = alphas[timestep];
  const float alpha_prod_t_prev =
      prev_timestep >= 0 ? alphas[prev_timestep] : 1.0f;
  const float beta_prod_t = 1.0f - alpha_prod_t;
  const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
  const float current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
  const float current_beta_t = 1.0f - current_alpha_t;

  at::Tensor pred_original_sample = internal::ClipSample(
      config_, internal::PredictOriginal(config_, sample, model_output,
                                         TorchSqrt(alpha_prod_t),
                                         TorchSqrt(beta_prod_t)));
  const float original_coeff =
      (TorchSqrt(alpha_prod_t_prev) * current_beta_t) / beta_prod_t;
  const float sample_coeff =
      TorchSqrt(current_alpha_t) * beta_prod_t_prev / beta_prod_t;
  at::Tensor prev_sample =
      original_coeff * pred_original_sample + sample_coeff * sample;
  if (timestep > 0) {
    ASSIGN_OR_RETURN(const at::Tensor noise,
                     DrawNoise(model_output, options, "DDPM"));
    float variance = current_beta_t;  // fixed_large
    if (config_.variance_type == "fixed_small") {
      variance = std::max(
          (1.0f - alpha_prod_t_prev) / (1.0f - alpha_prod_t) * current_beta_t,
          1e-20f);
    }
    prev_sample = prev_sample + TorchSqrt(variance) * noise;
  }
  return StepResult{.prev_sample = std::move(prev_sample),
                    .pred_original_sample = std::move(pred_original_sample)};
}

// ---- Euler and Euler ancestral ----

EulerScheduler::EulerScheduler(SchedulerConfig config, bool ancestral)
    : Scheduler(std::move(config)),
      training_sigmas_(TrainingSigmas(alphas_cumprod_)),
      ancestral_(ancestral) {}

absl::StatusOr<Schedule> EulerScheduler::SetTimesteps(
    const ScheduleRequest& request) const {
  const int64_t n = request.num_inference_steps;
  RETURN_IF_ERROR(CheckStepCount(n));
  std::vector<double> t =
      internal::SpacedTimesteps(config_, n, /*round_linspace=*/false);
  // diffusers casts the timesteps to float32 before interpolating.
  at::Tensor timesteps = CpuTensor(t, at::kFloat);
  const float* t32 = timesteps.data_ptr<float>();
  std::vector<double> sigmas;
  sigmas.reserve(n + 1);
  for (int64_t i = 0; i < n; ++i) {
    sigmas.push_back(InterpolateSigma(training_sigmas_, t32[i]));
  }
  if (config_.use_karras_sigmas) {
    sigmas = KarrasSigmas(sigmas.back(), sigmas.front(), n);
    std::vector<float> log_sigmas;
    for (float s : internal::ToFloats(training_sigmas_)) {
      log_sigmas.push_back(std::log(s));
    }
    std::vector<double> karras_t;
    for (double sigma : sigmas) {
      karras_t.push_back(SigmaToT(sigma, log_sigmas));
    }
    timesteps = CpuTensor(karras_t, at::kFloat);
  }
  sigmas.push_back(0.0);
  Schedule schedule;
  schedule.timesteps = std::move(timesteps);
  schedule.sigmas = CpuTensor(sigmas, at::kFloat);

  const float max_sigma = schedule.sigmas.max().item<float>();
  schedule.init_noise_sigma = (config_.timestep_spacing == "linspace" ||
                               config_.timestep_spacing == "trailing")
                                  ? max_sigma
                                  : TorchSqrt(max_sigma * max_sigma + 1.0f);
  return schedule;
}

at::Tensor EulerScheduler::ScaleModelInput(const Schedule& schedule,
                                           const at::Tensor& sample,
                                           int64_t step_index) const {
  const float sigma = schedule.sigmas.data_ptr<float>()[step_index];
  return sample / TorchSqrt(sigma * sigma + 1.0f);
}

at::Tensor EulerScheduler::AddNoise(const Schedule& schedule,
                                    const at::Tensor& original,
                                    const at::Tensor& noise) const {
  const float sigma = schedule.sigmas.data_ptr<float>()[schedule.begin_index];
  return original + noise * sigma;
}

absl::StatusOr<StepResult> EulerScheduler::Step(
    Schedule& schedule, const at::Tensor& model_output, int64_t step_index,
    const at::Tensor& sample_in, const StepOptions& options) const {
  RETURN_IF_ERROR(CheckStepIndex(schedule, step_index));
  // s_churn = 0 (diffusers' default): gamma = 0, sigma_hat = sigma.
  const float* sigmas = schedule.sigmas.data_ptr<float>();
  const float sigma = sigmas[step_index];
  const at::Tensor sample = sample_in.to(at::kFloat);

  at::Tensor pred_original_sample;
  if (config_.prediction_type == "epsilon") {
    pred_original_sample = sample - sigma * model_output;
  } else if (config_.prediction_type == "v_prediction") {
    const float s2 = sigma * sigma + 1.0f;
    pred_original_sample =
        model_output * (-sigma / TorchSqrt(s2)) + sample / s2;
  } else {  // sample (Euler only)
    pred_original_sample = model_output;
  }
  const at::Tensor derivative = (sample - pred_original_sample) / sigma;
  const float sigma_to = sigmas[step_index + 1];
  if (!ancestral_) {
    const float dt = sigma_to - sigma;
    return StepResult{
        .prev_sample =
            (sample + derivative * dt).to(model_output.scalar_type()),
        .pred_original_sample = std::move(pred_original_sample)};
  }
  // Ancestral: step down to sigma_down, then add fresh noise of sigma_up.
  const float sigma_from = sigma;
  const float sigma_up = TorchSqrt(
      sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) /
      (sigma_from * sigma_from));
  const float sigma_down = TorchSqrt(sigma_to * sigma_to - sigma_up * sigma_up);
  const float dt = sigma_down - sigma;
  at::Tensor prev_sample = sample + derivative * dt;
  ASSIGN_OR_RETURN(const at::Tensor noise,
                   DrawNoise(model_output, options, "Euler ancestral"));
  prev_sample = prev_sample + noise * sigma_up;
  return StepResult{.prev_sample = prev_sample.to(model_output.scalar_type()),
                    .pred_original_sample = std::move(pred_original_sample)};
}

// ---- LCM ----

LcmScheduler::LcmScheduler(SchedulerConfig config)
    : Scheduler(std::move(config)), final_alpha_cumprod_(FinalAlphaCumprod()) {}

absl::StatusOr<Schedule> LcmScheduler::SetTimesteps(
    const ScheduleRequest& request) const {
  const int64_t n = request.num_inference_steps;
  RETURN_IF_ERROR(CheckStepCount(n));
  const int64_t original = config_.original_inference_steps;
  if (n > original) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'num_inference_steps' must be at most the LCM scheduler's "
        "original_inference_steps (",
        original, "), got ", n));
  }
  // The distillation schedule, every k-th training timestep, reversed; then
  // n of its indices, evenly spaced.
  const int64_t k = config_.noise.num_train_timesteps / original;
  std::vector<int64_t> origin;
  for (int64_t i = original; i >= 1; --i) origin.push_back(i * k - 1);
  const double spacing =
      static_cast<double>(origin.size()) / static_cast<double>(n);
  std::vector<double> t;
  for (int64_t i = 0; i < n; ++i) {
    const auto index =
        static_cast<size_t>(std::floor(static_cast<double>(i) * spacing));
    t.push_back(static_cast<double>(origin[index]));
  }
  return internal::DiscreteSchedule(t, alphas_cumprod_);
}

absl::StatusOr<StepResult> LcmScheduler::Step(
    Schedule& schedule, const at::Tensor& model_output, int64_t step_index,
    const at::Tensor& sample, const StepOptions& options) const {
  RETURN_IF_ERROR(CheckStepIndex(schedule, step_index));
  const int64_t* timesteps = schedule.timesteps.data_ptr<int64_t>();
  const int64_t timestep = timesteps[step_index];
  const int64_t prev_timestep =
      step_index + 1 < schedule.size() ? timesteps[step_index + 1] : timestep;
  const float* alphas = alphas_cumprod_.data_ptr<float>();
  const float alpha_prod_t = alphas[timestep];
  const float alpha_prod_t_prev =
      prev_timestep >= 0 ? alphas[prev_timestep] : final_alpha_cumprod_;
  const float beta_prod_t = 1.0f - alpha_prod_t;
  const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;

  // The consistency model's boundary condition (sigma_data = 0.5).
  const float scaled = static_cast<float>(timestep) *
                       static_cast<float>(config_.timestep_scaling);
  // Python's `0.25 / tensor` is reciprocal(tensor) * 0.25.
  const float c_skip = (1.0f / (scaled * scaled + 0.25f)) * 0.25f;
  const float c_out = scaled / TorchSqrt(scaled * scaled + 0.25f);

  at::Tensor x0;
  if (config_.prediction_type == "epsilon") {
    x0 = (sample - TorchSqrt(beta_prod_t) * model_output) /
         TorchSqrt(alpha_prod_t);
  } else if (config_.prediction_type == "sample") {
    x0 = model_output;
  } else {  // v_prediction
    x0 = TorchSqrt(alpha_prod_t) * sample -
         TorchSqrt(beta_prod_t) * model_output;
  }
  if (config_.clip_sample) {
    x0 = x0.clamp(-config_.clip_sample_range, config_.clip_sample_range);
  }
  at::Tensor denoised = c_out * x0 + c_skip * sample;
  // Fresh noise at every step but the last.
  at::Tensor prev_sample = denoised;
  if (step_index != schedule.size() - 1) {
    ASSIGN_OR_RETURN(const at::Tensor noise,
                     DrawNoise(denoised, options, "LCM"));
    prev_sample = TorchSqrt(alpha_prod_t_prev) * denoised +
                  TorchSqrt(beta_prod_t_prev) * noise;
  }
  return StepResult{.prev_sample = std::move(prev_sample),
                    .pred_original_sample = std::move(denoised)};
}

// ---- flow matching ----

namespace {

// diffusers' static shift, in T (float32 on a tensor, double in numpy).
template <typename T>
T Shifted(double shift, T sigma) {
  return static_cast<T>(shift) * sigma /
         (T{1} + static_cast<T>(shift - 1) * sigma);
}

// diffusers' time_shift(mu, 1, t) in T.
template <typename T>
T TimeShifted(double mu, T sigma) {
  const auto e = static_cast<T>(std::exp(mu));
  return e / (e + (T{1} / sigma - T{1}));
}

}  // namespace

FlowMatchEulerScheduler::FlowMatchEulerScheduler(SchedulerConfig config)
    : Scheduler(std::move(config)) {
  // diffusers' __init__: the training sigmas t / N, float32, shifted unless
  // the shift is dynamic; sigma_max and sigma_min are their ends.
  const int64_t train = config_.noise.num_train_timesteps;
  auto training_sigma = [&](int64_t t) {
    float sigma = static_cast<float>(t) / static_cast<float>(train);
    if (!config_.use_dynamic_shifting) sigma = Shifted(config_.shift, sigma);
    return static_cast<double>(sigma);
  };
  sigma_max_ = training_sigma(train);
  sigma_min_ = training_sigma(1);
}

double FlowMatchEulerScheduler::CalculateShift(int64_t image_seq_len) const {
  const double m = (config_.max_shift - config_.base_shift) /
                   static_cast<double>(config_.max_image_seq_len -
                                       config_.base_image_seq_len);
  const double b =
      config_.base_shift - m * static_cast<double>(config_.base_image_seq_len);
  return static_cast<double>(image_seq_len) * m + b;
}

absl::StatusOr<Schedule> FlowMatchEulerScheduler::SetTimesteps(
    const ScheduleRequest& request) const {
  std::optional<double> mu = request.mu;
  if (config_.use_dynamic_shifting && !mu.has_value()) {
    if (request.image_seq_len <= 0) {
      return absl::InvalidArgumentError(
          "input 'mu' is required: the scheduler shifts dynamically and the "
          "latents' size is unknown");
    }
    mu = CalculateShift(request.image_seq_len);
  }
  const int64_t train = config_.noise.num_train_timesteps;
  std::vector<float> sigmas32;
  if (request.sigmas.empty()) {
    const int64_t n = request.num_inference_steps;
    RETURN_IF_ERROR(CheckStepCount(n));
    // numpy, float64.
    for (double t : Linspace(sigma_max_ * static_cast<double>(train),
                             sigma_min_ * static_cast<double>(train), n)) {
      double sigma = t / static_cast<double>(train);
      sigma = config_.use_dynamic_shifting ? TimeShifted(*mu, sigma)
                                           : Shifted(config_.shift, sigma);
      sigmas32.push_back(static_cast<float>(sigma));
    }
  } else {
    const auto n = static_cast<int64_t>(request.sigmas.size());
    if (n > train) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'sigmas' has ", n, " values, above the scheduler's ",
          "num_train_timesteps (", train, ")"));
    }
    // numpy, float32: the given sigmas are cast first.
    for (double given : request.sigmas) {
      if (!(given > 0 && given <= 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input 'sigmas' must hold values in (0, 1], got ", given));
      }
      auto sigma = static_cast<float>(given);
      sigma = config_.use_dynamic_shifting ? TimeShifted(*mu, sigma)
                                           : Shifted(config_.shift, sigma);
      sigmas32.push_back(sigma);
    }
  }
  Schedule schedule;
  const at::Tensor sigmas =
      at::tensor(sigmas32, at::TensorOptions().dtype(at::kFloat));
  schedule.timesteps = sigmas * static_cast<float>(train);
  schedule.sigmas = at::cat({sigmas, at::zeros({1}, sigmas.options())});
  return schedule;
}

at::Tensor FlowMatchEulerScheduler::AddNoise(const Schedule& schedule,
                                             const at::Tensor& original,
                                             const at::Tensor& noise) const {
  const float sigma = schedule.sigmas.data_ptr<float>()[schedule.begin_index];
  return sigma * noise + (1.0f - sigma) * original;
}

absl::StatusOr<StepResult> FlowMatchEulerScheduler::Step(
    Schedule& schedule, const at::Tensor& model_output, int64_t step_index,
    const at::Tensor& sample_in, const StepOptions&) const {
  RETURN_IF_ERROR(CheckStepIndex(schedule, step_index));
  const float* sigmas = schedule.sigmas.data_ptr<float>();
  const float sigma = sigmas[step_index];
  const float sigma_next = sigmas[step_index + 1];
  const at::Tensor sample = sample_in.to(at::kFloat);
  at::Tensor prev_sample = sample + (sigma_next - sigma) * model_output;
  return StepResult{.prev_sample = prev_sample.to(model_output.scalar_type()),
                    .pred_original_sample = sample - sigma * model_output};
}

// ---- Checkpoints: RunSchedule's state ----

absl::StatusOr<c10::IValue> RunSchedule::Save() const {
  c10::impl::GenericDict saved(c10::StringType::get(), c10::AnyType::get());
  saved.insert("timesteps", schedule.timesteps);
  saved.insert("sigmas", schedule.sigmas);
  saved.insert("init_noise_sigma", schedule.init_noise_sigma);
  saved.insert("lambdas", at::tensor(schedule.lambdas, at::kFloat));
  c10::impl::GenericList outputs(c10::TensorType::get());
  for (const at::Tensor& output : schedule.model_outputs) {
    outputs.push_back(output);
  }
  saved.insert("model_outputs", std::move(outputs));
  saved.insert("lower_order_nums", schedule.lower_order_nums);
  saved.insert("last_sample", schedule.last_sample.defined()
                                  ? c10::IValue(schedule.last_sample)
                                  : c10::IValue());
  saved.insert("this_order", schedule.this_order);
  saved.insert("begin_index", schedule.begin_index);
  return c10::IValue(std::move(saved));
}

absl::StatusOr<c10::intrusive_ptr<RunState>> Scheduler::RestoreRunState(
    const c10::IValue& saved, const RunStateOwner& owner) const {
  auto error = [](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("a saved schedule's '", what, "' is missing or invalid"));
  };
  if (!saved.isGenericDict()) return error("schedule");
  const c10::impl::GenericDict dict = saved.toGenericDict();
  auto get = [&dict](const char* key) -> const c10::IValue* {
    auto it = dict.find(key);
    return it == dict.end() ? nullptr : &it->value();
  };
  auto tensor = [&](const char* key,
                    bool optional) -> absl::StatusOr<at::Tensor> {
    const c10::IValue* value = get(key);
    if (value != nullptr && value->isTensor()) return value->toTensor();
    if (optional && value != nullptr && value->isNone()) return at::Tensor();
    return error(key);
  };
  auto integer = [&](const char* key) -> absl::StatusOr<int64_t> {
    const c10::IValue* value = get(key);
    if (value == nullptr || !value->isInt()) return error(key);
    return value->toInt();
  };
  Schedule schedule;
  ASSIGN_OR_RETURN(schedule.timesteps, tensor("timesteps", false));
  ASSIGN_OR_RETURN(schedule.sigmas, tensor("sigmas", false));
  const c10::IValue* sigma = get("init_noise_sigma");
  if (sigma == nullptr || !sigma->isDouble()) return error("init_noise_sigma");
  schedule.init_noise_sigma = sigma->toDouble();
  ASSIGN_OR_RETURN(const at::Tensor lambdas, tensor("lambdas", false));
  if (lambdas.scalar_type() != at::kFloat || lambdas.dim() != 1) {
    return error("lambdas");
  }
  const at::Tensor contiguous = lambdas.contiguous();
  schedule.lambdas.assign(contiguous.data_ptr<float>(),
                          contiguous.data_ptr<float>() + contiguous.numel());
  const c10::IValue* outputs = get("model_outputs");
  if (outputs == nullptr || !outputs->isList()) return error("model_outputs");
  for (const c10::IValue& output : outputs->toListRef()) {
    if (!output.isTensor()) return error("model_outputs");
    schedule.model_outputs.push_back(output.toTensor());
  }
  ASSIGN_OR_RETURN(schedule.lower_order_nums, integer("lower_order_nums"));
  ASSIGN_OR_RETURN(schedule.last_sample, tensor("last_sample", true));
  ASSIGN_OR_RETURN(schedule.this_order, integer("this_order"));
  ASSIGN_OR_RETURN(schedule.begin_index, integer("begin_index"));
  if (schedule.timesteps.dim() != 1 || schedule.sigmas.dim() != 1 ||
      schedule.begin_index < 0 || schedule.begin_index > schedule.size()) {
    return error("timesteps");
  }
  return c10::intrusive_ptr<RunState>(
      c10::make_intrusive<RunSchedule>(this, owner, std::move(schedule)));
}

}  // namespace loopserve
