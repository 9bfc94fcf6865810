// Denoisers: the models a denoising loop calls every step, as components.
//
//   gaussian_mixture_denoiser  the exact noise prediction for data whose
//                              every element is drawn from a 1-D Gaussian
//                              mixture: a correctness oracle with no weights.
//   torchscript_denoiser       a TorchScript module (a UNet or a DiT),
//                              called with the arguments its configuration
//                              lists: forward(sample, timestep, ...).
//
// The models that turn latents into pictures are in decoders.h; both are
// registered in model_registration.h.
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
#include "blocks/core/state.h"
#include "blocks/diffusion/torchscript_module.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace loopserve {

// A value a model takes besides the sample and the timestep: conditioning
// (encoder_hidden_states, SDXL's text_embeds and time_ids, Flux's
// pooled_projections, txt_ids, img_ids, guidance). Each is a run input of a
// pipeline whose denoiser takes it.
struct ModelArgument {
  std::string name{};
  // Passed unchanged to both halves under classifier-free guidance and not
  // batched (Flux's txt_ids, img_ids, guidance). Otherwise dimension 0 is
  // the batch, and guidance pairs the value with its unconditional
  // counterpart.
  bool shared = false;
  // The shape it must have, -1 for any size (the batch of a batched value is
  // checked apart: 1 or the latents' batch); empty: any shape.
  std::vector<int64_t> shape{};
};

class Denoiser {
 public:
  virtual ~Denoiser() = default;
  virtual absl::string_view type_name() const = 0;
  // The conditioning values the model takes, in the order it takes them;
  // empty for an unconditioned model (classifier-free guidance does not
  // apply then).
  virtual std::span<const ModelArgument> conditioning() const { return {}; }
  // The sample shape the model takes, -1 for any size, dimension 0 (the
  // batch) any; empty: any shape. Checked before every call, so that a
  // request that does not fit is refused naming its inputs.
  virtual std::span<const int64_t> sample_shape() const { return {}; }
  // The model output for `sample` [B,...] at `timestep` ([B], one per
  // sample, on the sample's device): epsilon, v or a flow velocity, as the
  // scheduler's prediction_type says. `conditioning` holds one value per
  // conditioning() entry, in its order: batched ones with B rows, shared
  // ones as given. The result has `sample`'s dtype and shape.
  virtual absl::StatusOr<at::Tensor> Predict(
      const at::Tensor& sample, const at::Tensor& timestep,
      std::span<const at::Tensor> conditioning) const = 0;
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
  // `timestep`: one for the whole batch, or one per row.
  absl::StatusOr<at::Tensor> Predict(
      const at::Tensor& sample, const at::Tensor& timestep,
      std::span<const at::Tensor> conditioning) const override;

  // ā at a (possibly fractional) timestep: 1 / (1 + σ(t)²), σ interpolated
  // linearly in t as the Euler scheduler interpolates it.
  double AlphaProdAt(double timestep) const;

 private:
  // The prediction for `sample`, every row at timestep `t`.
  at::Tensor PredictAt(const at::Tensor& sample, double t) const;
  // The posterior's E[x0 | x] and E[ε | x] for x = scale·x0 + noise·ε.
  std::pair<at::Tensor, at::Tensor> Posterior(const at::Tensor& x, double scale,
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
    // The dtype the module runs in: float32, float16 or bfloat16. Floating
    // conditioning is converted to it; the sample too.
    at::ScalarType dtype = at::kFloat;
    // forward's arguments in order: "sample", "timestep" and conditioning
    // names (params `arguments`, and `encoder_hidden_states: true` for
    // {sample, timestep, encoder_hidden_states}).
    std::vector<std::string> arguments = {"sample", "timestep"};
    // Conditioning names passed unchanged under guidance
    // (ModelArgument::shared).
    std::vector<std::string> shared_arguments{};
    // Expected shapes by argument name, "sample" or a conditioning one
    // (params `shape.NAME`).
    std::vector<std::pair<std::string, std::vector<int64_t>>> shapes{};
    // The timestep passed is the schedule's converted to timestep_dtype
    // (unset: kept, float32 when scaled), then × timestep_scale (Flux:
    // 0.001), in that dtype.
    double timestep_scale = 1.0;
    std::optional<at::ScalarType> timestep_dtype{};
    // Which element of the result is the prediction (OutputSelector).
    std::string output{};
  };
  // Loads the module, moves it to the device and dtype, and sets eval mode.
  // INVALID_ARGUMENT when `arguments` lacks "sample" or "timestep", repeats
  // a name, or does not fit forward's argument count; naming a shared or
  // shaped argument that is not a conditioning one; for an int64
  // timestep_dtype with a timestep_scale.
  static absl::StatusOr<std::shared_ptr<const TorchScriptDenoiser>> Load(
      const Options& options);
  ~TorchScriptDenoiser() override;

  absl::string_view type_name() const override { return kTypeName; }
  std::span<const ModelArgument> conditioning() const override {
    return conditioning_;
  }
  std::span<const int64_t> sample_shape() const override {
    return sample_shape_;
  }
  absl::StatusOr<at::Tensor> Predict(
      const at::Tensor& sample, const at::Tensor& timestep,
      std::span<const at::Tensor> conditioning) const override;

 private:
  TorchScriptDenoiser(Options options,
                      std::unique_ptr<torch::jit::Module> module,
                      std::vector<ModelArgument> conditioning,
                      OutputSelector output);

  Options options_;
  std::vector<ModelArgument> conditioning_;
  std::vector<int64_t> sample_shape_;
  OutputSelector output_;
  // Note [shared module]: TorchScript's interpreter runs one module from
  // many threads at once (forward is not const only by signature); runs
  // share it as they share every component.
  std::unique_ptr<torch::jit::Module> module_;
};

}  // namespace loopserve
