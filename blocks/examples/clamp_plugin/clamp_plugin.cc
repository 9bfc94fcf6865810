// clamp_plugin: a loopserve plugin, built outside loopserve's own targets
// the way anyone's is (docs/writing-blocks.md walks through it).
//
// It adds two types:
//   ClampLatents   a loop block: each iteration, latents = clamp(latents,
//                  min, max), after the scheduler's step. A denoising loop
//                  that holds it keeps its samples in range.
//   clamp_range    a component: the range, from the configuration's params
//                  `min` and `max` (defaults -1 and 1), bound to the role
//                  "clamp".
//
//   loopserve --plugin=build/blocks/examples/clamp_plugin/libclamp_plugin.so \
//             --config=blocks/examples/clamp_plugin/clamp.pbtxt
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "blocks/core/block.h"
#include "blocks/core/param_reader.h"
#include "blocks/core/plugin.h"
#include "blocks/core/status_macros.h"

namespace clamp_plugin {

using loopserve::BlockParams;
using loopserve::BlockState;
using loopserve::ComponentContext;
using loopserve::ComponentInterface;
using loopserve::Components;
using loopserve::ComponentSpec;
using loopserve::InputParam;
using loopserve::LoopIndex;
using loopserve::OutputParam;
using loopserve::ParamReader;
using loopserve::TypeHint;

// The component: immutable once loaded, shared by every run.
class ClampRange {
 public:
  static constexpr absl::string_view kTypeName = "clamp_range";
  ClampRange(double min, double max) : min_(min), max_(max) {}
  double min() const { return min_; }
  double max() const { return max_; }

 private:
  const double min_;
  const double max_;
};

// The loop block. It reads and writes `latents` on the loop's shared
// BlockState; its declarations make the loop wrapper fetch `latents` before
// the loop and write them back after it.
class ClampLatents final : public loopserve::LoopStepBlock {
 public:
  static constexpr absl::string_view kTypeName = "ClampLatents";

  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override {
    return "Clamps the latents to the range of the 'clamp' component";
  }
  std::vector<InputParam> intermediate_inputs() const override {
    return {{.name = "latents",
             .type_hint = TypeHint::Tensor(),
             .required = true,
             .description = "The latents after this step"}};
  }
  std::vector<OutputParam> intermediate_outputs() const override {
    return {{.name = "latents",
             .type_hint = TypeHint::Tensor(),
             .description = "The latents, clamped"}};
  }
  std::vector<ComponentSpec> expected_components() const override {
    return {{.name = "clamp",
             .type = std::string(ClampRange::kTypeName),
             .description = "The range to clamp to",
             .interface = ComponentInterface::Of<ClampRange>()}};
  }

  absl::Status RunStep(const Components& components, BlockState& state,
                       const LoopIndex&) const override {
    ASSIGN_OR_RETURN(const ClampRange* range,
                     components.Get<ClampRange>("clamp"));
    ASSIGN_OR_RETURN(const at::Tensor latents,
                     state.Get<at::Tensor>("latents"));
    // A new tensor on the latents' device: blocks never write in place
    // into a tensor the client may also be sent.
    state.Set("latents", latents.clamp(range->min(), range->max()));
    return absl::OkStatus();
  }
};

absl::StatusOr<std::shared_ptr<const ClampRange>> MakeClampRange(
    const BlockParams& raw, const ComponentContext&) {
  ParamReader params(raw);
  ASSIGN_OR_RETURN(const double min, params.Double("min", -1.0));
  ASSIGN_OR_RETURN(const double max, params.Double("max", 1.0));
  RETURN_IF_ERROR(params.CheckAllRead());
  if (!(min < max)) {
    return loopserve::ParamError("max", "must be greater than min");
  }
  return std::make_shared<const ClampRange>(min, max);
}

absl::Status Register(loopserve::PluginRegistries& registries) {
  RETURN_IF_ERROR(registries.blocks.Register<ClampLatents>());
  return registries.components.Register<ClampRange>(
      std::string(ClampRange::kTypeName), MakeClampRange);
}

}  // namespace clamp_plugin

LOOPSERVE_PLUGIN(clamp_plugin::Register)
