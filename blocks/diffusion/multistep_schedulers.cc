// The multistep solvers: diffusers' DPMSolverMultistepScheduler (DPM-Solver++
// and its SDE variant, orders 1-3) and UniPCMultistepScheduler (UniP
// predictor with the UniC corrector, B(h) bh1/bh2, orders 1-3). Their
// previous model outputs live in the run's Schedule, never in the component.
//
// Scalars are float32, as diffusers' 0-d float32 tensors, their log, exp and
// expm1 torch's own; UniPC's small linear systems are solved with torch's
// linalg.solve and einsum, as diffusers solves them.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "blocks/diffusion/scheduler_internal.h"
#include "blocks/diffusion/schedulers.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

// The VP model's (α_t, σ_t) at noise level σ, and λ = log α − log σ.
struct Level {
  float alpha;
  float sigma;
  float lambda;
};

// α_t = 1 / √(σ² + 1), σ_t = σ·α_t: diffusers' _sigma_to_alpha_sigma_t.
std::pair<float, float> AlphaSigma(float sigma) {
  const float alpha = 1.0f / internal::TorchSqrt(sigma * sigma + 1.0f);
  return {alpha, sigma * alpha};
}

// λ at each of `sigmas`: Schedule::lambdas.
std::vector<float> Lambdas(const at::Tensor& sigmas) {
  std::vector<float> lambdas;
  for (float sigma : internal::ToFloats(sigmas)) {
    const auto [alpha, sigma_t] = AlphaSigma(sigma);
    lambdas.push_back(internal::TorchLog(alpha) - internal::TorchLog(sigma_t));
  }
  return lambdas;
}

// DPM-Solver's and UniPC's add_noise: α_t·x0 + σ_t·ε at the begin index.
at::Tensor MultistepAddNoise(const Schedule& schedule,
                             const at::Tensor& original,
                             const at::Tensor& noise) {
  const auto [alpha, sigma_t] =
      AlphaSigma(schedule.sigmas.data_ptr<float>()[schedule.begin_index]);
  return alpha * original + sigma_t * noise;
}

// The level at the schedule's `index`.
Level LevelAt(const Schedule& schedule, int64_t index) {
  const auto [alpha, sigma_t] =
      AlphaSigma(schedule.sigmas.data_ptr<float>()[index]);
  return {alpha, sigma_t, schedule.lambdas[index]};
}

// DPM-Solver's and UniPC's set_timesteps: n + 1 points spaced over the
// training range, the last dropped (so that the final step reaches the
// lowest noise), Karras sigmas on request, then the final sigma.
absl::StatusOr<Schedule> MultistepSchedule(const SchedulerConfig& config,
                                           const at::Tensor& alphas_cumprod,
                                           int64_t n,
                                           bool karras_last_is_sigma_min) {
  const int64_t train = config.noise.num_train_timesteps;
  std::vector<double> t;
  if (config.timestep_spacing == "linspace") {
    std::vector<double> points =
        Linspace(0, static_cast<double>(train - 1), n + 1);
    for (int64_t i = n; i >= 1; --i) t.push_back(std::nearbyint(points[i]));
  } else if (config.timestep_spacing == "leading") {
    const int64_t ratio = train / (n + 1);
    for (int64_t i = n; i >= 1; --i) {
      t.push_back(static_cast<double>(i * ratio + config.steps_offset));
    }
  } else {  // trailing
    const double ratio = static_cast<double>(train) / static_cast<double>(n);
    for (double v : Arange(static_cast<double>(train), 0, -ratio)) {
      t.push_back(std::nearbyint(v) - 1);
    }
  }
  RETURN_IF_ERROR(internal::CheckTrainingRange(t, config, n));

  const at::Tensor training = TrainingSigmas(alphas_cumprod);
  const std::vector<float> table = internal::ToFloats(training);
  std::vector<double> sigmas;
  if (config.use_karras_sigmas) {
    sigmas = KarrasSigmas(table.front(), table.back(), n);
    std::vector<float> log_sigmas;
    for (float s : table) log_sigmas.push_back(std::log(s));
    t.clear();
    for (double sigma : sigmas) {
      t.push_back(std::nearbyint(SigmaToT(sigma, log_sigmas)));
    }
  } else {
    for (double v : t) sigmas.push_back(InterpolateSigma(training, v));
  }
  double last = 0;
  if (config.final_sigmas_type == "sigma_min") {
    // UniPC ends Karras sigmas on their own last one; otherwise the lowest
    // training sigma, computed in float32.
    last = config.use_karras_sigmas && karras_last_is_sigma_min
               ? sigmas.back()
               : static_cast<double>(table.front());
  }
  sigmas.push_back(last);
  Schedule schedule;
  schedule.timesteps = internal::CpuTensor(t, at::kLong);
  schedule.sigmas = internal::CpuTensor(sigmas, at::kFloat);
  schedule.lambdas = Lambdas(schedule.sigmas);
  return schedule;
}

