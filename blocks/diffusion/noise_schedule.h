// The training noise schedule shared by schedulers and analytic denoisers:
// diffusers' betas and alphas_cumprod, computed as diffusers computes them
// (float32 on the CPU).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

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
  // diffusers' keys, with `defaults` (a class's own: LCM's are
  // scaled_linear).
  static absl::StatusOr<NoiseSchedule> Read(ParamReader& params,
                                            NoiseSchedule defaults);
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

// numpy's linspace(start, stop, num) and arange(start, stop, step), in
// double, as diffusers' set_timesteps computes them.
std::vector<double> Linspace(double start, double stop, int64_t num);
std::vector<double> Arange(double start, double stop, double step);

// diffusers' _convert_to_karras (rho = 7): `n` noise levels from
// `sigma_max` down to `sigma_min`, in double.
std::vector<double> KarrasSigmas(double sigma_min, double sigma_max, int64_t n);

// diffusers' _sigma_to_t: the fractional training timestep of noise level
// `sigma`, interpolating linearly in log σ between the two training levels
// around it. `log_sigmas` is float32 log(training sigmas), as numpy keeps
// it; the comparison happens in float32, as numpy does it.
double SigmaToT(double sigma, const std::vector<float>& log_sigmas);

}  // namespace loopserve
