// Encoders: the models that turn a run's prompt and image into what the
// denoising loop takes.
//
//   torchscript_text_encoder  forward(List[str]) -> a tensor or a tuple of
//                             tensors, one row per text: a tokenizer and a
//                             text encoder exported as one module. `outputs`
//                             names each tensor as the conditioning value
//                             it is ("encoder_hidden_states", "text_embeds").
//                             With `tokenizers` (CLIP tokenizer folders),
//                             loopserve tokenizes and the module takes
//                             forward(ids_1, ..., ids_n, clip_skip: int):
//                             one [B,77] int64 tensor per tokenizer, and
//                             how many final layers to skip (diffusers'
//                             clip_skip; 0: none), as loopserve-export
//                             writes it.
//   torchscript_encoder       a VAE encoder: image [B,3,H,W] in [-1, 1] ->
//                             the mean of the latent distribution (or its
//                             moments), × scaling_factor; with `sample`,
//                             also its standard deviation, which the run's
//                             generator samples from (PrepareLatents).
//   identity_encoder          pixel-space models: the image is the latents.
//
// Thread-safety: every method is const and safe from any number of runs.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/component_registry.h"
#include "blocks/diffusion/clip_tokenizer.h"
#include "blocks/diffusion/torchscript_module.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace loopserve {

class TextEncoder {
 public:
  virtual ~TextEncoder() = default;
  // The conditioning name of each tensor Encode returns, in order.
  virtual std::span<const std::string> outputs() const = 0;
  // The largest clip_skip Encode takes (the run input of that name's
  // maximum); none: it reads no clip_skip.
  virtual std::optional<int64_t> max_clip_skip() const { return std::nullopt; }
  // One tensor per outputs() entry, each with texts.size() rows, on the
  // device; `clip_skip` final layers of the text model skipped.
  virtual absl::StatusOr<std::vector<at::Tensor>> Encode(
      const std::vector<std::string>& texts, int64_t clip_skip) const = 0;
};

class TorchScriptTextEncoder final : public TextEncoder {
 public:
  static constexpr absl::string_view kTypeName = "torchscript_text_encoder";
  struct Options {
    std::string path{};
    c10::Device device = c10::kCPU;
    at::ScalarType dtype = at::kFloat;
    std::vector<std::string> outputs = {"encoder_hidden_states"};
    // The tokenizers whose ids the module takes; none: it takes the texts.
    std::vector<std::shared_ptr<const ClipTokenizer>> tokenizers{};
  };
  // INVALID_ARGUMENT when the module's forward does not take the texts (or
  // one ids tensor per tokenizer and clip_skip), or `outputs` is empty or
  // repeats a name.
  static absl::StatusOr<std::shared_ptr<const TorchScriptTextEncoder>> Load(
      const Options& options);
  ~TorchScriptTextEncoder() override;

  std::span<const std::string> outputs() const override {
    return options_.outputs;
  }
  // With tokenizers: the module's attribute max_clip_skip (loopserve-export
  // writes it: the text model's layer count, less what the family's
  // hidden-state index needs), else kUnknownMaxClipSkip.
  std::optional<int64_t> max_clip_skip() const override {
    return max_clip_skip_;
  }
  static constexpr int64_t kUnknownMaxClipSkip = 64;
  // FAILED_PRECONDITION when the module returns another number of tensors
  // than `outputs` names, or one without a row per text.
  absl::StatusOr<std::vector<at::Tensor>> Encode(
      const std::vector<std::string>& texts, int64_t clip_skip) const override;

 private:
  TorchScriptTextEncoder(Options options,
                         std::unique_ptr<torch::jit::Module> module);
  Options options_;
  std::optional<int64_t> max_clip_skip_;
  std::unique_ptr<torch::jit::Module> module_;  // Note [shared module]
};

// An image in latent space: `mean`, and when the encoder gives a
// distribution to sample from (a VAE's latent_dist.sample()), its `std`;
// undefined: the latents are `mean` as it is.
struct ImageLatents {
  at::Tensor mean;
  at::Tensor std{};
};

class ImageEncoder {
 public:
  virtual ~ImageEncoder() = default;
  // `image`: float32 [B,C,H,W] in [-1, 1] on the device -> float32 latents
  // [B,c,h,w].
  virtual absl::StatusOr<ImageLatents> Encode(
      const at::Tensor& image) const = 0;
};

class TorchScriptEncoder final : public ImageEncoder {
 public:
  static constexpr absl::string_view kTypeName = "torchscript_encoder";
  struct Options {
    std::string path{};
    c10::Device device = c10::kCPU;
    at::ScalarType dtype = at::kFloat;
    // The latents are multiplied by it (diffusers' VAE scaling_factor).
    double scaling_factor = 1.0;
    // The module returns the latent distribution's moments [B,2c,h,w]
    // (mean, then log-variance, as diffusers' DiagonalGaussianDistribution
    // takes them) rather than its mean.
    bool moments = false;
    // With moments: the latents are a sample of the distribution (mean,
    // and std = exp(logvar / 2), logvar clamped to [-30, 20], as
    // diffusers' DiagonalGaussianDistribution), drawn from the run's
    // generator; without, its mean (diffusers' sample_mode="argmax").
    bool sample = false;
    // Which element of the result (OutputSelector).
    std::string output{};
  };
  static absl::StatusOr<std::shared_ptr<const TorchScriptEncoder>> Load(
      const Options& options);
  ~TorchScriptEncoder() override;

  absl::StatusOr<ImageLatents> Encode(const at::Tensor& image) const override;

 private:
  TorchScriptEncoder(Options options,
                     std::unique_ptr<torch::jit::Module> module,
                     OutputSelector output);
  Options options_;
  OutputSelector output_;
  std::unique_ptr<torch::jit::Module> module_;  // Note [shared module]
};

// Pixel-space models: the image is the latents. With `channels` 1, an RGB
// image becomes grey (the mean of its channels); otherwise its channels
// must be `channels` (any, when 0).
class IdentityEncoder final : public ImageEncoder {
 public:
  static constexpr absl::string_view kTypeName = "identity_encoder";
  explicit IdentityEncoder(int64_t channels) : channels_(channels) {}
  absl::StatusOr<ImageLatents> Encode(const at::Tensor& image) const override;

 private:
  int64_t channels_;
};

}  // namespace loopserve
