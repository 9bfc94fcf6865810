#include "blocks/diffusion/scheduler_config.h"

#include <google/protobuf/struct.pb.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/param_reader.h"
#include "blocks/diffusion/json_file.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

using Json = google::protobuf::Value;

// Every key of every diffusers scheduler's config (diffusers' schedulers/,
// 0.42: the __init__ arguments of every *Scheduler class),
// so that a key none of them knows is reported as the typo it is.
constexpr absl::string_view kDiffusersKeys[] = {
    "algorithm_type",
    "alpha_cum_end",
    "alpha_cum_start",
    "base_image_seq_len",
    "base_shift",
    "beta_end",
    "beta_schedule",
    "beta_start",
    "block_length",
    "clip_denoised",
    "clip_sample",
    "clip_sample_range",
    "correct_steps",
    "corrector_k",
    "corrector_order",
    "corrector_selection",
    "corrector_selection_tau",
    "corrector_steps",
    "disable_corrector",
    "dynamic_thresholding_ratio",
    "editing_threshold",
    "entropy_bound",
    "eps",
    "eta",
    "euler_at_final",
    "final_sigmas_type",
    "final_step_size_scale",
    "flow_shift",
    "gamma",
    "gamma_cum_end",
    "gamma_cum_start",
    "interpolation_type",
    "invert_sigmas",
    "lambda_min_clipped",
    "lower_order_final",
    "mask_token_id",
    "masking_schedule",
    "max_image_seq_len",
    "max_shift",
    "minimal_topk",
    "n_grid",
    "noise_mode",
    "noise_sampler_seed",
    "num_inference_steps",
    "num_policy_substeps",
    "num_train_timesteps",
    "num_vec_classes",
    "original_inference_steps",
    "predict_x0",
    "prediction_type",
    "predictor_order",
    "rescale_betas_zero_snr",
    "rho",
    "s",
    "s_churn",
    "s_max",
    "s_min",
    "s_noise",
    "s_tmax",
    "s_tmin",
    "sample_max_value",
    "sampling_eps",
    "scale_factors",
    "scaler",
    "schedule_mode",
    "scheduler_type",
    "set_alpha_to_one",
    "shift",
    "shift_terminal",
    "sigma_data",
    "sigma_max",
    "sigma_min",
    "sigma_schedule",
    "skip_prk_steps",
    "snr",
    "snr_shift_scale",
    "solver_order",
    "solver_p",
    "solver_type",
    "stage_range",
    "stages",
    "steps_offset",
    "stochastic_sampling",
    "t_lim_ode",
    "t_lim_ode_below",
    "t_max",
    "t_min",
    "tail_step_multiplier",
    "tail_steps",
    "tau_func",
    "threshold",
    "thresholding",
    "time_shift_type",
    "timestep_scaling",
    "timestep_spacing",
    "timestep_type",
    "trained_betas",
    "tsr_k",
    "tsr_sigma",
    "upscale_mode",
    "use_beta_sigmas",
    "use_dynamic_shifting",
    "use_exponential_sigmas",
    "use_flow_sigmas",
    "use_karras_sigmas",
    "use_lu_lambdas",
    "variance_type",
};

// A key a class has that loopserve implements only at its default, and that
// default as DescribeJson writes it.
struct DefaultOnly {
  absl::string_view key;
  absl::string_view value;
};

// What each kind reads, and what it takes only at its default.
struct KindKeys {
  std::vector<absl::string_view> read;
  std::vector<DefaultOnly> default_only;
};

