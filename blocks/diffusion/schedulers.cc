#include "blocks/diffusion/schedulers.h"

#include <ATen/ATen.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "blocks/core/status_macros.h"

namespace loopserve {
namespace {

// The configuration keys each scheduler reads (diffusers' names).
constexpr absl::string_view kCommonKeys[] = {
    "num_train_timesteps", "beta_start",       "beta_end",
    "beta_schedule",       "prediction_type",  "timestep_spacing",
    "steps_offset"};
constexpr absl::string_view kDdimKeys[] = {"set_alpha_to_one", "clip_sample",
                                           "clip_sample_range"};

// Keys of a scheduler_config.json that change the algorithm: a file may
// carry them only at their default (null for trained_betas). Anything else
// in the file (_class_name, skip_prk_steps, sample_max_value ...) does not
// change DDIM or Euler as implemented and is ignored, as diffusers ignores
// keys a scheduler does not take.
struct DefaultOnly {
  absl::string_view key;
  // The only accepted value: "null", "false", or a string.
  absl::string_view value;
};
constexpr DefaultOnly kDefaultOnlyKeys[] = {
    {"trained_betas", "null"},       {"thresholding", "false"},
    {"rescale_betas_zero_snr", "false"}, {"use_karras_sigmas", "false"},
    {"use_exponential_sigmas", "false"}, {"use_beta_sigmas", "false"},
    {"interpolation_type", "linear"},    {"timestep_type", "discrete"},
    {"final_sigmas_type", "zero"}};

std::string DescribeJson(const google::protobuf::Value& value) {
  switch (value.kind_case()) {
    case google::protobuf::Value::kNullValue:
      return "null";
    case google::protobuf::Value::kBoolValue:
      return value.bool_value() ? "true" : "false";
    case google::protobuf::Value::kStringValue:
      return value.string_value();
    case google::protobuf::Value::kNumberValue:
      return absl::StrCat(value.number_value());
    default:
      return "a list or object";
  }
}

absl::StatusOr<c10::IValue> JsonToValue(absl::string_view key,
                                        const google::protobuf::Value& value) {
  switch (value.kind_case()) {
    case google::protobuf::Value::kBoolValue:
      return c10::IValue(value.bool_value());
    case google::protobuf::Value::kStringValue:
      return c10::IValue(value.string_value());
    case google::protobuf::Value::kNumberValue:
      return c10::IValue(value.number_value());
    default:
      return ParamError(key, absl::StrCat("unsupported value ",
                                          DescribeJson(value)));
  }
}

// The params a diffusers scheduler_config.json at `path` sets, for the keys
// this scheduler reads.
absl::StatusOr<BlockParams> ReadSchedulerConfigJson(const std::string& path,
                                           bool ddim) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("param 'config_file': cannot read '", path, "'"));
  }
  std::stringstream text;
  text << in.rdbuf();
  google::protobuf::Struct json;
  if (auto status = google::protobuf::util::JsonStringToMessage(text.str(),
                                                                 &json);
      !status.ok()) {
    return ParamError("config_file",
                      absl::StrCat("'", path, "' is not a JSON object: ",
                                   status.message().as_string()));
  }
  const auto& fields = json.fields();
  for (const DefaultOnly& key : kDefaultOnlyKeys) {
    auto it = fields.find(std::string(key.key));
    if (it != fields.end() && DescribeJson(it->second) != key.value) {
      return ParamError(
          "config_file",
          absl::StrCat("'", path, "' sets ", key.key, " = ",
                       DescribeJson(it->second),
                       "; loopserve supports only ", key.value));
    }
  }
  BlockParams params;
  auto take = [&](absl::string_view key) -> absl::Status {
    auto it = fields.find(std::string(key));
    if (it == fields.end() ||
        it->second.kind_case() == google::protobuf::Value::kNullValue) {
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(c10::IValue value, JsonToValue(key, it->second));
    params.emplace(std::string(key), std::move(value));
    return absl::OkStatus();
  };
  for (absl::string_view key : kCommonKeys) RETURN_IF_ERROR(take(key));
  if (ddim) {
    for (absl::string_view key : kDdimKeys) RETURN_IF_ERROR(take(key));
  }
  return params;
}

// numpy's arange(start, stop, step) in double.
std::vector<double> Arange(double start, double stop, double step) {
  const auto n = static_cast<int64_t>(std::ceil((stop - start) / step));
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(start + i * step);
  return out;
}

