#include "engine/run_request.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/iteration_preview.h"
#include "util/status_macros.h"
#include "util/user_text.h"

namespace loopserve {
namespace {

template <typename Param>
std::string JoinNames(const std::vector<Param>& params) {
  std::vector<std::string> names;
  for (const Param& param : params) names.push_back(param.name);
  return names.empty() ? "(none)" : absl::StrJoin(names, ", ");
}

template <typename Param>
const Param* FindParam(const std::vector<Param>& params,
                       absl::string_view name) {
  for (const Param& param : params) {
    if (param.name == name) return &param;
  }
  return nullptr;
}

// The names `requested` selects from `available` (all when empty), or an
// error naming `field`.
template <typename Param>
absl::StatusOr<std::vector<std::string>> Select(
    const Pipeline& pipeline, absl::string_view field,
    const google::protobuf::RepeatedPtrField<std::string>& requested,
    const std::vector<Param>& available, absl::string_view what) {
  std::vector<std::string> selected;
  if (requested.empty()) {
    for (const Param& param : available) selected.push_back(param.name);
    return selected;
  }
  absl::flat_hash_set<std::string> seen;
  for (const std::string& name : requested) {
    if (FindParam(available, name) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("pipeline '", pipeline.name, "': ", field, " names ",
                       QuoteUserText(name), ", which is not ", what,
                       "; it has: ", JoinNames(available)));
    }
    if (seen.insert(name).second) selected.push_back(name);
  }
  return selected;
}

}  // namespace

absl::StatusOr<StreamSelection> ValidateRun(const Pipeline& pipeline,
                                            const v1::RunRequest& request,
                                            const RunLimits& limits) {
  auto error = [&pipeline](absl::string_view field, absl::string_view message) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline '", pipeline.name, "': ", field, ": ", message));
  };

  if (static_cast<int64_t>(request.request_id().size()) >
      limits.max_request_id_bytes) {
    return error("request_id",
                 absl::StrCat(request.request_id().size(),
                              " bytes is longer than the server's limit of ",
                              limits.max_request_id_bytes));
  }
  // Sorted, so that the first error reported does not depend on map order.
  std::vector<std::string> names;
  for (const auto& [name, value] : request.inputs()) names.push_back(name);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string field = absl::StrCat("input ", QuoteUserText(name));
    const InputParam* param = FindParam(pipeline.inputs, name);
    if (param == nullptr) {
      return error(field, absl::StrCat("unknown input; the pipeline's inputs "
                                       "are: ",
                                       JoinNames(pipeline.inputs)));
    }
    const v1::Value& value = request.inputs().at(name);
    absl::StatusOr<ValueKind> kind = CheckValue(value, limits.decode);
    if (!kind.ok()) return error(field, kind.status().message());
    if (!param->type_hint.AcceptsKind(*kind)) {
      return error(field, absl::StrCat("expects ", param->type_hint.ToString(),
                                       ", got ", KindName(*kind)));
    }
    if (!param->choices.empty() && *kind == ValueKind::kString &&
        std::find(param->choices.begin(), param->choices.end(),
                  value.string_value()) == param->choices.end()) {
      return error(
          field,
          absl::StrCat("must be one of: ", absl::StrJoin(param->choices, ", "),
                       "; got ", QuoteUserText(value.string_value())));
    }
    if ((param->minimum.has_value() || param->maximum.has_value()) &&
        (*kind == ValueKind::kInt || *kind == ValueKind::kDouble)) {
      const double number = *kind == ValueKind::kInt
                                ? static_cast<double>(value.int64_value())
                                : value.double_value();
      if ((param->minimum.has_value() && !(number >= *param->minimum)) ||
          (param->maximum.has_value() && !(number <= *param->maximum))) {
        return error(field, absl::StrCat("must be in [",
                                         param->minimum.has_value()
                                             ? absl::StrCat(*param->minimum)
                                             : "-inf",
                                         ", ",
                                         param->maximum.has_value()
                                             ? absl::StrCat(*param->maximum)
                                             : "inf",
                                         "], got ", number));
      }
    }
    for (const std::string& other : param->excluded_by) {
      if (request.inputs().contains(other)) {
        return error(field, absl::StrCat("cannot be given with input '", other,
                                         "', which decides it; give one"));
      }
    }
    if (param->iteration_count && *kind == ValueKind::kInt) {
      const int64_t count = value.int64_value();
      if (count < 0) {
        return error(field, absl::StrCat("must be >= 0, got ", count));
      }
      if (count > limits.max_iterations) {
        return error(field,
                     absl::StrCat(count, " is above the server's limit of ",
                                  limits.max_iterations,
                                  " iterations (--max_iterations)"));
      }
    }
  }
  // A resumed run has its inputs from the checkpoint.
  const bool resuming = !request.resume_from().empty();
  for (const InputParam& param : pipeline.inputs) {
    if (!resuming && param.required && param.default_value.isNone() &&
        !request.inputs().contains(param.name)) {
      return error(absl::StrCat("input '", param.name, "'"),
                   "required input is missing");
    }
  }

  StreamSelection selection;
  const v1::StreamOptions& stream = request.stream();
  ASSIGN_OR_RETURN(selection.values,
                   Select(pipeline, "stream.values", stream.values(),
                          pipeline.iteration_outputs, "an iteration output"));
  ASSIGN_OR_RETURN(selection.outputs,
                   Select(pipeline, "outputs", request.outputs(),
                          pipeline.outputs, "an output"));
  if (!v1::StreamOptions::Backpressure_IsValid(stream.backpressure())) {
    return error("stream.backpressure",
                 absl::StrCat("unknown value ", stream.backpressure(),
                              "; expected BLOCK (0) or LATEST (1)"));
  }
  if (stream.preview()) {
    absl::StatusOr<const IterationPreview*> preview =
        pipeline.components.Get<IterationPreview>(kPreviewRole);
    if (!preview.ok()) {
      return error("stream.preview",
                   "the pipeline has no iteration preview (an "
                   "IterationPreview bound to its 'preview' role)");
    }
    selection.preview = *preview;
  }
  selection.every = std::max<int64_t>(1, stream.every());
  selection.latest = stream.backpressure() == v1::StreamOptions::LATEST;
  return selection;
}

