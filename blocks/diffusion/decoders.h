// Decoders: the models that turn latents into pictures, as components.
//
//   torchscript_decoder        forward(latents) -> image in [-1, 1], [B,3,H,W].
//   latent_preview             a linear latent -> RGB projection, as
//                              ComfyUI's Latent2RGB: cheap enough for every
//                              step, and the pipeline's IterationPreview.
//
// Thread-safety: every method is const and safe from any number of runs.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/iteration_preview.h"
#include "blocks/core/state.h"
#include "blocks/diffusion/torchscript_module.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace loopserve {

// Latents -> UINT8 RGB [B,H,W,3] images.
class ImageDecoder {
 public:
  virtual ~ImageDecoder() = default;
  virtual absl::StatusOr<at::Tensor> Decode(
      const at::Tensor& latents) const = 0;
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
  // The predicted x0, else the latents.
  std::vector<std::string> reads() const override {
    return {"denoised", "latents"};
  }

 private:
  int64_t channels_;
  at::Tensor factors_;  // float32 [C, 3], CPU
  at::Tensor bias_;     // float32 [3], CPU
  int64_t upscale_;
};

}  // namespace loopserve