const KindKeys& KeysOf(SchedulerKind kind) {
  static const auto* const kTable = [] {
    const std::vector<absl::string_view> noise = {
        "num_train_timesteps", "beta_start", "beta_end", "beta_schedule"};
    auto with = [&](std::vector<absl::string_view> more) {
      std::vector<absl::string_view> keys = noise;
      keys.insert(keys.end(), more.begin(), more.end());
      return keys;
    };
    const DefaultOnly kBetas = {"trained_betas", "null"};
    const DefaultOnly kZeroSnr = {"rescale_betas_zero_snr", "false"};
    const DefaultOnly kThresholding = {"thresholding", "false"};
    const DefaultOnly kExponential = {"use_exponential_sigmas", "false"};
    const DefaultOnly kBeta = {"use_beta_sigmas", "false"};
    const DefaultOnly kFlowSigmas = {"use_flow_sigmas", "false"};
    auto* table = new std::vector<std::pair<SchedulerKind, KindKeys>>{
        {SchedulerKind::kDdim,
         {with({"prediction_type", "timestep_spacing", "steps_offset",
                "set_alpha_to_one", "clip_sample", "clip_sample_range",
                "dynamic_thresholding_ratio", "sample_max_value"}),
          {kBetas, kZeroSnr, kThresholding}}},
        {SchedulerKind::kDdpm,
         {with({"prediction_type", "timestep_spacing", "steps_offset",
                "clip_sample", "clip_sample_range", "variance_type",
                "dynamic_thresholding_ratio", "sample_max_value"}),
          {kBetas, kZeroSnr, kThresholding}}},
        {SchedulerKind::kEuler,
         {with({"prediction_type", "timestep_spacing", "steps_offset",
                "use_karras_sigmas", "final_sigmas_type"}),
          {kBetas,
           kZeroSnr,
           kExponential,
           kBeta,
           {"interpolation_type", "linear"},
           {"timestep_type", "discrete"},
           {"sigma_min", "null"},
           {"sigma_max", "null"}}}},
        {SchedulerKind::kEulerAncestral,
         {with({"prediction_type", "timestep_spacing", "steps_offset"}),
          {kBetas, kZeroSnr}}},
        {SchedulerKind::kDpmSolverMultistep,
         {with({"prediction_type", "timestep_spacing", "steps_offset",
                "solver_order", "algorithm_type", "solver_type",
                "lower_order_final", "euler_at_final", "use_karras_sigmas",
                "final_sigmas_type", "dynamic_thresholding_ratio",
                "sample_max_value", "variance_type"}),
          {kBetas,
           kZeroSnr,
           kThresholding,
           kExponential,
           kBeta,
           kFlowSigmas,
           {"use_lu_lambdas", "false"},
           {"lambda_min_clipped", "-Infinity"}}}},
        {SchedulerKind::kUniPcMultistep,
         {with({"prediction_type", "timestep_spacing", "steps_offset",
                "solver_order", "solver_type", "lower_order_final",
                "use_karras_sigmas", "final_sigmas_type", "predict_x0",
                "disable_corrector", "dynamic_thresholding_ratio",
                "sample_max_value", "flow_shift", "time_shift_type"}),
          {kBetas,
           kZeroSnr,
           kThresholding,
           kExponential,
           kBeta,
           kFlowSigmas,
           {"solver_p", "null"},
           {"use_dynamic_shifting", "false"}}}},
        {SchedulerKind::kLcm,
         {with({"prediction_type", "timestep_spacing", "steps_offset",
                "set_alpha_to_one", "clip_sample", "clip_sample_range",
                "original_inference_steps", "timestep_scaling",
                "dynamic_thresholding_ratio", "sample_max_value"}),
          {kBetas, kZeroSnr, kThresholding}}},
        {SchedulerKind::kFlowMatchEuler,
         {{"num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift",
           "max_shift", "base_image_seq_len", "max_image_seq_len",
           "time_shift_type"},
          {{"invert_sigmas", "false"},
           {"shift_terminal", "null"},
           {"use_karras_sigmas", "false"},
           {"stochastic_sampling", "false"},
           kExponential,
           kBeta}}},
    };
    return table;
  }();
  for (const auto& [k, keys] : *kTable) {
    if (k == kind) return keys;
  }
  std::abort();  // every kind is in the table
}

const SchedulerType& TypeOf(SchedulerKind kind) {
  for (const SchedulerType& type : SchedulerTypes()) {
    if (type.kind == kind) return type;
  }
  std::abort();
}

std::string DescribeJson(const Json& value) {
  switch (value.kind_case()) {
    case Json::kNullValue:
      return "null";
    case Json::kBoolValue:
      return value.bool_value() ? "true" : "false";
    case Json::kStringValue:
      return value.string_value();
    case Json::kNumberValue:
      return absl::StrCat(value.number_value());
    case Json::kListValue:
      return value.list_value().values_size() == 0 ? "[]" : "a list";
    default:
      return "an object";
  }
}

absl::StatusOr<c10::IValue> JsonToValue(absl::string_view key,
                                        const Json& value) {
  switch (value.kind_case()) {
    case Json::kBoolValue:
      return c10::IValue(value.bool_value());
    case Json::kStringValue:
      return c10::IValue(value.string_value());
    case Json::kNumberValue:
      return c10::IValue(value.number_value());
    case Json::kListValue: {
      c10::impl::GenericList list(c10::AnyType::get());
      for (const Json& item : value.list_value().values()) {
        if (item.kind_case() != Json::kNumberValue) {
          return ParamError(key, "expected a list of numbers");
        }
        list.push_back(c10::IValue(item.number_value()));
      }
      return c10::IValue(list);
    }
    default:
      return ParamError(
          key, absl::StrCat("unsupported value ", DescribeJson(value)));
  }
}

