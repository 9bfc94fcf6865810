// Denoisers: the models a denoising loop calls every step, as components.
//
//   gaussian_mixture_denoiser  the exact noise prediction for data whose
//                              every element is drawn from a 1-D Gaussian
//                              mixture: a correctness oracle with no weights.
//   torchscript_denoiser       a TorchScript module (a UNet), called as
//                              forward(sample, timestep[, encoder_hidden_states]).
//
// And the models that turn latents into pictures:
//   torchscript_decoder        forward(latents) -> image in [-1, 1], [B,3,H,W].
//   latent_preview             a linear latent -> RGB projection, as
//                              ComfyUI's Latent2RGB: cheap enough for every step.
//
// Thread-safety: every method is const and safe from any number of runs.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/component_registry.h"
#include "blocks/core/iteration_preview.h"
#include "blocks/core/state.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace loopserve {

class Denoiser {
 public:
  virtual ~Denoiser() = default;
  virtual absl::string_view type_name() const = 0;
  // Whether the model takes encoder_hidden_states (conditioning), and so
  // whether classifier-free guidance applies.
  virtual bool conditioned() const { return false; }
  // The model output for `sample` at `timestep` (a tensor of one element per
  // sample or one for all, on the sample's device): epsilon or v, as the
  // scheduler's prediction_type says. `encoder_hidden_states` is undefined
  // for an unconditioned model. The result has `sample`'s dtype.
  virtual absl::StatusOr<at::Tensor> Predict(
      const at::Tensor& sample, const at::Tensor& timestep,
      const at::Tensor& encoder_hidden_states) const = 0;
};

class GaussianMixtureDenoiser final : public Denoiser {
 public:
  static constexpr absl::string_view kTypeName = "gaussian_mixture_denoiser";

  struct Mixture {
    std::vector<double> weights;
    std::vector<double> means;
    std::vector<double> stds;
  };
  // What the model predicts: ε, v, or a flow-matching velocity ε − x0
  // (x_t = (1 − σ)·x0 + σ·ε, σ = t / num_train_timesteps).
  enum class Prediction { kEpsilon, kV, kFlow };
  // `alphas_cumprod`: the training schedule (noise_schedule.h), unused by
  // kFlow.
  GaussianMixtureDenoiser(Mixture mixture, const at::Tensor& alphas_cumprod,
                          Prediction prediction);

  absl::string_view type_name() const override { return kTypeName; }
  absl::StatusOr<at::Tensor> Predict(
      const at::Tensor& sample, const at::Tensor& timestep,
      const at::Tensor& encoder_hidden_states) const override;

  // ā at a (possibly fractional) timestep: 1 / (1 + σ(t)²), σ interpolated
  // linearly in t as the Euler scheduler interpolates it.
  double AlphaProdAt(double timestep) const;

 private:
  // The posterior's E[x0 | x] and E[ε | x] for x = scale·x0 + noise·ε.
  std::pair<at::Tensor, at::Tensor> Posterior(const at::Tensor& x,
                                              double scale,
                                              double noise) const;

  Mixture mixture_;
  at::Tensor training_sigmas_;
  int64_t num_train_timesteps_;
  Prediction prediction_;
};

class TorchScriptDenoiser final : public Denoiser {
 public:
  static constexpr absl::string_view kTypeName = "torchscript_denoiser";

  struct Options {
    std::string path{};
    c10::Device device = c10::kCPU;
    // The dtype the module runs in: float32, float16 or bfloat16.
    at::ScalarType dtype = at::kFloat;
    bool conditioned = false;
  };
  // Loads the module, moves it to the device and dtype, and sets eval mode.
  static absl::StatusOr<std::shared_ptr<const TorchScriptDenoiser>> Load(
      const Options& options);
  ~TorchScriptDenoiser() override;

  absl::string_view type_name() const override { return kTypeName; }
  bool conditioned() const override { return options_.conditioned; }
  absl::StatusOr<at::Tensor> Predict(
      const at::Tensor& sample, const at::Tensor& timestep,
      const at::Tensor& encoder_hidden_states) const override;

 private:
  TorchScriptDenoiser(Options options,
                      std::unique_ptr<torch::jit::Module> module);

  Options options_;
  // Note [shared module]: TorchScript's interpreter runs one module from
  // many threads at once (forward is not const only by signature); runs
  // share it as they share every component.
  std::unique_ptr<torch::jit::Module> module_;
};

// Latents -> UINT8 RGB [B,H,W,3] images.
class ImageDecoder {
 public:
  virtual ~ImageDecoder() = default;
  virtual absl::StatusOr<at::Tensor> Decode(const at::Tensor& latents) const = 0;
};

class TorchScriptDecoder final : public ImageDecoder {
 public:
  static constexpr absl::string_view kTypeName = "torchscript_decoder";
  struct Options {
    std::string path{};
    c10::Device device = c10::kCPU;
    at::ScalarType dtype = at::kFloat;
    // Latents are divided by it before decoding (diffusers' VAE
    // scaling_factor).
    double scaling_factor = 1.0;
  };
  static absl::StatusOr<std::shared_ptr<const TorchScriptDecoder>> Load(
      const Options& options);
  ~TorchScriptDecoder() override;

  absl::StatusOr<at::Tensor> Decode(const at::Tensor& latents) const override;

 private:
  TorchScriptDecoder(Options options,
                     std::unique_ptr<torch::jit::Module> module);
  Options options_;
  std::unique_ptr<torch::jit::Module> module_;  // Note [shared module]
};

// Also the pipeline's IterationPreview: each streamed iteration's `denoised`
// (the predicted x0), else its `latents`, as a PNG, the batch side by side.
class LatentPreview final : public ImageDecoder, public IterationPreview {
 public:
  static constexpr absl::string_view kTypeName = "latent_preview";
  // `factors`: [C][3], row c the RGB contribution of latent channel c;
  // `bias`: 3 values; each preview pixel is repeated `upscale` times in
  // both directions.
  LatentPreview(std::vector<double> factors, std::vector<double> bias,
                int64_t upscale);

  int64_t channels() const { return channels_; }
  // UINT8 [B, H*upscale, W*upscale, 3] on the CPU: ((latents · factors +
  // bias + 1) / 2) clamped to [0, 1], × 255. INVALID_ARGUMENT when the
  // latents are not [B, channels, H, W].
  absl::StatusOr<at::Tensor> Decode(const at::Tensor& latents) const override;
  absl::StatusOr<std::string> RenderPng(const BlockState& state) const override;

 private:
  int64_t channels_;
  at::Tensor factors_;  // float32 [C, 3], CPU
  at::Tensor bias_;     // float32 [3], CPU
  int64_t upscale_;
};

// Registers gaussian_mixture_denoiser and torchscript_denoiser (as
// Denoiser), torchscript_decoder (as ImageDecoder) and latent_preview (as
// ImageDecoder and IterationPreview).
absl::Status RegisterModels(ComponentRegistry& registry);

// "float32" / "float16" / "bfloat16", or the API's "FP32" / "FP16" / "BF16"
// (any case).
absl::StatusOr<at::ScalarType> ParseModelDtype(absl::string_view name);

}  // namespace loopserve
