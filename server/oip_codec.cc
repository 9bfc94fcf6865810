#include "server/oip_codec.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "loopserve/v1/datatype.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

using inference::InferParameter;
using inference::InferTensorContents;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using TensorMetadata = inference::ModelMetadataResponse::TensorMetadata;

// A pipeline has one version.
constexpr char kModelVersion[] = "1";

// Host-order bytes of `values` (OIP's raw form is little-endian, as is
// every host loopserve builds for).
template <typename T>
void AppendRaw(T value, std::string& out) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}
template <typename To, typename From>
void AppendRawEach(const From& values, std::string& out) {
  for (const auto value : values) AppendRaw(static_cast<To>(value), out);
}

// The elements of a BYTES tensor in raw form: each a 4-byte little-endian
// length, then its bytes.
absl::StatusOr<std::vector<std::string>> SplitBytes(absl::string_view raw,
                                                    absl::string_view input) {
  std::vector<std::string> elements;
  while (!raw.empty()) {
    uint32_t length = 0;
    if (raw.size() < sizeof(length)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", input, "': a BYTES element's 4-byte length is cut off"));
    }
    std::memcpy(&length, raw.data(), sizeof(length));
    raw.remove_prefix(sizeof(length));
    if (length > raw.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input, "': a BYTES element says ", length,
                       " bytes, but ", raw.size(), " are left"));
    }
    elements.emplace_back(raw.substr(0, length));
    raw.remove_prefix(length);
  }
  return elements;
}

void AppendBytesElement(absl::string_view element, std::string& raw) {
  const uint32_t length = static_cast<uint32_t>(element.size());
  raw.append(reinterpret_cast<const char*>(&length), sizeof(length));
  raw.append(element.data(), element.size());
}

// The raw bytes of a non-BYTES input given as typed `contents`.
absl::StatusOr<std::string> RawFromContents(const InferTensorContents& contents,
                                            const DatatypeInfo& type,
                                            absl::string_view input) {
  std::string raw;
  switch (type.datatype) {
    case Datatype::kBool:
      AppendRawEach<uint8_t>(contents.bool_contents(), raw);
      break;
    case Datatype::kUint8:
      AppendRawEach<uint8_t>(contents.uint_contents(), raw);
      break;
    case Datatype::kInt8:
      AppendRawEach<int8_t>(contents.int_contents(), raw);
      break;
    case Datatype::kInt16:
      AppendRawEach<int16_t>(contents.int_contents(), raw);
      break;
    case Datatype::kInt32:
      AppendRawEach<int32_t>(contents.int_contents(), raw);
      break;
    case Datatype::kInt64:
      AppendRawEach<int64_t>(contents.int64_contents(), raw);
      break;
    case Datatype::kFp32:
      AppendRawEach<float>(contents.fp32_contents(), raw);
      break;
    case Datatype::kFp64:
      AppendRawEach<double>(contents.fp64_contents(), raw);
      break;
    case Datatype::kFp16:
    case Datatype::kBf16:
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input, "': ", type.name,
                       " has no typed contents in the protocol; send it in "
                       "raw_input_contents"));
  }
  return raw;
}

// Whether a one-element input of a param typed `type` ("int | tensor",
// "any", ...) is the scalar rather than a tensor.
bool TakesScalar(absl::string_view type) {
  if (type.empty() || type == "any") return true;
  for (absl::string_view kind : absl::StrSplit(type, " | ")) {
    if (kind == "int" || kind == "double" || kind == "bool" ||
        kind == "string") {
      return true;
    }
  }
  return false;
}

