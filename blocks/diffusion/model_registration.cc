#include "blocks/diffusion/model_registration.h"

#include <ATen/ATen.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "blocks/core/param_reader.h"
#include "blocks/diffusion/batched_denoiser.h"
#include "blocks/diffusion/decoders.h"
#include "blocks/diffusion/denoisers.h"
#include "blocks/diffusion/encoders.h"
#include "blocks/diffusion/noise_schedule.h"
#include "blocks/diffusion/torchscript_module.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

// A VAE's `scaling_factor` (diffusers'), > 0: latents are divided by it
// before decoding, and multiplied by it after encoding.
absl::StatusOr<double> ReadScalingFactor(ParamReader& params) {
  ASSIGN_OR_RETURN(const double factor, params.Double("scaling_factor", 1.0));
  if (!(factor > 0)) return ParamError("scaling_factor", "must be > 0");
  return factor;
}

// ---- denoisers ----

// The mixture's params, checked.
absl::StatusOr<GaussianMixtureDenoiser::Mixture> ReadMixture(
    ParamReader& params) {
  GaussianMixtureDenoiser::Mixture m;
  ASSIGN_OR_RETURN(m.weights, params.DoubleList("weights", {}));
  ASSIGN_OR_RETURN(m.means, params.DoubleList("means", {}));
  ASSIGN_OR_RETURN(m.stds, params.DoubleList("stds", {}));
  if (m.weights.empty()) return ParamError("weights", "is required");
  if (m.means.size() != m.weights.size() || m.stds.size() != m.weights.size()) {
    return ParamError("means",
                      absl::StrCat("weights, means and stds need the "
                                   "same length; got ",
                                   m.weights.size(), ", ", m.means.size(), ", ",
                                   m.stds.size()));
  }
  double total = 0;
  for (double w : m.weights) {
    if (!(w > 0)) return ParamError("weights", "every weight must be > 0");
    total += w;
  }
  if (std::abs(total - 1.0) > 1e-6) {
    return ParamError("weights", absl::StrCat("must sum to 1, got ", total));
  }
  for (double s : m.stds) {
    if (!(s > 0)) return ParamError("stds", "every std must be > 0");
  }
  return m;
}

absl::StatusOr<std::shared_ptr<const Denoiser>> MakeGaussianMixtureDenoiser(
    const BlockParams& raw, const ComponentContext& context) {
  ParamReader params(raw);
  ASSIGN_OR_RETURN(GaussianMixtureDenoiser::Mixture mixture,
                   ReadMixture(params));
  ASSIGN_OR_RETURN(NoiseSchedule schedule, NoiseSchedule::Read(params));
  ASSIGN_OR_RETURN(std::string prediction,
                   params.Choice("prediction_type", "epsilon",
                                 {"epsilon", "v_prediction", "flow"}));
  RETURN_IF_ERROR(params.CheckAllRead());
  return BatchAcrossRuns(
      std::make_shared<const GaussianMixtureDenoiser>(
          std::move(mixture), schedule.AlphasCumprod(),
          prediction == "flow" ? GaussianMixtureDenoiser::Prediction::kFlow
          : prediction == "v_prediction"
              ? GaussianMixtureDenoiser::Prediction::kV
              : GaussianMixtureDenoiser::Prediction::kEpsilon),
      context);
}

absl::StatusOr<TorchScriptDenoiser::Options> ReadTorchScriptDenoiserOptions(
    ParamReader& params, const ComponentContext& context) {
  ASSIGN_OR_RETURN(auto options, ReadModelOptions<TorchScriptDenoiser::Options>(
                                     params, context));
  ASSIGN_OR_RETURN(const bool encoder_hidden_states,
                   params.Bool("encoder_hidden_states", false));
  if (encoder_hidden_states) {
    if (params.Has("arguments")) {
      return ParamError("encoder_hidden_states",
                        "is a shorthand for arguments; give one");
    }
    options.arguments.push_back("encoder_hidden_states");
  }
  ASSIGN_OR_RETURN(options.arguments,
                   params.StringList("arguments", options.arguments));
  ASSIGN_OR_RETURN(options.shared_arguments,
                   params.StringList("shared_arguments", {}));
  for (const std::string& name : options.arguments) {
    const std::string key = absl::StrCat("shape.", name);
    if (!params.Has(key)) continue;
    ASSIGN_OR_RETURN(std::vector<int64_t> shape, params.IntList(key, {}));
    options.shapes.emplace_back(name, std::move(shape));
  }
  ASSIGN_OR_RETURN(options.timestep_scale,
                   params.Double("timestep_scale", 1.0));
  if (!(options.timestep_scale > 0)) {
    return ParamError("timestep_scale", "must be > 0");
  }
  ASSIGN_OR_RETURN(
      const std::string timestep_dtype,
      params.Choice("timestep_dtype", "", {"", "float32", "float64", "int64"}));
  if (timestep_dtype == "float32") options.timestep_dtype = at::kFloat;
  if (timestep_dtype == "float64") options.timestep_dtype = at::kDouble;
  if (timestep_dtype == "int64") options.timestep_dtype = at::kLong;
  ASSIGN_OR_RETURN(options.output, params.String("output", ""));
  RETURN_IF_ERROR(params.CheckAllRead());
  return options;
}

absl::StatusOr<std::shared_ptr<const Denoiser>> MakeTorchScriptDenoiser(
    const BlockParams& raw, const ComponentContext& context) {
  ParamReader params(raw);
  ASSIGN_OR_RETURN(const TorchScriptDenoiser::Options options,
                   ReadTorchScriptDenoiserOptions(params, context));
  ASSIGN_OR_RETURN(std::shared_ptr<const Denoiser> denoiser,
                   TorchScriptDenoiser::Load(options));
  return BatchAcrossRuns(std::move(denoiser), context);
}