// numpy's linspace(start, stop, num) in double.
std::vector<double> Linspace(double start, double stop, int64_t num) {
  std::vector<double> out;
  if (num == 1) return {start};
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) out.push_back(i * step + start);
  out.back() = stop;
  return out;
}

// The timesteps of diffusers' set_timesteps, before the final cast, in
// descending order: `round` says whether the spacing rounds (DDIM always
// does; Euler's linspace does not).
std::vector<double> SpacedTimesteps(const SchedulerConfig& config, int64_t n,
                                    bool round_linspace) {
  const int64_t train = config.noise.num_train_timesteps;
  std::vector<double> t;
  if (config.timestep_spacing == "linspace") {
    t = Linspace(0, static_cast<double>(train - 1), n);
    if (round_linspace) {
      for (double& v : t) v = std::nearbyint(v);  // numpy rounds half to even
    }
    std::reverse(t.begin(), t.end());
  } else if (config.timestep_spacing == "leading") {
    const int64_t ratio = train / n;
    for (int64_t i = n - 1; i >= 0; --i) {
      t.push_back(static_cast<double>(i * ratio + config.steps_offset));
    }
  } else {  // trailing
    const double ratio = static_cast<double>(train) / static_cast<double>(n);
    t = Arange(static_cast<double>(train), 0, -ratio);
    for (double& v : t) v = std::nearbyint(v) - 1;
  }
  return t;
}

at::Tensor CpuTensor(const std::vector<double>& values, at::ScalarType dtype) {
  return at::tensor(values, at::TensorOptions().dtype(at::kDouble))
      .to(dtype);
}

}  // namespace

absl::StatusOr<SchedulerConfig> ReadSchedulerConfig(
    const BlockParams& raw, const ComponentContext& context, bool ddim) {
  BlockParams params;
  ParamReader explicit_params(raw);
  if (explicit_params.Has("config_file")) {
    ASSIGN_OR_RETURN(std::string file,
                     explicit_params.String("config_file", ""));
    ASSIGN_OR_RETURN(params, ReadSchedulerConfigJson(context.ResolvePath(file), ddim));
  }
  for (const auto& [key, value] : raw) {
    if (key != "config_file") params.insert_or_assign(key, value);
  }

  ParamReader reader(params);
  SchedulerConfig config;
  ASSIGN_OR_RETURN(config.noise, NoiseSchedule::Read(reader));
  ASSIGN_OR_RETURN(config.prediction_type,
                   reader.Choice("prediction_type", "epsilon",
                                 {"epsilon", "v_prediction", "sample"}));
  ASSIGN_OR_RETURN(config.timestep_spacing,
                   reader.Choice("timestep_spacing",
                                 ddim ? "leading" : "linspace",
                                 {"leading", "trailing", "linspace"}));
  ASSIGN_OR_RETURN(config.steps_offset, reader.Int("steps_offset", 0));
  if (ddim) {
    ASSIGN_OR_RETURN(config.set_alpha_to_one,
                     reader.Bool("set_alpha_to_one", true));
    ASSIGN_OR_RETURN(config.clip_sample, reader.Bool("clip_sample", true));
    ASSIGN_OR_RETURN(config.clip_sample_range,
                     reader.Double("clip_sample_range", 1.0));
  }
  if (config.steps_offset < 0 ||
      config.steps_offset >= config.noise.num_train_timesteps) {
    return ParamError("steps_offset", "must be in [0, num_train_timesteps)");
  }
  RETURN_IF_ERROR(reader.CheckAllRead());
  return config;
}

Scheduler::Scheduler(SchedulerConfig config)
    : config_(std::move(config)),
      alphas_cumprod_(config_.noise.AlphasCumprod()) {}

