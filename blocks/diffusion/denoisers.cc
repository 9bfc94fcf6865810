#include "blocks/diffusion/denoisers.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/param_reader.h"
#include "blocks/core/status_macros.h"
#include "blocks/diffusion/noise_schedule.h"
#include "blocks/diffusion/png.h"

namespace loopserve {
namespace {

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ","), "]");
}

absl::StatusOr<std::unique_ptr<torch::jit::Module>> LoadModule(
    const std::string& path, c10::Device device, at::ScalarType dtype) {
  try {
    auto module =
        std::make_unique<torch::jit::Module>(torch::jit::load(path, device));
    module->eval();
    module->to(dtype);
    return module;
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("param 'path': cannot load TorchScript module '", path,
                     "': ", e.what_without_backtrace()));
  }
}

// The first tensor of a module's result: a tensor, or a tuple or list whose
// first element is one (diffusers' return_dict=False form).
absl::StatusOr<at::Tensor> FirstTensor(const c10::IValue& out) {
  if (out.isTensor()) return out.toTensor();
  if (out.isTuple() && !out.toTupleRef().elements().empty() &&
      out.toTupleRef().elements()[0].isTensor()) {
    return out.toTupleRef().elements()[0].toTensor();
  }
  if (out.isList() && !out.toListRef().empty() &&
      out.toListRef()[0].isTensor()) {
    return out.toListRef()[0].toTensor();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "the module returned ", out.tagKind(), ", not a tensor"));
}

absl::StatusOr<c10::IValue> Forward(torch::jit::Module& module,
                                    std::vector<c10::IValue> inputs,
                                    const at::Tensor& first) {
  try {
    c10::InferenceMode guard;
    return module.forward(std::move(inputs));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("the module's forward failed on input ",
                     ShapeString(first), ": ", e.what_without_backtrace()));
  }
}

// Reads the params every TorchScript component takes: `path` (required,
// resolved against the configuration's folder) and `dtype`.
template <typename Options>
absl::StatusOr<Options> ReadModelOptions(ParamReader& params,
                                         const ComponentContext& context) {
  Options options{.device = context.device};
  ASSIGN_OR_RETURN(std::string path, params.String("path", ""));
  if (path.empty()) return ParamError("path", "is required");
  options.path = context.ResolvePath(path);
  ASSIGN_OR_RETURN(std::string dtype, params.String("dtype", "float32"));
  ASSIGN_OR_RETURN(options.dtype, ParseModelDtype(dtype));
  return options;
}

