// What the scheduler implementations share (schedulers.cc,
// multistep_schedulers.cc); not an API.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "blocks/diffusion/schedulers.h"

namespace loopserve::internal {

// The timesteps of DDIM's and Euler's set_timesteps, before the final cast,
// in descending order: `round_linspace` says whether linspace rounds (DDIM
// does; Euler does not).
std::vector<double> SpacedTimesteps(const SchedulerConfig& config, int64_t n,
                                    bool round_linspace);

// `values` as a CPU tensor of `dtype` (via float64, as numpy casts).
at::Tensor CpuTensor(const std::vector<double>& values, at::ScalarType dtype);

// A float tensor's values.
std::vector<float> ToFloats(const at::Tensor& t);

// INVALID_ARGUMENT naming num_inference_steps when a timestep falls outside
// [0, num_train_timesteps) (a large steps_offset).
absl::Status CheckTrainingRange(const std::vector<double>& timesteps,
                                const SchedulerConfig& config, int64_t n);

// A schedule of integer training timesteps (DDIM's, LCM's): int64
// timesteps and, for the record, the training sigmas at them, then 0.
Schedule DiscreteSchedule(const std::vector<double>& timesteps,
                          const at::Tensor& alphas_cumprod);

// DDPM's and DDIM's x0 from the model's output at ā_t (given as √ā_t and
// √(1 − ā_t)), by the config's prediction_type, before clipping; and x0
// clipped as clip_sample says.
at::Tensor PredictOriginal(const SchedulerConfig& config,
                           const at::Tensor& sample,
                           const at::Tensor& model_output, float sqrt_alpha_t,
                           float sqrt_beta_t);
at::Tensor ClipSample(const SchedulerConfig& config, at::Tensor x0);

// Note [scalars as diffusers computes them]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// sqrt, log, exp and expm1 of a float32 scalar as diffusers computes them,
// on a 0-d float32 tensor (`x ** 0.5`, `torch.log(x)`, ...). libtorch's
// float32 kernels are not libm's: in torch 2.11 on x86-64 they give another
// last bit for about 18 % of sqrt's inputs, 5 % of log's and expm1's and
// 1 % of exp's (measured over 20,000 values in [1e-4, 20]; which ones also
// depends on the CPU's vector width, which libtorch picks at run time). A
// step's coefficients go through them, so a trajectory is diffusers' bit
// for bit only when they are computed by the same kernels.
float TorchSqrt(float x);
float TorchLog(float x);
float TorchExp(float x);
float TorchExpm1(float x);

}  // namespace loopserve::internal