// The model output as the data prediction x0 (or, for UniPC without
// predict_x0, the noise prediction ε).
at::Tensor ConvertModelOutput(const SchedulerConfig& config,
                              const at::Tensor& model_output,
                              const at::Tensor& sample, const Level& level,
                              bool predict_x0) {
  const std::string& kind = config.prediction_type;
  if (predict_x0) {
    if (kind == "epsilon") {
      return (sample - level.sigma * model_output) / level.alpha;
    }
    if (kind == "sample") return model_output;
    return level.alpha * sample - level.sigma * model_output;
  }
  if (kind == "epsilon") return model_output;
  if (kind == "sample") {
    return (sample - level.alpha * model_output) / level.sigma;
  }
  return level.alpha * model_output + level.sigma * sample;
}

void Remember(Schedule& schedule, at::Tensor converted, int64_t order) {
  schedule.model_outputs.push_back(std::move(converted));
  if (static_cast<int64_t>(schedule.model_outputs.size()) > order) {
    schedule.model_outputs.erase(schedule.model_outputs.begin());
  }
}

// model_outputs[size - 1 - back]: the newest is back = 0.
const at::Tensor& Recent(const Schedule& schedule, int64_t back) {
  return schedule.model_outputs[schedule.model_outputs.size() - 1 - back];
}

}  // namespace

// ---- DPM-Solver++ ----

DpmSolverMultistepScheduler::DpmSolverMultistepScheduler(SchedulerConfig config)
    : Scheduler(std::move(config)) {}

absl::StatusOr<Schedule> DpmSolverMultistepScheduler::SetTimesteps(
    const ScheduleRequest& request) const {
  RETURN_IF_ERROR(CheckStepCount(request.num_inference_steps));
  return MultistepSchedule(config_, alphas_cumprod_,
                           request.num_inference_steps,
                           /*karras_last_is_sigma_min=*/false);
}

at::Tensor DpmSolverMultistepScheduler::AddNoise(
    const Schedule& schedule, const at::Tensor& original,
    const at::Tensor& noise) const {
  return MultistepAddNoise(schedule, original, noise);
}

absl::StatusOr<StepResult> DpmSolverMultistepScheduler::Step(
    Schedule& schedule, const at::Tensor& model_output, int64_t i,
    const at::Tensor& sample_in, const StepOptions& options) const {
  RETURN_IF_ERROR(CheckStepIndex(schedule, i));
  const int64_t n = schedule.size();
  const bool lower_order_final =
      i == n - 1 &&
      (config_.euler_at_final || (config_.lower_order_final && n < 15) ||
       config_.final_sigmas_type == "zero");
  const bool lower_order_second =
      i == n - 2 && config_.lower_order_final && n < 15;

  const Level t = LevelAt(schedule, i + 1);
  const Level s0 = LevelAt(schedule, i);
  at::Tensor x0 = ConvertModelOutput(config_, model_output, sample_in, s0,
                                     /*predict_x0=*/true);
  Remember(schedule, x0, config_.solver_order);

  const at::Tensor sample = sample_in.to(at::kFloat);
  const bool sde = config_.algorithm_type == "sde-dpmsolver++";
  at::Tensor noise;
  if (sde) {
    ASSIGN_OR_RETURN(
        noise, DrawNoise(model_output, options, "sde-dpmsolver++", at::kFloat));
  }

  const float h = t.lambda - s0.lambda;
  const float exp_neg_h = internal::TorchExp(-h);
  const bool midpoint = config_.solver_type == "midpoint";
  at::Tensor x_t;
  if (config_.solver_order == 1 || schedule.lower_order_nums < 1 ||
      lower_order_final) {
    const at::Tensor& m = Recent(schedule, 0);
    if (sde) {
      const float exp_neg_2h = internal::TorchExp(-2.0f * h);
      x_t = (t.sigma / s0.sigma * exp_neg_h) * sample +
            (t.alpha * (1 - exp_neg_2h)) * m +
            t.sigma * internal::TorchSqrt(1.0f - exp_neg_2h) * noise;
    } else {
      x_t = (t.sigma / s0.sigma) * sample - (t.alpha * (exp_neg_h - 1.0f)) * m;
    }
  } else if (config_.solver_order == 2 || schedule.lower_order_nums < 2 ||
             lower_order_second) {
    const Level s1 = LevelAt(schedule, i - 1);
    const at::Tensor& m0 = Recent(schedule, 0);
    const at::Tensor& m1 = Recent(schedule, 1);
    const float h_0 = s0.lambda - s1.lambda;
    const float r0 = h_0 / h;
    const at::Tensor& d0 = m0;
    const at::Tensor d1 = (1.0f / r0) * (m0 - m1);
    if (sde) {
      const float exp_neg_2h = internal::TorchExp(-2.0f * h);
      const float d0_scale = t.alpha * (1 - exp_neg_2h);
      x_t = (t.sigma / s0.sigma * exp_neg_h) * sample + d0_scale * d0;
      x_t = midpoint
                ? x_t + 0.5f * d0_scale * d1
                : x_t + (t.alpha * ((1.0f - exp_neg_2h) / (-2.0f * h) + 1.0f)) *
                            d1;
      x_t = x_t + t.sigma * internal::TorchSqrt(1.0f - exp_neg_2h) * noise;
    } else {
      const float d0_scale = t.alpha * (exp_neg_h - 1.0f);
      x_t = (t.sigma / s0.sigma) * sample - d0_scale * d0;
      x_t = midpoint ? x_t - 0.5f * d0_scale * d1
                     : x_t + (t.alpha * ((exp_neg_h - 1.0f) / h + 1.0f)) * d1;
    }
  } else {
    const Level s1 = LevelAt(schedule, i - 1);
    const Level s2 = LevelAt(schedule, i - 2);
    const at::Tensor& m0 = Recent(schedule, 0);
    const at::Tensor& m1 = Recent(schedule, 1);
    const at::Tensor& m2 = Recent(schedule, 2);
    const float h_0 = s0.lambda - s1.lambda;
    const float h_1 = s1.lambda - s2.lambda;
    const float r0 = h_0 / h;
    const float r1 = h_1 / h;
    const at::Tensor d1_0 = (1.0f / r0) * (m0 - m1);
    const at::Tensor d1_1 = (1.0f / r1) * (m1 - m2);
    const at::Tensor d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1);
    const at::Tensor d2 = (1.0f / (r0 + r1)) * (d1_0 - d1_1);
    x_t = (t.sigma / s0.sigma) * sample - (t.alpha * (exp_neg_h - 1.0f)) * m0 +
          (t.alpha * ((exp_neg_h - 1.0f) / h + 1.0f)) * d1 -
          (t.alpha * ((exp_neg_h - 1.0f + h) / (h * h) - 0.5f)) * d2;
  }
  schedule.lower_order_nums =
      std::min(schedule.lower_order_nums + 1, config_.solver_order);
  return StepResult{.prev_sample = x_t.to(model_output.scalar_type()),
                    .pred_original_sample = std::move(x0)};
}