absl::Status Scheduler::CheckStepCount(int64_t n) const {
  if (n < 1 || n > config_.noise.num_train_timesteps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'num_inference_steps' must be in [1, ",
        config_.noise.num_train_timesteps, "] (the scheduler's ",
        "num_train_timesteps), got ", n));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::CheckStepIndex(const Schedule& schedule,
                                       int64_t step_index) const {
  if (step_index < 0 || step_index >= schedule.size()) {
    return absl::OutOfRangeError(absl::StrCat("step ", step_index,
                                              " is outside the schedule of ",
                                              schedule.size(), " steps"));
  }
  return absl::OkStatus();
}

// ---- DDIM ----

DdimScheduler::DdimScheduler(SchedulerConfig config)
    : Scheduler(std::move(config)),
      final_alpha_cumprod_(config_.set_alpha_to_one
                               ? 1.0f
                               : alphas_cumprod_[0].item<float>()) {}

float DdimScheduler::AlphaProd(int64_t timestep) const {
  if (timestep < 0) return final_alpha_cumprod_;
  return alphas_cumprod_.data_ptr<float>()[timestep];
}

absl::StatusOr<Schedule> DdimScheduler::SetTimesteps(int64_t n) const {
  RETURN_IF_ERROR(CheckStepCount(n));
  std::vector<double> t = SpacedTimesteps(config_, n, /*round_linspace=*/true);
  for (double v : t) {
    if (v < 0 || v >= config_.noise.num_train_timesteps) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'num_inference_steps' = ", n, " with steps_offset ",
          config_.steps_offset, " gives timestep ", v,
          ", outside the training range"));
    }
  }
  Schedule schedule;
  schedule.timesteps = CpuTensor(t, at::kLong);
  // Not used by DDIM's step; reported so that every scheduler's schedule
  // says its noise levels.
  const at::Tensor sigmas = TrainingSigmas(alphas_cumprod_)
                                .index_select(0, schedule.timesteps);
  schedule.sigmas = at::cat({sigmas, at::zeros({1}, sigmas.options())});
  schedule.init_noise_sigma = 1.0;
  return schedule;
}

at::Tensor DdimScheduler::ScaleModelInput(const Schedule&,
                                          const at::Tensor& sample,
                                          int64_t) const {
  return sample;
}

absl::StatusOr<StepResult> DdimScheduler::Step(
    const Schedule& schedule, const at::Tensor& model_output,
    int64_t step_index, const at::Tensor& sample,
    const StepOptions& options) const {
  RETURN_IF_ERROR(CheckStepIndex(schedule, step_index));
  const int64_t timestep = schedule.timesteps.data_ptr<int64_t>()[step_index];
  const int64_t prev_timestep =
      timestep - config_.noise.num_train_timesteps / schedule.size();

  // The scalar arithmetic is float32, as diffusers' 0-d float32 tensors.
  const float alpha_prod_t = AlphaProd(timestep);
  const float alpha_prod_t_prev = AlphaProd(prev_timestep);
  const float beta_prod_t = 1.0f - alpha_prod_t;
  const float sqrt_alpha_t = std::sqrt(alpha_prod_t);
  const float sqrt_beta_t = std::sqrt(beta_prod_t);

  at::Tensor pred_original_sample;
  at::Tensor pred_epsilon;
  if (config_.prediction_type == "epsilon") {
    pred_original_sample = (sample - sqrt_beta_t * model_output) / sqrt_alpha_t;
    pred_epsilon = model_output;
  } else if (config_.prediction_type == "v_prediction") {
    pred_original_sample = sqrt_alpha_t * sample - sqrt_beta_t * model_output;
    pred_epsilon = sqrt_alpha_t * model_output + sqrt_beta_t * sample;
  } else {  // sample
    pred_original_sample = model_output;
    pred_epsilon = (sample - sqrt_alpha_t * pred_original_sample) / sqrt_beta_t;
  }
  if (config_.clip_sample) {
    pred_original_sample = pred_original_sample.clamp(
        -config_.clip_sample_range, config_.clip_sample_range);
  }

  const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
  const float variance = (beta_prod_t_prev / beta_prod_t) *
                         (1.0f - alpha_prod_t / alpha_prod_t_prev);
  const float std_dev_t =
      static_cast<float>(options.eta) * std::sqrt(variance);
  const float direction_scale =
      std::sqrt(1.0f - alpha_prod_t_prev - std_dev_t * std_dev_t);
  at::Tensor prev_sample =
      std::sqrt(alpha_prod_t_prev) * pred_original_sample +
      direction_scale * pred_epsilon;

  if (options.eta > 0) {
    if (options.generator == nullptr) {
      return absl::FailedPreconditionError(
          "DDIM with eta > 0 needs a generator for its noise");
    }
    // diffusers' randn_tensor with a CPU generator: drawn on the CPU, then
    // moved, so a seed gives the same noise on every device.
    const at::Tensor noise =
        at::randn(model_output.sizes(), *options.generator,
                  at::TensorOptions().dtype(model_output.scalar_type()))
            .to(model_output.device());
    prev_sample = prev_sample + std_dev_t * noise;
  }
  return StepResult{.prev_sample = std::move(prev_sample),
                    .pred_original_sample = std::move(pred_original_sample)};
}