// The mixture's params, checked.
absl::StatusOr<GaussianMixtureDenoiser::Mixture> ReadMixture(
    ParamReader& params) {
  GaussianMixtureDenoiser::Mixture m;
  ASSIGN_OR_RETURN(m.weights, params.DoubleList("weights", {}));
  ASSIGN_OR_RETURN(m.means, params.DoubleList("means", {}));
  ASSIGN_OR_RETURN(m.stds, params.DoubleList("stds", {}));
  if (m.weights.empty()) return ParamError("weights", "is required");
  if (m.means.size() != m.weights.size() ||
      m.stds.size() != m.weights.size()) {
    return ParamError("means", absl::StrCat("weights, means and stds need the "
                                            "same length; got ",
                                            m.weights.size(), ", ",
                                            m.means.size(), ", ",
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

}  // namespace

absl::StatusOr<at::ScalarType> ParseModelDtype(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "float32" || lower == "fp32") return at::kFloat;
  if (lower == "float16" || lower == "fp16") return at::kHalf;
  if (lower == "bfloat16" || lower == "bf16") return at::kBFloat16;
  return ParamError("dtype", absl::StrCat("must be float32, float16 or "
                                          "bfloat16; got '", name, "'"));
}

// ---- gaussian_mixture_denoiser ----

GaussianMixtureDenoiser::GaussianMixtureDenoiser(
    Mixture mixture, const at::Tensor& alphas_cumprod, Prediction prediction)
    : mixture_(std::move(mixture)),
      training_sigmas_(TrainingSigmas(alphas_cumprod)),
      num_train_timesteps_(alphas_cumprod.numel()),
      prediction_(prediction) {}

double GaussianMixtureDenoiser::AlphaProdAt(double timestep) const {
  const double sigma = InterpolateSigma(training_sigmas_, timestep);
  return 1.0 / (1.0 + sigma * sigma);
}

std::pair<at::Tensor, at::Tensor> GaussianMixtureDenoiser::Posterior(
    const at::Tensor& x, double scale, double noise) const {
  // x is Σ w_k N(scale·μ_k, scale² s_k² + noise²). Per mode, x0 | x, k is
  // Gaussian with mean μ_k + scale s_k² (x − scale μ_k) / var_k; r_k are
  // the modes' posterior responsibilities.
  std::vector<at::Tensor> log_p;
  std::vector<at::Tensor> x0_k;
  for (size_t k = 0; k < mixture_.weights.size(); ++k) {
    const double s = mixture_.stds[k];
    const double var = scale * scale * s * s + noise * noise;
    const at::Tensor d = x - scale * mixture_.means[k];
    log_p.push_back(d.square() * (-0.5 / var) +
                    (std::log(mixture_.weights[k]) -
                     0.5 * std::log(2 * std::numbers::pi * var)));
    x0_k.push_back(mixture_.means[k] + d * (scale * s * s / var));
  }
  const at::Tensor r = at::softmax(at::stack(log_p, -1), -1);
  const at::Tensor x0 = (r * at::stack(x0_k, -1)).sum(-1);
  return {x0, (x - scale * x0) / noise};
}

absl::StatusOr<at::Tensor> GaussianMixtureDenoiser::Predict(
    const at::Tensor& sample, const at::Tensor& timestep,
    const at::Tensor&) const {
  if (!timestep.defined() || timestep.numel() < 1) {
    return absl::InvalidArgumentError("timestep is empty");
  }
  // One timestep for the whole batch, as a denoising loop passes it.
  const double t = timestep.flatten()[0].item<double>();
  const at::Tensor x = sample.to(at::kFloat);
  if (prediction_ == Prediction::kFlow) {
    const double sigma =
        std::clamp(t / static_cast<double>(num_train_timesteps_), 1e-6, 1.0);
    const auto [x0, eps] = Posterior(x, 1.0 - sigma, sigma);
    return (eps - x0).to(sample.scalar_type());
  }
  const double alpha = AlphaProdAt(t);
  const double sqrt_alpha = std::sqrt(alpha);
  const double sqrt_one_minus = std::sqrt(1.0 - alpha);
  const auto [x0, eps] = Posterior(x, sqrt_alpha, sqrt_one_minus);
  if (prediction_ == Prediction::kV) {
    return (sqrt_alpha * eps - sqrt_one_minus * x0).to(sample.scalar_type());
  }
  return eps.to(sample.scalar_type());
}

// ---- torchscript_denoiser ----

TorchScriptDenoiser::TorchScriptDenoiser(
    Options options, std::unique_ptr<torch::jit::Module> module)
    : options_(std::move(options)), module_(std::move(module)) {}

TorchScriptDenoiser::~TorchScriptDenoiser() = default;

absl::StatusOr<std::shared_ptr<const TorchScriptDenoiser>>
TorchScriptDenoiser::Load(const Options& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<torch::jit::Module> module,
                   LoadModule(options.path, options.device, options.dtype));
  return std::shared_ptr<const TorchScriptDenoiser>(
      new TorchScriptDenoiser(options, std::move(module)));
}

absl::StatusOr<at::Tensor> TorchScriptDenoiser::Predict(
    const at::Tensor& sample, const at::Tensor& timestep,
    const at::Tensor& encoder_hidden_states) const {
  std::vector<c10::IValue> inputs;
  inputs.emplace_back(sample.to(options_.dtype));
  inputs.emplace_back(timestep);
  if (options_.conditioned) {
    if (!encoder_hidden_states.defined()) {
      return absl::InvalidArgumentError(
          "input 'encoder_hidden_states' is required by this denoiser");
    }
    inputs.emplace_back(encoder_hidden_states.to(options_.dtype));
  }
  ASSIGN_OR_RETURN(c10::IValue out, Forward(*module_, std::move(inputs),
                                            sample));
  ASSIGN_OR_RETURN(at::Tensor output, FirstTensor(out));
  if (output.sizes() != sample.sizes()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the denoiser returned ", ShapeString(output), " for a sample of ",
        ShapeString(sample)));
  }
  return output.to(sample.scalar_type());
}

