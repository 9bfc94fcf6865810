#include "blocks/diffusion/noise_schedule.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "util/status_macros.h"

namespace loopserve {

absl::StatusOr<NoiseSchedule> NoiseSchedule::Read(ParamReader& params) {
  return Read(params, NoiseSchedule{});
}

absl::StatusOr<NoiseSchedule> NoiseSchedule::Read(ParamReader& params,
                                                  NoiseSchedule defaults) {
  NoiseSchedule s = std::move(defaults);
  ASSIGN_OR_RETURN(s.num_train_timesteps,
                   params.Int("num_train_timesteps", s.num_train_timesteps));
  ASSIGN_OR_RETURN(s.beta_start, params.Double("beta_start", s.beta_start));
  ASSIGN_OR_RETURN(s.beta_end, params.Double("beta_end", s.beta_end));
  ASSIGN_OR_RETURN(s.beta_schedule,
                   params.Choice("beta_schedule", s.beta_schedule,
                                 {"linear", "scaled_linear"}));
  if (s.num_train_timesteps < 2 || s.num_train_timesteps > 100'000) {
    return ParamError("num_train_timesteps", "must be in [2, 100000]");
  }
  if (!(s.beta_start > 0 && s.beta_start <= s.beta_end && s.beta_end < 1)) {
    return ParamError("beta_end", "need 0 < beta_start <= beta_end < 1");
  }
  return s;
}

at::Tensor NoiseSchedule::Betas() const {
  const auto options = at::TensorOptions().dtype(at::kFloat);
  if (beta_schedule == "scaled_linear") {
    return at::linspace(std::sqrt(beta_start), std::sqrt(beta_end),
                        num_train_timesteps, options)
        .pow(2);
  }
  return at::linspace(beta_start, beta_end, num_train_timesteps, options);
}

at::Tensor NoiseSchedule::AlphasCumprod() const {
  return at::cumprod(1.0 - Betas(), 0);
}

at::Tensor TrainingSigmas(const at::Tensor& alphas_cumprod) {
  return ((1 - alphas_cumprod) / alphas_cumprod).pow(0.5);
}

double InterpolateSigma(const at::Tensor& training_sigmas, double t) {
  const at::Tensor table = training_sigmas.contiguous();
  const float* sigma = table.data_ptr<float>();
  const int64_t n = training_sigmas.numel();
  if (t <= 0) return sigma[0];
  if (t >= static_cast<double>(n - 1)) return sigma[n - 1];
  const auto lo = static_cast<int64_t>(std::floor(t));
  const double frac = t - static_cast<double>(lo);
  const double a = sigma[lo];
  const double b = sigma[lo + 1];
  return a + (b - a) * frac;
}

std::vector<double> Linspace(double start, double stop, int64_t num) {
  std::vector<double> out;
  if (num <= 0) return out;
  if (num == 1) return {start};
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) out.push_back(i * step + start);
  out.back() = stop;
  return out;
}

std::vector<double> Arange(double start, double stop, double step) {
  const auto n = static_cast<int64_t>(std::ceil((stop - start) / step));
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(start + i * step);
  return out;
}

std::vector<double> KarrasSigmas(double sigma_min, double sigma_max,
                                 int64_t n) {
  constexpr double kRho = 7.0;
  const double min_inv_rho = std::pow(sigma_min, 1 / kRho);
  const double max_inv_rho = std::pow(sigma_max, 1 / kRho);
  std::vector<double> sigmas;
  for (double ramp : Linspace(0, 1, n)) {
    sigmas.push_back(
        std::pow(max_inv_rho + ramp * (min_inv_rho - max_inv_rho), kRho));
  }
  return sigmas;
}

double SigmaToT(double sigma, const std::vector<float>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // numpy computes `log_sigma - log_sigmas` in float32 (a float64 scalar
  // with a float32 array), so the test is float32's.
  const auto log_sigma32 = static_cast<float>(log_sigma);
  const auto n = static_cast<int64_t>(log_sigmas.size());
  int64_t low = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (log_sigma32 >= log_sigmas[i]) low = i;
  }
  low = std::min(low, n - 2);
  const double lo = log_sigmas[low];
  const double hi = log_sigmas[low + 1];
  const double w = std::clamp((lo - log_sigma) / (lo - hi), 0.0, 1.0);
  return (1 - w) * static_cast<double>(low) + w * static_cast<double>(low + 1);
}

}  // namespace loopserve
