#include "blocks/diffusion/denoisers.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/param_reader.h"
#include "blocks/diffusion/noise_schedule.h"
#include "blocks/diffusion/torchscript_module.h"
#include "util/status_macros.h"

namespace loopserve {
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
    std::span<const at::Tensor>) const {
  const int64_t rows = sample.dim() > 0 ? sample.size(0) : 1;
  if (!timestep.defined() ||
      (timestep.numel() != 1 && timestep.numel() != rows)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the timestep must have 1 or ", rows, " values, got ",
                     timestep.defined() ? timestep.numel() : 0));
  }
  // Rows that share a timestep are computed together, as an unbatched
  // call computes them (Note [step batching]: a batch of runs at other
  // steps gets each run's rows exactly).
  const at::Tensor t = timestep.to(at::kCPU, at::kDouble).reshape({-1});
  const double* values = t.data_ptr<double>();
  if (t.numel() == 1 || std::all_of(values, values + rows,
                                    [&](double v) { return v == values[0]; })) {
    return PredictAt(sample, values[0]);
  }
  std::vector<at::Tensor> parts;
  for (int64_t begin = 0; begin < rows;) {
    int64_t end = begin + 1;
    while (end < rows && values[end] == values[begin]) ++end;
    parts.push_back(
        PredictAt(sample.narrow(0, begin, end - begin), values[begin]));
    begin = end;
  }
  return at::cat(parts);
}

at::Tensor GaussianMixtureDenoiser::PredictAt(const at::Tensor& sample,
                                              double t) const {
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
    Options options, std::unique_ptr<torch::jit::Module> module,
    std::vector<ModelArgument> conditioning, OutputSelector output)
    : options_(std::move(options)),
      conditioning_(std::move(conditioning)),
      output_(std::move(output)),
      module_(std::move(module)) {
  for (const auto& [name, shape] : options_.shapes) {
    if (name == "sample") sample_shape_ = shape;
  }
}

TorchScriptDenoiser::~TorchScriptDenoiser() = default;

namespace {

// The conditioning arguments `options` declare, checked against each other.
absl::StatusOr<std::vector<ModelArgument>> ConditioningOf(
    const TorchScriptDenoiser::Options& options) {
  absl::flat_hash_set<std::string> seen;
  std::vector<ModelArgument> conditioning;
  for (const std::string& name : options.arguments) {
    if (name.empty()) return ParamError("arguments", "has an empty name");
    if (!seen.insert(name).second) {
      return ParamError("arguments", absl::StrCat("names '", name, "' twice"));
    }
    if (name == "sample" || name == "timestep") continue;
    if (absl::StartsWith(name, "negative_")) {
      return ParamError(
          "arguments",
          absl::StrCat("'", name,
                       "': names starting 'negative_' are the "
                       "unconditional counterparts of conditioning values"));
    }
    conditioning.push_back({.name = name});
  }
  for (absl::string_view needed : {"sample", "timestep"}) {
    if (!seen.contains(needed)) {
      return ParamError("arguments",
                        absl::StrCat("must include '", needed, "'"));
    }
  }
  auto find = [&](absl::string_view param,
                  const std::string& name) -> absl::StatusOr<ModelArgument*> {
    for (ModelArgument& argument : conditioning) {
      if (argument.name == name) return &argument;
    }
    return ParamError(param, absl::StrCat("'", name,
                                          "' is not one of the conditioning "
                                          "arguments"));
  };
  for (const std::string& name : options.shared_arguments) {
    ASSIGN_OR_RETURN(ModelArgument * argument, find("shared_arguments", name));
    argument->shared = true;
  }
  for (const auto& [name, shape] : options.shapes) {
    for (int64_t size : shape) {
      if (size < -1 || size == 0) {
        return ParamError(absl::StrCat("shape.", name),
                          "sizes must be >= 1, or -1 for any");
      }
    }
    if (name == "sample") continue;  // TorchScriptDenoiser::sample_shape
    ASSIGN_OR_RETURN(ModelArgument * argument,
                     find(absl::StrCat("shape.", name), name));
    argument->shape = shape;
  }
  return conditioning;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TorchScriptDenoiser>>
TorchScriptDenoiser::Load(const Options& options) {
  ASSIGN_OR_RETURN(std::vector<ModelArgument> conditioning,
                   ConditioningOf(options));
  ASSIGN_OR_RETURN(OutputSelector output,
                   OutputSelector::Parse(options.output));
  if (options.timestep_dtype == at::kLong && options.timestep_scale != 1.0) {
    return ParamError("timestep_scale",
                      "a scaled timestep cannot be int64 (timestep_dtype)");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<torch::jit::Module> module,
                   LoadModule(options.path, options.device, options.dtype));
  const std::vector<std::string> forward = ForwardArgumentNames(*module);
  if (forward.size() != options.arguments.size()) {
    return ParamError(
        "arguments",
        absl::StrCat("lists ", options.arguments.size(), " (",
                     absl::StrJoin(options.arguments, ", "),
                     ") but the module's forward takes ", forward.size(), " (",
                     absl::StrJoin(forward, ", "), ")"));
  }
  return std::shared_ptr<const TorchScriptDenoiser>(new TorchScriptDenoiser(
      options, std::move(module), std::move(conditioning), std::move(output)));
}

absl::StatusOr<at::Tensor> TorchScriptDenoiser::Predict(
    const at::Tensor& sample, const at::Tensor& timestep,
    std::span<const at::Tensor> conditioning) const {
  if (conditioning.size() != conditioning_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the denoiser takes ", conditioning_.size(),
                     " conditioning values, got ", conditioning.size()));
  }
  // The module's dtype for floating values; other dtypes (ids) as given.
  auto to_model = [&](const at::Tensor& t) {
    return at::isFloatingType(t.scalar_type()) ? t.to(options_.dtype) : t;
  };
  at::Tensor t = timestep;
  if (options_.timestep_scale != 1.0) {
    t = t.to(options_.timestep_dtype.value_or(at::kFloat))
            .mul(options_.timestep_scale);
  } else if (options_.timestep_dtype.has_value()) {
    t = t.to(*options_.timestep_dtype);
  }
  std::vector<c10::IValue> values;
  std::vector<NamedValue> inputs;
  values.reserve(options_.arguments.size());
  size_t next = 0;
  for (const std::string& name : options_.arguments) {
    if (name == "sample") {
      values.emplace_back(sample.to(options_.dtype));
    } else if (name == "timestep") {
      values.emplace_back(t);
    } else {
      values.emplace_back(to_model(conditioning[next++]));
    }
  }
  for (size_t i = 0; i < values.size(); ++i) {
    inputs.push_back({options_.arguments[i], &values[i]});
  }
  ASSIGN_OR_RETURN(c10::IValue out, CallModule(*module_, "denoiser", inputs));
  ASSIGN_OR_RETURN(at::Tensor output, output_.Select(out, "denoiser"));
  if (output.sizes() != sample.sizes()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the denoiser returned ", ShapeString(output),
                     " for a sample of ", ShapeString(sample)));
  }
  return output.to(sample.scalar_type());
}

}  // namespace loopserve