// ---- torchscript_decoder ----

TorchScriptDecoder::TorchScriptDecoder(
    Options options, std::unique_ptr<torch::jit::Module> module)
    : options_(std::move(options)), module_(std::move(module)) {}

TorchScriptDecoder::~TorchScriptDecoder() = default;

absl::StatusOr<std::shared_ptr<const TorchScriptDecoder>>
TorchScriptDecoder::Load(const Options& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<torch::jit::Module> module,
                   LoadModule(options.path, options.device, options.dtype));
  return std::shared_ptr<const TorchScriptDecoder>(
      new TorchScriptDecoder(options, std::move(module)));
}

absl::StatusOr<at::Tensor> TorchScriptDecoder::Decode(
    const at::Tensor& latents) const {
  const at::Tensor scaled =
      (latents / options_.scaling_factor).to(options_.dtype);
  ASSIGN_OR_RETURN(c10::IValue out, Forward(*module_, {scaled}, latents));
  ASSIGN_OR_RETURN(at::Tensor image, FirstTensor(out));
  if (image.dim() != 4 || image.size(1) != 3) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the decoder returned ", ShapeString(image), ", not [B,3,H,W]"));
  }
  // diffusers' image processor: [-1, 1] -> [0, 255].
  return ((image.to(at::kFloat) / 2 + 0.5).clamp(0, 1) * 255)
      .round()
      .to(at::kByte)
      .permute({0, 2, 3, 1})
      .contiguous()
      .cpu();
}

// ---- latent_preview ----

LatentPreview::LatentPreview(std::vector<double> factors,
                             std::vector<double> bias, int64_t upscale)
    : channels_(static_cast<int64_t>(factors.size() / 3)),
      factors_(at::tensor(factors, at::kDouble)
                   .to(at::kFloat)
                   .reshape({channels_, 3})),
      bias_(at::tensor(bias, at::kDouble).to(at::kFloat)),
      upscale_(upscale) {}