absl::StatusOr<v1::Value> ToValue(
    const ModelInferRequest::InferInputTensor& input, const std::string* raw,
    absl::string_view param_type) {
  const std::string& name = input.name();
  int64_t elements = 1;
  for (const int64_t dim : input.shape()) {
    if (dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", name, "': shape [", absl::StrJoin(input.shape(), ","),
          "] has a negative dimension"));
    }
    if (dim != 0 && elements > std::numeric_limits<int64_t>::max() / dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "': shape [",
                       absl::StrJoin(input.shape(), ","), "] is too large"));
    }
    elements *= dim;
  }
  v1::Value value;
  if (input.datatype() == "BYTES") {
    std::vector<std::string> strings;
    if (raw != nullptr) {
      ASSIGN_OR_RETURN(strings, SplitBytes(*raw, name));
    } else {
      strings.assign(input.contents().bytes_contents().begin(),
                     input.contents().bytes_contents().end());
    }
    if (static_cast<int64_t>(strings.size()) != elements) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "': shape [",
                       absl::StrJoin(input.shape(), ","), "] holds ", elements,
                       " elements, but ", strings.size(), " were given"));
    }
    if (elements == 1 && input.shape_size() <= 1) {
      value.set_string_value(std::move(strings.front()));
    } else {
      for (std::string& s : strings) {
        value.mutable_list_value()->add_values()->set_string_value(
            std::move(s));
      }
    }
    return value;
  }
  absl::StatusOr<const DatatypeInfo*> type = FindDatatype(input.datatype());
  if (!type.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", name, "': datatype '", input.datatype(),
                     "' is not BYTES or one of ", DatatypeNames()));
  }
  std::string bytes;
  if (raw != nullptr) {
    bytes = *raw;
  } else {
    ASSIGN_OR_RETURN(bytes, RawFromContents(input.contents(), **type, name));
  }
  if (static_cast<int64_t>(bytes.size()) / (*type)->itemsize != elements ||
      bytes.size() % (*type)->itemsize != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", name, "': shape [", absl::StrJoin(input.shape(), ","),
        "] of ", (*type)->name, " needs ", elements, " elements, but ",
        bytes.size() / (*type)->itemsize, " were given"));
  }
  if (elements == 1 && input.shape_size() <= 1 && TakesScalar(param_type)) {
    const Datatype datatype = (*type)->datatype;
    if (datatype == Datatype::kBool) {
      value.set_bool_value(bytes[0] != 0);
    } else if ((*type)->is_floating_point) {
      value.set_double_value(ElementAsDouble(datatype, bytes.data(), 0));
    } else if (datatype == Datatype::kInt64) {
      int64_t integer;  // not through a double: a seed may exceed 2^53
      std::memcpy(&integer, bytes.data(), sizeof(integer));
      value.set_int64_value(integer);
    } else {
      value.set_int64_value(
          static_cast<int64_t>(ElementAsDouble(datatype, bytes.data(), 0)));
    }
    return value;
  }
  v1::Tensor& tensor = *value.mutable_tensor();
  tensor.set_datatype(std::string((*type)->name));
  *tensor.mutable_shape() = input.shape();
  tensor.set_raw_contents(std::move(bytes));
  return value;
}

absl::Status ApplyParameter(const std::string& name,
                            const InferParameter& parameter,
                            v1::StreamOptions& stream) {
  const auto wrong = [&](absl::string_view expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter '", name, "' must be ", expected));
  };
  using Choice = InferParameter::ParameterChoiceCase;
  if (name == "every") {
    if (parameter.parameter_choice_case() != Choice::kInt64Param ||
        parameter.int64_param() < 0 ||
        parameter.int64_param() > std::numeric_limits<uint32_t>::max()) {
      return wrong("an int64_param in [0, 4294967295]");
    }
    stream.set_every(static_cast<uint32_t>(parameter.int64_param()));
  } else if (name == "values") {
    if (parameter.parameter_choice_case() != Choice::kStringParam) {
      return wrong("a string_param: iteration values, comma-separated");
    }
    for (absl::string_view v : absl::StrSplit(parameter.string_param(), ',',
                                              absl::SkipWhitespace())) {
      stream.add_values(std::string(absl::StripAsciiWhitespace(v)));
    }
  } else if (name == "backpressure") {
    const std::string mode = absl::AsciiStrToLower(parameter.string_param());
    if (parameter.parameter_choice_case() != Choice::kStringParam ||
        (mode != "block" && mode != "latest")) {
      return wrong("the string_param \"block\" or \"latest\"");
    }
    stream.set_backpressure(mode == "latest" ? v1::StreamOptions::LATEST
                                             : v1::StreamOptions::BLOCK);
  } else if (name == "preview") {
    if (parameter.parameter_choice_case() != Choice::kBoolParam) {
      return wrong("a bool_param");
    }
    stream.set_preview(parameter.bool_param());
  }
  return absl::OkStatus();
}

// The keys of `map`, sorted: outputs and errors in the same order every time.
template <typename Map>
std::vector<const std::string*> SortedKeys(const Map& map) {
  std::vector<const std::string*> keys;
  for (const auto& [key, value] : map) keys.push_back(&key);
  std::sort(keys.begin(), keys.end(),
            [](const std::string* a, const std::string* b) { return *a < *b; });
  return keys;
}

InferParameter Int64Param(int64_t value) {
  InferParameter parameter;
  parameter.set_int64_param(value);
  return parameter;
}