// The number of single-character edits between `a` and `b`.
size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string DidYouMean(absl::string_view key) {
  absl::string_view best;
  size_t best_distance = 4;  // more edits than this is not a typo
  for (absl::string_view known : kDiffusersKeys) {
    const size_t d = EditDistance(key, known);
    if (d < best_distance) {
      best = known;
      best_distance = d;
    }
  }
  return best.empty() ? "" : absl::StrCat("; did you mean '", best, "'?");
}

// The config file's object; its errors name the param.
absl::StatusOr<google::protobuf::Struct> ReadJsonFile(const std::string& path) {
  absl::StatusOr<google::protobuf::Struct> json = ReadJsonObject(path);
  if (!json.ok()) {
    return absl::Status(
        json.status().code(),
        absl::StrCat("param 'config_file': ", json.status().message()));
  }
  return json;
}

absl::StatusOr<std::string> ConfigFilePath(const BlockParams& params,
                                           const ComponentContext& context) {
  ParamReader reader(params);
  ASSIGN_OR_RETURN(std::string file, reader.String("config_file", ""));
  return file.empty() ? "" : context.ResolvePath(file);
}

// The params a scheduler_config.json at `path` gives a `kind` scheduler.
absl::StatusOr<BlockParams> ReadConfigFile(SchedulerKind kind,
                                           const std::string& path,
                                           std::vector<std::string>& unused) {
  ASSIGN_OR_RETURN(const google::protobuf::Struct json, ReadJsonFile(path));
  const KindKeys& keys = KeysOf(kind);
  const absl::string_view class_name = TypeOf(kind).diffusers_class;
  BlockParams params;
  std::vector<std::string> names;
  for (const auto& [key, value] : json.fields()) names.push_back(key);
  std::sort(names.begin(), names.end());
  for (const std::string& key : names) {
    const Json& value = json.fields().at(key);
    if (absl::StartsWith(key, "_")) continue;  // _class_name, ...
    if (std::find(keys.read.begin(), keys.read.end(), key) != keys.read.end()) {
      if (value.kind_case() == Json::kNullValue) continue;
      ASSIGN_OR_RETURN(c10::IValue param, JsonToValue(key, value));
      params.emplace(key, std::move(param));
      continue;
    }
    auto only =
        std::find_if(keys.default_only.begin(), keys.default_only.end(),
                     [&](const DefaultOnly& d) { return d.key == key; });
    if (only != keys.default_only.end()) {
      const std::string given = DescribeJson(value);
      if (given != only->value) {
        return ParamError("config_file",
                          absl::StrCat("'", path, "' sets ", key, " = ", given,
                                       "; loopserve's ", class_name,
                                       " supports only ", only->value));
      }
      continue;
    }
    if (std::find(std::begin(kDiffusersKeys), std::end(kDiffusersKeys), key) !=
        std::end(kDiffusersKeys)) {
      unused.push_back(key);
      continue;
    }
    return ParamError(
        "config_file",
        absl::StrCat("'", path, "' has key '", key,
                     "', which no diffusers scheduler knows", DidYouMean(key)));
  }
  return params;
}

absl::StatusOr<std::vector<int64_t>> IntList(ParamReader& reader,
                                             absl::string_view name) {
  ASSIGN_OR_RETURN(std::vector<double> values, reader.DoubleList(name, {}));
  std::vector<int64_t> out;
  for (double v : values) {
    if (std::trunc(v) != v) return ParamError(name, "expected integers");
    out.push_back(static_cast<int64_t>(v));
  }
  return out;
}