absl::StatusOr<at::Tensor> LatentPreview::Decode(
    const at::Tensor& latents) const {
  if (latents.dim() != 4 || latents.size(1) != channels_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "latent preview needs latents of [B,", channels_, ",H,W], got ",
        ShapeString(latents)));
  }
  // [B,C,H,W] -> [B,H,W,C] · [C,3] on the CPU: previews are small, and the
  // copy off the device is needed for the PNG anyway.
  at::Tensor rgb = at::matmul(
      latents.detach().to(at::kCPU, at::kFloat).permute({0, 2, 3, 1}),
      factors_);
  rgb = (((rgb + bias_) + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(
      at::kByte);
  if (upscale_ > 1) {
    rgb = rgb.repeat_interleave(upscale_, 1).repeat_interleave(upscale_, 2);
  }
  return rgb.contiguous();
}

absl::StatusOr<std::string> LatentPreview::RenderPng(
    const BlockState& state) const {
  const c10::IValue* value = state.Find("denoised");
  if (value == nullptr || !value->isTensor()) value = state.Find("latents");
  if (value == nullptr || !value->isTensor()) return std::string();
  ASSIGN_OR_RETURN(const at::Tensor rgb, Decode(value->toTensor()));
  return EncodePngSideBySide(rgb.data_ptr<uint8_t>(), rgb.size(0),
                             rgb.size(1), rgb.size(2));
}

// ---- registration ----

absl::Status RegisterModels(ComponentRegistry& registry) {
  RETURN_IF_ERROR(registry.Register<Denoiser>(
      std::string(GaussianMixtureDenoiser::kTypeName),
      [](const BlockParams& raw, const ComponentContext&)
          -> absl::StatusOr<std::shared_ptr<const Denoiser>> {
        ParamReader params(raw);
        ASSIGN_OR_RETURN(GaussianMixtureDenoiser::Mixture mixture,
                         ReadMixture(params));
        ASSIGN_OR_RETURN(NoiseSchedule schedule, NoiseSchedule::Read(params));
        ASSIGN_OR_RETURN(std::string prediction,
                         params.Choice("prediction_type", "epsilon",
                                       {"epsilon", "v_prediction", "flow"}));
        RETURN_IF_ERROR(params.CheckAllRead());
        return std::make_shared<const GaussianMixtureDenoiser>(
            std::move(mixture), schedule.AlphasCumprod(),
            prediction == "flow" ? GaussianMixtureDenoiser::Prediction::kFlow
            : prediction == "v_prediction"
                ? GaussianMixtureDenoiser::Prediction::kV
                : GaussianMixtureDenoiser::Prediction::kEpsilon);
      }));
  RETURN_IF_ERROR(registry.Register<Denoiser>(
      std::string(TorchScriptDenoiser::kTypeName),
      [](const BlockParams& raw, const ComponentContext& context)
          -> absl::StatusOr<std::shared_ptr<const Denoiser>> {
        ParamReader params(raw);
        ASSIGN_OR_RETURN(
            auto options,
            ReadModelOptions<TorchScriptDenoiser::Options>(params, context));
        ASSIGN_OR_RETURN(options.conditioned,
                         params.Bool("encoder_hidden_states", false));
        RETURN_IF_ERROR(params.CheckAllRead());
        return TorchScriptDenoiser::Load(options);
      }));
  RETURN_IF_ERROR(registry.Register<ImageDecoder>(
      std::string(TorchScriptDecoder::kTypeName),
      [](const BlockParams& raw, const ComponentContext& context)
          -> absl::StatusOr<std::shared_ptr<const ImageDecoder>> {
        ParamReader params(raw);
        ASSIGN_OR_RETURN(
            auto options,
            ReadModelOptions<TorchScriptDecoder::Options>(params, context));
        ASSIGN_OR_RETURN(options.scaling_factor,
                         params.Double("scaling_factor", 1.0));
        if (!(options.scaling_factor > 0)) {
          return ParamError("scaling_factor", "must be > 0");
        }
        RETURN_IF_ERROR(params.CheckAllRead());
        return TorchScriptDecoder::Load(options);
      }));
  return registry.Register<LatentPreview, ImageDecoder, IterationPreview>(
      std::string(LatentPreview::kTypeName),
      [](const BlockParams& raw, const ComponentContext&)
          -> absl::StatusOr<std::shared_ptr<const LatentPreview>> {
        ParamReader params(raw);
        ASSIGN_OR_RETURN(std::vector<double> factors,
                         params.DoubleList("factors", {}));
        ASSIGN_OR_RETURN(std::vector<double> bias,
                         params.DoubleList("bias", {0, 0, 0}));
        ASSIGN_OR_RETURN(int64_t upscale, params.Int("upscale", 1));
        RETURN_IF_ERROR(params.CheckAllRead());
        if (factors.empty() || factors.size() % 3 != 0) {
          return ParamError("factors", absl::StrCat(
                                           "needs 3 numbers (R, G, B) per "
                                           "latent channel; got ",
                                           factors.size()));
        }
        if (bias.size() != 3) return ParamError("bias", "needs 3 numbers");
        if (upscale < 1 || upscale > 64) {
          return ParamError("upscale", "must be in [1, 64]");
        }
        return std::make_shared<const LatentPreview>(std::move(factors),
                                                     std::move(bias), upscale);
      });
}

}  // namespace loopserve