void AppendRawOutput(const std::string& name, absl::string_view datatype,
                     std::vector<int64_t> shape, std::string raw,
                     ModelInferResponse& response) {
  ModelInferResponse::InferOutputTensor& output = *response.add_outputs();
  output.set_name(name);
  output.set_datatype(std::string(datatype));
  output.mutable_shape()->Assign(shape.begin(), shape.end());
  response.add_raw_output_contents(std::move(raw));
}

// The raw bytes of one scalar `value` (not a tensor or list), and its OIP
// datatype.
bool ScalarRaw(const v1::Value& value, absl::string_view& datatype,
               std::string& raw) {
  switch (value.kind_case()) {
    case v1::Value::kInt64Value:
      datatype = "INT64";
      AppendRaw<int64_t>(value.int64_value(), raw);
      return true;
    case v1::Value::kDoubleValue:
      datatype = "FP64";
      AppendRaw<double>(value.double_value(), raw);
      return true;
    case v1::Value::kBoolValue:
      datatype = "BOOL";
      raw.push_back(value.bool_value() ? 1 : 0);
      return true;
    case v1::Value::kStringValue:
      datatype = "BYTES";
      AppendBytesElement(value.string_value(), raw);
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::StatusOr<v1::RunRequest> ToRunRequest(
    const ModelInferRequest& request, const v1::PipelineDescription& pipeline) {
  v1::RunRequest run;
  run.set_pipeline(pipeline.name());
  run.set_request_id(request.id());
  if (request.raw_input_contents_size() != 0 &&
      request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_input_contents has ", request.raw_input_contents_size(),
        " entries for ", request.inputs_size(), " inputs"));
  }
  absl::flat_hash_map<absl::string_view, const v1::ParamSpec*> inputs;
  for (const v1::ParamSpec& param : pipeline.inputs()) {
    inputs[param.name()] = &param;
  }
  for (int i = 0; i < request.inputs_size(); ++i) {
    const ModelInferRequest::InferInputTensor& input = request.inputs(i);
    if (run.inputs().contains(input.name())) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name(), "' is given twice"));
    }
    const auto param = inputs.find(input.name());
    ASSIGN_OR_RETURN(
        (*run.mutable_inputs())[input.name()],
        ToValue(input,
                request.raw_input_contents_size() != 0
                    ? &request.raw_input_contents(i)
                    : nullptr,
                param == inputs.end() ? "" : param->second->type()));
  }
  v1::StreamOptions& stream = *run.mutable_stream();
  for (const std::string* name : SortedKeys(request.parameters())) {
    RETURN_IF_ERROR(
        ApplyParameter(*name, request.parameters().at(*name), stream));
  }
  // The requested outputs: final ones, and the streamed ones unless
  // `values` chose them.
  absl::flat_hash_map<absl::string_view, bool> is_final, is_iteration;
  for (const v1::ParamSpec& p : pipeline.outputs()) is_final[p.name()] = true;
  for (const v1::ParamSpec& p : pipeline.iteration_outputs()) {
    is_iteration[p.name()] = true;
  }
  const bool choose_values = stream.values().empty();
  for (const ModelInferRequest::InferRequestedOutputTensor& output :
       request.outputs()) {
    const bool final = is_final.contains(output.name());
    const bool iteration = is_iteration.contains(output.name());
    if (!final && !iteration) {
      std::vector<std::string> known;
      for (const v1::ParamSpec& p : pipeline.outputs())
        known.push_back(p.name());
      for (const v1::ParamSpec& p : pipeline.iteration_outputs()) {
        if (!is_final.contains(p.name())) known.push_back(p.name());
      }
      return absl::InvalidArgumentError(
          absl::StrCat("output '", output.name(),
                       "' is not an output of pipeline '", pipeline.name(),
                       "' (its outputs: ", absl::StrJoin(known, ", "), ")"));
    }
    if (final) run.add_outputs(output.name());
    if (iteration && choose_values) stream.add_values(output.name());
  }
  return run;
}

