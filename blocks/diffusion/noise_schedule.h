// The training noise schedule shared by schedulers and analytic denoisers:
// diffusers' betas and alphas_cumprod, computed as diffusers computes them
// (float32 on the CPU).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "blocks/core/param_reader.h"

namespace loopserve {

struct NoiseSchedule {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  // "linear" or "scaled_linear".
  std::string beta_schedule = "linear";

  // Reads num_train_timesteps, beta_start, beta_end and beta_schedule,
  // diffusers' keys and defaults.
  static absl::StatusOr<NoiseSchedule> Read(ParamReader& params);

  // float32 [num_train_timesteps] on the CPU:
  //   linear:        linspace(beta_start, beta_end, N)
  //   scaled_linear: linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2
  at::Tensor Betas() const;
  // cumprod(1 - betas).
  at::Tensor AlphasCumprod() const;
};

// The noise level of each training timestep, sqrt((1 - ā) / ā): float32
// [N] on the CPU, as diffusers' Euler scheduler computes it.
at::Tensor TrainingSigmas(const at::Tensor& alphas_cumprod);

// numpy.interp(t, arange(N), sigmas), in double: the noise level at a
// fractional timestep. t is clamped to [0, N-1] as numpy clamps it.
double InterpolateSigma(const at::Tensor& training_sigmas, double t);

}  // namespace loopserve
