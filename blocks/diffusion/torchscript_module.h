// What every TorchScript component shares: loading a module onto the device,
// calling it without letting its internals reach a client, and picking the
// tensor it returned.
//
// Note [module errors]
// ~~~~~~~~~~~~~~~~~~~~
// An exception from inside a TorchScript module carries the module's
// source text and the paths of the machine that exported it. Clients see
// what was passed (names, shapes, dtypes) and that the module refused it;
// the module's own message goes to the server log only.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/component_registry.h"
#include "blocks/core/param_reader.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace loopserve {

// "[2,4,64,64]".
std::string ShapeString(const at::Tensor& t);

// Loads `path` onto `device`, converted to `dtype`, in eval mode.
// INVALID_ARGUMENT naming the param 'path' when it cannot be loaded.
absl::StatusOr<std::unique_ptr<torch::jit::Module>> LoadModule(
    const std::string& path, c10::Device device, at::ScalarType dtype);

// The names of `module`'s forward arguments, without self.
std::vector<std::string> ForwardArgumentNames(const torch::jit::Module& module);

// One argument of a module call, for messages: its name and value.
struct NamedValue {
  absl::string_view name;
  const c10::IValue* value;
};

// module.forward(inputs) in inference mode. When the module throws:
// INVALID_ARGUMENT "the <what> refused its inputs: sample Float [1,1,7,7],
// ..." (Note [module errors]).
absl::StatusOr<c10::IValue> CallModule(torch::jit::Module& module,
                                       absl::string_view what,
                                       const std::vector<NamedValue>& inputs);

// Which element of a module's result is the tensor wanted: a tensor as it
// is; else a tuple's or list's element `index` (0 by default), or a dict's
// `key` ("sample" by default), as diffusers' models return.
struct OutputSelector {
  // "" (the default), an index ("1") or a key ("sample").
  static absl::StatusOr<OutputSelector> Parse(absl::string_view spec);
  std::string key = "sample";
  int64_t index = 0;
  // FAILED_PRECONDITION naming `what` when the result holds no such tensor.
  absl::StatusOr<at::Tensor> Select(const c10::IValue& result,
                                    absl::string_view what) const;
};

// The params every TorchScript component takes: `path` (required, relative
// to the configuration's folder) and `dtype` (float32).
template <typename Options>
absl::StatusOr<Options> ReadModelOptions(ParamReader& params,
                                         const ComponentContext& context);

// "float32" / "float16" / "bfloat16", or the API's "FP32" / "FP16" / "BF16"
// (any case).
absl::StatusOr<at::ScalarType> ParseModelDtype(absl::string_view name);

// Implementation details below.

template <typename Options>
absl::StatusOr<Options> ReadModelOptions(ParamReader& params,
                                         const ComponentContext& context) {
  Options options{.device = context.device};
  absl::StatusOr<std::string> path = params.String("path", "");
  if (!path.ok()) return path.status();
  if (path->empty()) return ParamError("path", "is required");
  options.path = context.ResolvePath(*path);
  absl::StatusOr<std::string> dtype = params.String("dtype", "float32");
  if (!dtype.ok()) return dtype.status();
  absl::StatusOr<at::ScalarType> parsed = ParseModelDtype(*dtype);
  if (!parsed.ok()) return parsed.status();
  options.dtype = *parsed;
  return options;
}

}  // namespace loopserve