absl::Status AppendOutput(const std::string& name, const v1::Value& value,
                          ModelInferResponse& response) {
  absl::string_view datatype;
  std::string raw;
  if (value.has_tensor()) {
    const v1::Tensor& tensor = value.tensor();
    AppendRawOutput(name, tensor.datatype(),
                    {tensor.shape().begin(), tensor.shape().end()},
                    tensor.raw_contents(), response);
    return absl::OkStatus();
  }
  if (ScalarRaw(value, datatype, raw)) {
    AppendRawOutput(name, datatype, {1}, std::move(raw), response);
    return absl::OkStatus();
  }
  if (value.has_list_value()) {
    const auto& items = value.list_value().values();
    absl::string_view first;
    for (const v1::Value& item : items) {
      absl::string_view item_type;
      if (!ScalarRaw(item, item_type, raw) ||
          (!first.empty() && item_type != first)) {
        return absl::UnimplementedError(absl::StrCat(
            "output '", name,
            "' is a list of mixed or nested values, which the Open "
            "Inference Protocol cannot carry; ask for it through "
            "loopserve.v1"));
      }
      first = item_type;
    }
    AppendRawOutput(name, first.empty() ? "BYTES" : first,
                    {static_cast<int64_t>(items.size())}, std::move(raw),
                    response);
    return absl::OkStatus();
  }
  return absl::InternalError(
      absl::StrCat("output '", name, "' holds no value"));
}

absl::Status AppendIteration(const v1::Iteration& iteration,
                             ModelInferResponse& response) {
  auto& parameters = *response.mutable_parameters();
  parameters["iteration"] = Int64Param(iteration.index());
  parameters["total"] = Int64Param(iteration.total());
  parameters["dropped_before"] =
      Int64Param(static_cast<int64_t>(iteration.dropped_before()));
  parameters["loop"].set_string_param(iteration.loop());
  for (const std::string* name : SortedKeys(iteration.values())) {
    RETURN_IF_ERROR(
        AppendOutput(*name, iteration.values().at(*name), response));
  }
  if (!iteration.preview_png().empty()) {
    std::string raw;
    AppendBytesElement(iteration.preview_png(), raw);
    AppendRawOutput("preview_png", "BYTES", {1}, std::move(raw), response);
  }
  return absl::OkStatus();
}

absl::Status AppendResult(const v1::RunResult& result,
                          ModelInferResponse& response) {
  auto& parameters = *response.mutable_parameters();
  parameters["triton_final_response"].set_bool_param(true);
  parameters["iterations"] = Int64Param(result.stats().iterations());
  parameters["queue_ms"].set_double_param(result.stats().queue_ms());
  parameters["run_ms"].set_double_param(result.stats().run_ms());
  for (const std::string* name : SortedKeys(result.outputs())) {
    RETURN_IF_ERROR(AppendOutput(*name, result.outputs().at(*name), response));
  }
  return absl::OkStatus();
}

TensorMetadata ToTensorMetadata(const v1::ParamSpec& param) {
  TensorMetadata metadata;
  metadata.set_name(param.name());
  const std::vector<absl::string_view> kinds =
      absl::StrSplit(param.type(), " | ");
  const auto takes = [&](absl::string_view kind) {
    return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
  };
  // A scalar is a [1]-shaped tensor, of the widest kind the param takes.
  const char* scalar = takes("string")   ? "BYTES"
                       : takes("double") ? "FP64"
                       : takes("int")    ? "INT64"
                       : takes("bool")   ? "BOOL"
                                         : nullptr;
  if (scalar != nullptr) {
    metadata.set_datatype(scalar);
    metadata.add_shape(1);
    return metadata;
  }
  // A tensor's datatype and rank are the pipeline's to choose (its
  // description says); FP32 is what the shipped pipelines exchange.
  metadata.set_datatype(takes("tensor") ? "FP32" : "BYTES");
  metadata.add_shape(-1);
  return metadata;
}

inference::ModelMetadataResponse ToModelMetadata(
    const v1::PipelineDescription& pipeline) {
  inference::ModelMetadataResponse metadata;
  metadata.set_name(pipeline.name());
  metadata.add_versions(std::string(kModelVersion));
  metadata.set_platform("loopserve");
  for (const v1::ParamSpec& param : pipeline.inputs()) {
    *metadata.add_inputs() = ToTensorMetadata(param);
  }
  absl::flat_hash_map<absl::string_view, bool> listed;
  for (const v1::ParamSpec& param : pipeline.outputs()) {
    *metadata.add_outputs() = ToTensorMetadata(param);
    listed[param.name()] = true;
  }
  for (const v1::ParamSpec& param : pipeline.iteration_outputs()) {
    if (!listed.contains(param.name())) {
      *metadata.add_outputs() = ToTensorMetadata(param);
    }
  }
  if (pipeline.preview()) {
    TensorMetadata& preview = *metadata.add_outputs();
    preview.set_name("preview_png");
    preview.set_datatype("BYTES");
    preview.add_shape(1);
  }
  return metadata;
}

}  // namespace loopserve