// ---- decoders ----

absl::StatusOr<std::shared_ptr<const ImageDecoder>> MakeTorchScriptDecoder(
    const BlockParams& raw, const ComponentContext& context) {
  ParamReader params(raw);
  ASSIGN_OR_RETURN(auto options, ReadModelOptions<TorchScriptDecoder::Options>(
                                     params, context));
  ASSIGN_OR_RETURN(options.scaling_factor, ReadScalingFactor(params));
  RETURN_IF_ERROR(params.CheckAllRead());
  return TorchScriptDecoder::Load(options);
}

absl::StatusOr<std::shared_ptr<const LatentPreview>> MakeLatentPreview(
    const BlockParams& raw, const ComponentContext&) {
  ParamReader params(raw);
  ASSIGN_OR_RETURN(std::vector<double> factors,
                   params.DoubleList("factors", {}));
  ASSIGN_OR_RETURN(std::vector<double> bias,
                   params.DoubleList("bias", {0, 0, 0}));
  ASSIGN_OR_RETURN(int64_t upscale, params.Int("upscale", 1));
  RETURN_IF_ERROR(params.CheckAllRead());
  if (factors.empty() || factors.size() % 3 != 0) {
    return ParamError("factors",
                      absl::StrCat("needs 3 numbers (R, G, B) per latent "
                                   "channel; got ",
                                   factors.size()));
  }
  if (bias.size() != 3) return ParamError("bias", "needs 3 numbers");
  if (upscale < 1 || upscale > 64) {
    return ParamError("upscale", "must be in [1, 64]");
  }
  return std::make_shared<const LatentPreview>(std::move(factors),
                                               std::move(bias), upscale);
}

// ---- encoders ----

absl::StatusOr<std::shared_ptr<const TextEncoder>> MakeTorchScriptTextEncoder(
    const BlockParams& raw, const ComponentContext& context) {
  ParamReader params(raw);
  ASSIGN_OR_RETURN(
      auto options,
      ReadModelOptions<TorchScriptTextEncoder::Options>(params, context));
  ASSIGN_OR_RETURN(options.outputs,
                   params.StringList("outputs", options.outputs));
  ASSIGN_OR_RETURN(const std::vector<std::string> tokenizers,
                   params.StringList("tokenizers", {}));
  RETURN_IF_ERROR(params.CheckAllRead());
  for (const std::string& dir : tokenizers) {
    absl::StatusOr<std::shared_ptr<const ClipTokenizer>> tokenizer =
        ClipTokenizer::Load(context.ResolvePath(dir));
    if (!tokenizer.ok()) {
      return ParamError("tokenizers", tokenizer.status().message());
    }
    options.tokenizers.push_back(*std::move(tokenizer));
  }
  return TorchScriptTextEncoder::Load(options);
}

absl::StatusOr<std::shared_ptr<const ImageEncoder>> MakeTorchScriptEncoder(
    const BlockParams& raw, const ComponentContext& context) {
  ParamReader params(raw);
  ASSIGN_OR_RETURN(auto options, ReadModelOptions<TorchScriptEncoder::Options>(
                                     params, context));
  ASSIGN_OR_RETURN(options.scaling_factor, ReadScalingFactor(params));
  ASSIGN_OR_RETURN(options.moments, params.Bool("moments", false));
  ASSIGN_OR_RETURN(options.sample, params.Bool("sample", false));
  ASSIGN_OR_RETURN(options.output, params.String("output", ""));
  RETURN_IF_ERROR(params.CheckAllRead());
  return TorchScriptEncoder::Load(options);
}

absl::StatusOr<std::shared_ptr<const ImageEncoder>> MakeIdentityEncoder(
    const BlockParams& raw, const ComponentContext&) {
  ParamReader params(raw);
  ASSIGN_OR_RETURN(const int64_t channels, params.Int("channels", 0));
  RETURN_IF_ERROR(params.CheckAllRead());
  if (channels < 0) return ParamError("channels", "must be >= 0");
  return std::make_shared<const IdentityEncoder>(channels);
}

}  // namespace

absl::Status RegisterModels(ComponentRegistry& registry) {
  RETURN_IF_ERROR(registry.Register<Denoiser>(
      std::string(GaussianMixtureDenoiser::kTypeName),
      MakeGaussianMixtureDenoiser));
  RETURN_IF_ERROR(registry.Register<Denoiser>(
      std::string(TorchScriptDenoiser::kTypeName), MakeTorchScriptDenoiser));
  RETURN_IF_ERROR(registry.Register<ImageDecoder>(
      std::string(TorchScriptDecoder::kTypeName), MakeTorchScriptDecoder));
  RETURN_IF_ERROR(
      (registry.Register<LatentPreview, ImageDecoder, IterationPreview>(
          std::string(LatentPreview::kTypeName), MakeLatentPreview)));
  RETURN_IF_ERROR(registry.Register<TextEncoder>(
      std::string(TorchScriptTextEncoder::kTypeName),
      MakeTorchScriptTextEncoder));
  RETURN_IF_ERROR(registry.Register<ImageEncoder>(
      std::string(TorchScriptEncoder::kTypeName), MakeTorchScriptEncoder));
  return registry.Register<ImageEncoder>(
      std::string(IdentityEncoder::kTypeName), MakeIdentityEncoder);
}

}  // namespace loopserve