// Reads `kind`'s keys with its diffusers class's defaults.
absl::StatusOr<SchedulerConfig> ReadKeys(SchedulerKind kind, ParamReader& r) {
  SchedulerConfig c;
  if (kind == SchedulerKind::kFlowMatchEuler) {
    ASSIGN_OR_RETURN(c.noise.num_train_timesteps,
                     r.Int("num_train_timesteps", 1000));
    if (c.noise.num_train_timesteps < 1) {
      return ParamError("num_train_timesteps", "must be >= 1");
    }
    ASSIGN_OR_RETURN(c.shift, r.Double("shift", 1.0));
    ASSIGN_OR_RETURN(c.use_dynamic_shifting,
                     r.Bool("use_dynamic_shifting", false));
    ASSIGN_OR_RETURN(c.base_shift, r.Double("base_shift", 0.5));
    ASSIGN_OR_RETURN(c.max_shift, r.Double("max_shift", 1.15));
    ASSIGN_OR_RETURN(c.base_image_seq_len, r.Int("base_image_seq_len", 256));
    ASSIGN_OR_RETURN(c.max_image_seq_len, r.Int("max_image_seq_len", 4096));
    RETURN_IF_ERROR(
        r.Choice("time_shift_type", "exponential", {"exponential"}).status());
    if (!(c.shift > 0)) return ParamError("shift", "must be > 0");
    if (c.max_image_seq_len == c.base_image_seq_len) {
      return ParamError("max_image_seq_len",
                        "must differ from base_image_seq_len");
    }
    return c;
  }

  const bool lcm = kind == SchedulerKind::kLcm;
  if (lcm) {
    c.noise.beta_start = 0.00085;
    c.noise.beta_end = 0.012;
    c.noise.beta_schedule = "scaled_linear";
  }
  ASSIGN_OR_RETURN(c.noise, NoiseSchedule::Read(r, c.noise));
  const bool ddpm = kind == SchedulerKind::kDdpm;
  const bool ddim_like = kind == SchedulerKind::kDdim || lcm;
  const bool ancestral = kind == SchedulerKind::kEulerAncestral;
  ASSIGN_OR_RETURN(c.prediction_type,
                   ancestral ? r.Choice("prediction_type", "epsilon",
                                        {"epsilon", "v_prediction"})
                             : r.Choice("prediction_type", "epsilon",
                                        {"epsilon", "v_prediction", "sample"}));
  ASSIGN_OR_RETURN(
      c.timestep_spacing,
      r.Choice("timestep_spacing", ddim_like || ddpm ? "leading" : "linspace",
               {"leading", "trailing", "linspace"}));
  ASSIGN_OR_RETURN(c.steps_offset, r.Int("steps_offset", 0));
  if (c.steps_offset < 0 || c.steps_offset >= c.noise.num_train_timesteps) {
    return ParamError("steps_offset", "must be in [0, num_train_timesteps)");
  }
  if (ddim_like) {
    ASSIGN_OR_RETURN(c.set_alpha_to_one, r.Bool("set_alpha_to_one", true));
    ASSIGN_OR_RETURN(c.clip_sample, r.Bool("clip_sample", !lcm));
    ASSIGN_OR_RETURN(c.clip_sample_range, r.Double("clip_sample_range", 1.0));
  }
  if (ddpm) {
    ASSIGN_OR_RETURN(c.clip_sample, r.Bool("clip_sample", true));
    ASSIGN_OR_RETURN(c.clip_sample_range, r.Double("clip_sample_range", 1.0));
    ASSIGN_OR_RETURN(c.variance_type, r.Choice("variance_type", "fixed_small",
                                               {"fixed_small", "fixed_large"}));
  }
  if (lcm) {
    ASSIGN_OR_RETURN(c.original_inference_steps,
                     r.Int("original_inference_steps", 50));
    ASSIGN_OR_RETURN(c.timestep_scaling, r.Double("timestep_scaling", 10.0));
    if (c.original_inference_steps < 1 ||
        c.original_inference_steps > c.noise.num_train_timesteps) {
      return ParamError("original_inference_steps",
                        "must be in [1, num_train_timesteps]");
    }
  }
  const bool dpm = kind == SchedulerKind::kDpmSolverMultistep;
  const bool unipc = kind == SchedulerKind::kUniPcMultistep;
  if (kind == SchedulerKind::kEuler || dpm || unipc) {
    ASSIGN_OR_RETURN(c.use_karras_sigmas, r.Bool("use_karras_sigmas", false));
    ASSIGN_OR_RETURN(
        c.final_sigmas_type,
        r.Choice("final_sigmas_type", "zero",
                 kind == SchedulerKind::kEuler
                     ? std::initializer_list<absl::string_view>{"zero"}
                     : std::initializer_list<absl::string_view>{"zero",
                                                                "sigma_min"}));
  }
  if (dpm || unipc) {
    ASSIGN_OR_RETURN(c.solver_order, r.Int("solver_order", 2));
    if (c.solver_order < 1 || c.solver_order > 3) {
      return ParamError("solver_order", "must be 1, 2 or 3");
    }
    ASSIGN_OR_RETURN(c.lower_order_final, r.Bool("lower_order_final", true));
  }
  if (ddim_like || ddpm || dpm || unipc) {
    // Thresholding's own knobs: read, and used only with thresholding,
    // which loopserve implements only off.
    RETURN_IF_ERROR(r.Double("dynamic_thresholding_ratio", 0.995).status());
    RETURN_IF_ERROR(r.Double("sample_max_value", 1.0).status());
  }
  if (dpm) {
    ASSIGN_OR_RETURN(c.algorithm_type,
                     r.Choice("algorithm_type", "dpmsolver++",
                              {"dpmsolver++", "sde-dpmsolver++"}));
    ASSIGN_OR_RETURN(c.solver_type,
                     r.Choice("solver_type", "midpoint", {"midpoint", "heun"}));
    ASSIGN_OR_RETURN(c.euler_at_final, r.Bool("euler_at_final", false));
    // Only the learned variances change DPM-Solver's step (they split the
    // model's output); a DDPM config's fixed ones are as good as none.
    RETURN_IF_ERROR(r.Choice("variance_type", "none",
                             {"none", "fixed_small", "fixed_small_log",
                              "fixed_large", "fixed_large_log"})
                        .status());
    if (c.algorithm_type == "sde-dpmsolver++" && c.solver_order == 3) {
      return ParamError("solver_order",
                        "diffusers' DPMSolverMultistepScheduler has no "
                        "third-order update for sde-dpmsolver++; use 1 or 2");
    }
  }
  if (unipc) {
    ASSIGN_OR_RETURN(c.solver_type,
                     r.Choice("solver_type", "bh2", {"bh1", "bh2"}));
    ASSIGN_OR_RETURN(c.predict_x0, r.Bool("predict_x0", true));
    ASSIGN_OR_RETURN(c.disable_corrector, IntList(r, "disable_corrector"));
    // Used only with flow sigmas and dynamic shifting, which loopserve
    // implements only off.
    RETURN_IF_ERROR(r.Double("flow_shift", 1.0).status());
    RETURN_IF_ERROR(
        r.Choice("time_shift_type", "exponential", {"exponential"}).status());
    // At a final σ of 0, h is infinite: B(h) = h (bh1), e^h (predicting
    // ε) and a higher-order last step make diffusers' last step NaN.
    // Refused rather than served.
    const char* nan_with = c.solver_type == "bh1" ? "solver_type bh1"
                           : !c.predict_x0        ? "predict_x0 false"
                           : !c.lower_order_final && c.solver_order > 1
                               ? "lower_order_final false"
                               : nullptr;
    if (c.final_sigmas_type == "zero" && nan_with != nullptr) {
      return ParamError(
          "final_sigmas_type",
          absl::StrCat("zero with ", nan_with,
                       " makes diffusers' UniPC end in NaN (its last step "
                       "meets an infinite h); use sigma_min"));
    }
  }
  return c;
}

}  // namespace

