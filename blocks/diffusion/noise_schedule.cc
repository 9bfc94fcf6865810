#include "blocks/diffusion/noise_schedule.h"

#include <ATen/ATen.h>

#include <cmath>

#include "blocks/core/status_macros.h"

namespace loopserve {

absl::StatusOr<NoiseSchedule> NoiseSchedule::Read(ParamReader& params) {
  NoiseSchedule s;
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
    return ParamError("beta_end",
                      "need 0 < beta_start <= beta_end < 1");
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

}  // namespace loopserve
