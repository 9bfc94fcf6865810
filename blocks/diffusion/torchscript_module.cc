#include "blocks/diffusion/torchscript_module.h"

#include <c10/core/InferenceMode.h>
#include <glog/logging.h>
#include <torch/script.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loopserve {

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ","), "]");
}

absl::StatusOr<at::ScalarType> ParseModelDtype(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "float32" || lower == "fp32") return at::kFloat;
  if (lower == "float16" || lower == "fp16") return at::kHalf;
  if (lower == "bfloat16" || lower == "bf16") return at::kBFloat16;
  return ParamError("dtype", absl::StrCat("must be float32, float16 or "
                                          "bfloat16; got '",
                                          name, "'"));
}

absl::StatusOr<std::unique_ptr<torch::jit::Module>> LoadModule(
    const std::string& path, c10::Device device, at::ScalarType dtype) {
  try {
    auto module =
        std::make_unique<torch::jit::Module>(torch::jit::load(path, device));
    module->eval();
    // Only floating-point state takes the dtype: a module's integer
    // buffers (a text model's position ids) stay as they are, where
    // Module::to(dtype) would convert them too.
    auto convert = [dtype](at::Tensor tensor) {
      if (tensor.is_floating_point() && tensor.scalar_type() != dtype) {
        tensor.set_data(tensor.to(dtype));
      }
    };
    for (at::Tensor tensor : module->parameters()) convert(tensor);
    for (at::Tensor tensor : module->buffers()) convert(tensor);
    return module;
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("param 'path': cannot load TorchScript module '", path,
                     "': ", e.what_without_backtrace()));
  }
}

std::vector<std::string> ForwardArgumentNames(
    const torch::jit::Module& module) {
  std::vector<std::string> names;
  const auto method = module.find_method("forward");
  if (!method.has_value()) return names;
  const auto& arguments = method->function().getSchema().arguments();
  // The first is self.
  for (size_t i = 1; i < arguments.size(); ++i) {
    names.push_back(arguments[i].name());
  }
  return names;
}

namespace {

std::string Describe(const NamedValue& input) {
  const c10::IValue& value = *input.value;
  if (value.isTensor()) {
    const at::Tensor& t = value.toTensor();
    return absl::StrCat(input.name, " ", c10::toString(t.scalar_type()), " ",
                        ShapeString(t));
  }
  if (value.isList()) {
    return absl::StrCat(input.name, " (", value.toListRef().size(), " items)");
  }
  return absl::StrCat(input.name, " ", value.tagKind());
}

}  // namespace

absl::StatusOr<c10::IValue> CallModule(torch::jit::Module& module,
                                       absl::string_view what,
                                       const std::vector<NamedValue>& inputs) {
  std::vector<c10::IValue> values;
  values.reserve(inputs.size());
  for (const NamedValue& input : inputs) values.push_back(*input.value);
  try {
    c10::InferenceMode guard;
    return module.forward(std::move(values));
  } catch (const std::exception& e) {
    std::vector<std::string> described;
    for (const NamedValue& input : inputs) {
      described.push_back(Describe(input));
    }
    const std::string passed = absl::StrJoin(described, ", ");
    // Note [module errors]: the module's message stays here.
    LOG(WARNING) << "the " << what << " refused " << passed << ": " << e.what();
    return absl::InvalidArgumentError(
        absl::StrCat("the ", what, " refused its inputs: ", passed,
                     " (the module's error is in the server log)"));
  }
}

absl::StatusOr<OutputSelector> OutputSelector::Parse(absl::string_view spec) {
  OutputSelector selector;
  if (spec.empty()) return selector;
  int64_t index = 0;
  if (absl::SimpleAtoi(spec, &index)) {
    if (index < 0) return ParamError("output", "an index must be >= 0");
    selector.index = index;
  } else {
    selector.key = std::string(spec);
  }
  return selector;
}

absl::StatusOr<at::Tensor> OutputSelector::Select(
    const c10::IValue& result, absl::string_view what) const {
  if (result.isTensor()) return result.toTensor();
  std::string wanted;
  if (result.isTuple() || result.isList()) {
    const auto elements = result.isTuple()
                              ? result.toTupleRef().elements().vec()
                              : result.toListRef().vec();
    wanted = absl::StrCat("element ", index, " of its ", elements.size());
    if (index < static_cast<int64_t>(elements.size()) &&
        elements[index].isTensor()) {
      return elements[index].toTensor();
    }
  } else if (result.isGenericDict()) {
    wanted = absl::StrCat("key '", key, "'");
    for (const auto& entry : result.toGenericDict()) {
      if (entry.key().isString() && entry.key().toStringRef() == key &&
          entry.value().isTensor()) {
        return entry.value().toTensor();
      }
    }
  } else {
    wanted = "a tensor";
  }
  return absl::FailedPreconditionError(
      absl::StrCat("the ", what, " returned ", result.tagKind(),
                   " without a tensor at ", wanted, " (param 'output')"));
}

}  // namespace loopserve