// ---- UniPC ----

UniPcMultistepScheduler::UniPcMultistepScheduler(SchedulerConfig config)
    : Scheduler(std::move(config)) {}

absl::StatusOr<Schedule> UniPcMultistepScheduler::SetTimesteps(
    const ScheduleRequest& request) const {
  RETURN_IF_ERROR(CheckStepCount(request.num_inference_steps));
  return MultistepSchedule(config_, alphas_cumprod_,
                           request.num_inference_steps,
                           /*karras_last_is_sigma_min=*/true);
}

namespace {

// What UniPC's predictor (UniP) and corrector (UniC) share: the B(h) update
// of `x` from the noise level at `from` to the one at `to`, with the
// differences of the history's last `order` outputs (the newest, m0, at
// `from`, the k-th before it at from − k).
struct UniUpdate {
  // The first-order part: x's share and m0's.
  at::Tensor base;
  // (α_t or σ_t) · B(h): the scale of the higher-order correction.
  float scale;
  // [rks^0; rks^1; ...] and b: the linear system of the order's rhos.
  at::Tensor r;
  at::Tensor b;
  // (m_k − m0) / r_k, stacked on dimension 1; undefined at order 1.
  at::Tensor d1s;
};

UniUpdate UniBase(const Schedule& schedule, const SchedulerConfig& config,
                  int64_t from, int64_t to, const at::Tensor& x,
                  int64_t order) {
  const at::Tensor& m0 = Recent(schedule, 0);
  const Level t = LevelAt(schedule, to);
  const Level s0 = LevelAt(schedule, from);
  const float h = t.lambda - s0.lambda;
  std::vector<float> rks;
  std::vector<at::Tensor> d1s;
  for (int64_t k = 1; k < order; ++k) {
    const float rk = (schedule.lambdas[from - k] - s0.lambda) / h;
    rks.push_back(rk);
    d1s.push_back((Recent(schedule, k) - m0) / rk);
  }
  rks.push_back(1.0f);
  const bool x0 = config.predict_x0;
  const float hh = x0 ? -h : h;
  const float h_phi_1 = internal::TorchExpm1(hh);
  const float b_h = config.solver_type == "bh1" ? hh : internal::TorchExpm1(hh);
  float h_phi_k = h_phi_1 / hh - 1;
  int64_t factorial = 1;
  const at::Tensor rk = at::tensor(rks, at::TensorOptions().dtype(at::kFloat));
  std::vector<at::Tensor> rows;
  std::vector<float> b;
  for (int64_t i = 1; i <= order; ++i) {
    rows.push_back(at::pow(rk, i - 1));
    b.push_back(h_phi_k * static_cast<float>(factorial) / b_h);
    factorial *= i + 1;
    h_phi_k =
        h_phi_k / hh - static_cast<float>(1.0 / static_cast<double>(factorial));
  }
  UniUpdate update;
  update.base = x0 ? (t.sigma / s0.sigma) * x - (t.alpha * h_phi_1) * m0
                   : (t.alpha / s0.alpha) * x - (t.sigma * h_phi_1) * m0;
  update.scale = (x0 ? t.alpha : t.sigma) * b_h;
  update.r = at::stack(rows);
  update.b = at::tensor(b, at::TensorOptions().dtype(at::kFloat));
  if (!d1s.empty()) update.d1s = at::stack(d1s, 1);
  return update;
}

// Σ_k rhos[k] · d1s[:, k], as diffusers contracts it.
at::Tensor Contract(const at::Tensor& rhos, const at::Tensor& d1s) {
  return at::einsum(
      "k,bkc...->bc...",
      {rhos.to(d1s.device(), rhos.scalar_type(), /*non_blocking=*/true), d1s});
}

at::Tensor Half(const at::Tensor& like) {
  return at::tensor({0.5f}, at::TensorOptions().dtype(like.dtype()));
}

}  // namespace