const std::vector<SchedulerType>& SchedulerTypes() {
  static const auto* const kTypes = new std::vector<SchedulerType>{
      {SchedulerKind::kDdim, "ddim_scheduler", "DDIMScheduler"},
      {SchedulerKind::kDdpm, "ddpm_scheduler", "DDPMScheduler"},
      {SchedulerKind::kEuler, "euler_scheduler", "EulerDiscreteScheduler"},
      {SchedulerKind::kEulerAncestral, "euler_ancestral_scheduler",
       "EulerAncestralDiscreteScheduler"},
      {SchedulerKind::kDpmSolverMultistep, "dpm_solver_multistep_scheduler",
       "DPMSolverMultistepScheduler"},
      {SchedulerKind::kUniPcMultistep, "unipc_multistep_scheduler",
       "UniPCMultistepScheduler"},
      {SchedulerKind::kLcm, "lcm_scheduler", "LCMScheduler"},
      {SchedulerKind::kFlowMatchEuler, "flow_match_euler_scheduler",
       "FlowMatchEulerDiscreteScheduler"},
  };
  return *kTypes;
}

absl::StatusOr<ReadConfig> ReadSchedulerConfig(
    SchedulerKind kind, const BlockParams& raw,
    const ComponentContext& context) {
  ReadConfig out;
  BlockParams params;
  ASSIGN_OR_RETURN(const std::string path, ConfigFilePath(raw, context));
  if (!path.empty()) {
    ASSIGN_OR_RETURN(params, ReadConfigFile(kind, path, out.unused_keys));
  }
  for (const auto& [key, value] : raw) {
    if (key != "config_file") params.insert_or_assign(key, value);
  }
  ParamReader reader(params);
  ASSIGN_OR_RETURN(out.config, ReadKeys(kind, reader));
  RETURN_IF_ERROR(reader.CheckAllRead());
  return out;
}

