// clamp_plugin's types: a loop block that clamps `latents` each iteration,
// and the component that says to what range.
//
//   ClampLatents   a loop block: latents = clamp(latents, min, max), run
//                  after the scheduler's step in a denoising loop.
//   ClampRange     a component (registered as "clamp_range"), bound to the
//                  role "clamp".
//
// clamp_plugin.cc registers them; clamp_latents_test.cc tests the block.
//
// Thread-safety: as every block and component, immutable once made; any
// number of runs use them at once.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "blocks/core/block.h"
#include "util/status_macros.h"

namespace clamp_plugin {

using loopserve::BlockState;
using loopserve::ComponentInterface;
using loopserve::Components;
using loopserve::ComponentSpec;
using loopserve::InputParam;
using loopserve::LoopIndex;
using loopserve::OutputParam;
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
    return {{.role = "clamp",
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

}  // namespace clamp_plugin