google::protobuf::Map<std::string, v1::Value> ResolveInputs(
    const Pipeline& pipeline, const v1::RunRequest& request) {
  google::protobuf::Map<std::string, v1::Value> resolved;
  absl::BitGen random;
  for (const InputParam& param : pipeline.inputs) {
    if (request.inputs().contains(param.name)) continue;
    v1::Value value;
    if (param.random_when_absent) {
      value.set_int64_value(
          static_cast<int64_t>(absl::Uniform<uint32_t>(random)));
    } else if (param.default_value.isNone() ||
               !EncodeValue(param.default_value, value).ok()) {
      continue;
    }
    resolved[param.name] = std::move(value);
  }
  return resolved;
}

absl::StatusOr<PipelineState> DecodeInputs(
    const v1::RunRequest& request,
    const google::protobuf::Map<std::string, v1::Value>& resolved,
    const DecodeLimits& limits, c10::Device device) {
  PipelineState state;
  for (const auto* inputs : {&request.inputs(), &resolved}) {
    for (const auto& [name, wire] : *inputs) {
      absl::StatusOr<c10::IValue> decoded = DecodeValue(wire, limits);
      if (!decoded.ok()) {
        return absl::Status(
            decoded.status().code(),
            absl::StrCat("input '", name, "': ", decoded.status().message()));
      }
      c10::IValue value = *std::move(decoded);
      if (value.isTensor() && value.toTensor().device() != device) {
        value = value.toTensor().to(device);
      }
      state.SetInput(name, std::move(value));
    }
  }
  return state;
}

}  // namespace loopserve