at::Tensor UniPcMultistepScheduler::Predictor(const Schedule& schedule,
                                              int64_t i, const at::Tensor& x,
                                              int64_t order) const {
  const UniUpdate u = UniBase(schedule, config_, i, i + 1, x, order);
  at::Tensor x_t = u.base;
  if (u.d1s.defined()) {
    const at::Tensor rhos =
        order == 2 ? Half(x)
                   : at::linalg_solve(u.r.slice(0, 0, -1).slice(1, 0, -1),
                                      u.b.slice(0, 0, -1))
                         .to(x.dtype());
    x_t = x_t - u.scale * Contract(rhos, u.d1s);
  }
  return x_t.to(x.dtype());
}

at::Tensor UniPcMultistepScheduler::Corrector(const Schedule& schedule,
                                              int64_t i,
                                              const at::Tensor& model_t,
                                              int64_t order) const {
  const at::Tensor& x = schedule.last_sample;
  const UniUpdate u = UniBase(schedule, config_, i - 1, i, x, order);
  const at::Tensor rhos =
      (order == 1 ? Half(x) : at::linalg_solve(u.r, u.b))
          .to(x.device(), x.scalar_type(), /*non_blocking=*/true);
  at::Tensor correction = rhos[-1] * (model_t - Recent(schedule, 0));
  if (u.d1s.defined()) {
    correction = Contract(rhos.slice(0, 0, -1), u.d1s) + correction;
  }
  return (u.base - u.scale * correction).to(x.dtype());
}

at::Tensor UniPcMultistepScheduler::AddNoise(const Schedule& schedule,
                                             const at::Tensor& original,
                                             const at::Tensor& noise) const {
  return MultistepAddNoise(schedule, original, noise);
}

absl::StatusOr<StepResult> UniPcMultistepScheduler::Step(
    Schedule& schedule, const at::Tensor& model_output, int64_t i,
    const at::Tensor& sample_in, const StepOptions&) const {
  RETURN_IF_ERROR(CheckStepIndex(schedule, i));
  const auto& disabled = config_.disable_corrector;
  const bool use_corrector =
      i > 0 &&
      std::find(disabled.begin(), disabled.end(), i - 1) == disabled.end() &&
      schedule.last_sample.defined();
  const Level level = LevelAt(schedule, i);
  const at::Tensor converted = ConvertModelOutput(
      config_, model_output, sample_in, level, config_.predict_x0);
  at::Tensor sample = sample_in;
  if (use_corrector) {
    sample = Corrector(schedule, i, converted, schedule.this_order);
  }
  Remember(schedule, converted, config_.solver_order);

  const int64_t n = schedule.size();
  int64_t order = config_.lower_order_final
                      ? std::min(config_.solver_order, n - i)
                      : config_.solver_order;
  schedule.this_order = std::min(order, schedule.lower_order_nums + 1);
  schedule.last_sample = sample;
  at::Tensor prev_sample = Predictor(schedule, i, sample, schedule.this_order);
  schedule.lower_order_nums =
      std::min(schedule.lower_order_nums + 1, config_.solver_order);

  at::Tensor x0 = converted;
  if (!config_.predict_x0) {
    x0 = (sample_in - level.sigma * converted) / level.alpha;
  }
  return StepResult{.prev_sample = std::move(prev_sample),
                    .pred_original_sample = std::move(x0)};
}

}  // namespace loopserve