absl::StatusOr<SchedulerKind> SchedulerKindOfFile(
    const BlockParams& params, const ComponentContext& context) {
  std::vector<std::string> served;
  for (const SchedulerType& type : SchedulerTypes()) {
    served.emplace_back(type.diffusers_class);
  }
  ASSIGN_OR_RETURN(const std::string path, ConfigFilePath(params, context));
  if (path.empty()) {
    return ParamError("config_file",
                      "a diffusers_scheduler needs its scheduler_config.json");
  }
  ASSIGN_OR_RETURN(const google::protobuf::Struct json, ReadJsonFile(path));
  auto it = json.fields().find("_class_name");
  if (it == json.fields().end() ||
      it->second.kind_case() != Json::kStringValue) {
    return ParamError("config_file",
                      absl::StrCat("'", path,
                                   "' has no _class_name; name "
                                   "the scheduler type instead (",
                                   absl::StrJoin(served, ", "), ")"));
  }
  for (const SchedulerType& type : SchedulerTypes()) {
    if (type.diffusers_class == it->second.string_value()) return type.kind;
  }
  return ParamError(
      "config_file",
      absl::StrCat("'", path, "' is a ", it->second.string_value(),
                   ", which loopserve does not serve; it serves ",
                   absl::StrJoin(served, ", "),
                   " (give one of their types this file as config_file: its "
                   "shared keys apply)"));
}

// ---- registration ----

namespace {

std::shared_ptr<const Scheduler> Make(SchedulerKind kind,
                                      SchedulerConfig config) {
  switch (kind) {
    case SchedulerKind::kDdim:
      return std::make_shared<const DdimScheduler>(std::move(config));
    case SchedulerKind::kDdpm:
      return std::make_shared<const DdpmScheduler>(std::move(config));
    case SchedulerKind::kEuler:
      return std::make_shared<const EulerScheduler>(std::move(config), false);
    case SchedulerKind::kEulerAncestral:
      return std::make_shared<const EulerScheduler>(std::move(config), true);
    case SchedulerKind::kDpmSolverMultistep:
      return std::make_shared<const DpmSolverMultistepScheduler>(
          std::move(config));
    case SchedulerKind::kUniPcMultistep:
      return std::make_shared<const UniPcMultistepScheduler>(std::move(config));
    case SchedulerKind::kLcm:
      return std::make_shared<const LcmScheduler>(std::move(config));
    case SchedulerKind::kFlowMatchEuler:
      return std::make_shared<const FlowMatchEulerScheduler>(std::move(config));
  }
  return nullptr;
}

absl::StatusOr<std::shared_ptr<const Scheduler>> Create(
    SchedulerKind kind, const BlockParams& params,
    const ComponentContext& context) {
  ASSIGN_OR_RETURN(ReadConfig read, ReadSchedulerConfig(kind, params, context));
  if (!read.unused_keys.empty() && context.notes != nullptr) {
    context.notes->push_back(absl::StrCat(
        "config_file keys that ",
        [kind] {
          for (const SchedulerType& type : SchedulerTypes()) {
            if (type.kind == kind) return type.diffusers_class;
          }
          return absl::string_view("this scheduler");
        }(),
        " does not use: ", absl::StrJoin(read.unused_keys, ", ")));
  }
  return Make(kind, std::move(read.config));
}

}  // namespace

absl::Status RegisterSchedulers(ComponentRegistry& registry) {
  for (const SchedulerType& type : SchedulerTypes()) {
    // As a RunStateRestorer too: checkpoints restore its RunSchedules.
    absl::Status registered = registry.Register<Scheduler, RunStateRestorer>(
        std::string(type.type_name),
        [kind = type.kind](const BlockParams& params,
                           const ComponentContext& context) {
          return Create(kind, params, context);
        });
    RETURN_IF_ERROR(registered);
  }
  return registry.Register<Scheduler, RunStateRestorer>(
      "diffusers_scheduler",
      [](const BlockParams& params, const ComponentContext& context)
          -> absl::StatusOr<std::shared_ptr<const Scheduler>> {
        ASSIGN_OR_RETURN(const SchedulerKind kind,
                         SchedulerKindOfFile(params, context));
        return Create(kind, params, context);
      });
}

}  // namespace loopserve