// ---- Euler ----

EulerScheduler::EulerScheduler(SchedulerConfig config)
    : Scheduler(std::move(config)),
      training_sigmas_(TrainingSigmas(alphas_cumprod_)) {}

absl::StatusOr<Schedule> EulerScheduler::SetTimesteps(int64_t n) const {
  RETURN_IF_ERROR(CheckStepCount(n));
  std::vector<double> t =
      SpacedTimesteps(config_, n, /*round_linspace=*/false);
  Schedule schedule;
  // diffusers casts the timesteps to float32 before interpolating.
  schedule.timesteps = CpuTensor(t, at::kFloat);
  const float* t32 = schedule.timesteps.data_ptr<float>();
  std::vector<double> sigmas;
  sigmas.reserve(n + 1);
  for (int64_t i = 0; i < n; ++i) {
    sigmas.push_back(InterpolateSigma(training_sigmas_, t32[i]));
  }
  sigmas.push_back(0.0);
  schedule.sigmas = CpuTensor(sigmas, at::kFloat);

  const float max_sigma = schedule.sigmas.max().item<float>();
  schedule.init_noise_sigma =
      (config_.timestep_spacing == "linspace" ||
       config_.timestep_spacing == "trailing")
          ? max_sigma
          : std::sqrt(max_sigma * max_sigma + 1.0f);
  return schedule;
}

at::Tensor EulerScheduler::ScaleModelInput(const Schedule& schedule,
                                           const at::Tensor& sample,
                                           int64_t step_index) const {
  const float sigma = schedule.sigmas.data_ptr<float>()[step_index];
  return sample / std::sqrt(sigma * sigma + 1.0f);
}

absl::StatusOr<StepResult> EulerScheduler::Step(
    const Schedule& schedule, const at::Tensor& model_output,
    int64_t step_index, const at::Tensor& sample_in,
    const StepOptions&) const {
  RETURN_IF_ERROR(CheckStepIndex(schedule, step_index));
  // s_churn = 0 (diffusers' default): gamma = 0, sigma_hat = sigma, no noise.
  const float* sigmas = schedule.sigmas.data_ptr<float>();
  const float sigma = sigmas[step_index];
  const at::Tensor sample = sample_in.to(at::kFloat);

  at::Tensor pred_original_sample;
  if (config_.prediction_type == "epsilon") {
    pred_original_sample = sample - sigma * model_output;
  } else if (config_.prediction_type == "v_prediction") {
    const float s2 = sigma * sigma + 1.0f;
    pred_original_sample =
        model_output * (-sigma / std::sqrt(s2)) + sample / s2;
  } else {  // sample
    pred_original_sample = model_output;
  }
  const at::Tensor derivative = (sample - pred_original_sample) / sigma;
  const float dt = sigmas[step_index + 1] - sigma;
  at::Tensor prev_sample =
      (sample + derivative * dt).to(model_output.scalar_type());
  return StepResult{.prev_sample = std::move(prev_sample),
                    .pred_original_sample = std::move(pred_original_sample)};
}

absl::Status RegisterSchedulers(ComponentRegistry& registry) {
  RETURN_IF_ERROR(registry.Register<Scheduler>(
      std::string(DdimScheduler::kTypeName),
      [](const BlockParams& params, const ComponentContext& context)
          -> absl::StatusOr<std::shared_ptr<const Scheduler>> {
        ASSIGN_OR_RETURN(SchedulerConfig config,
                         ReadSchedulerConfig(params, context, /*ddim=*/true));
        return std::make_shared<const DdimScheduler>(std::move(config));
      }));
  return registry.Register<Scheduler>(
      std::string(EulerScheduler::kTypeName),
      [](const BlockParams& params, const ComponentContext& context)
          -> absl::StatusOr<std::shared_ptr<const Scheduler>> {
        ASSIGN_OR_RETURN(SchedulerConfig config,
                         ReadSchedulerConfig(params, context, /*ddim=*/false));
        return std::make_shared<const EulerScheduler>(std::move(config));
      });
}

}  // namespace loopserve
