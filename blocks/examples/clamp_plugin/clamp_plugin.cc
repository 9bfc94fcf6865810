// clamp_plugin: a loopserve plugin, built the way anyone's is, in the tree
// or outside it (docs/writing-blocks.md walks through it). It registers the
// loop block ClampLatents and the component type clamp_range, whose params
// `min` and `max` (defaults -1 and 1) say the range.
//
//   loopserve --config=blocks/examples/clamp_plugin/clamp.pbtxt
//             --plugin=build/blocks/examples/clamp_plugin/libclamp_plugin.so
#include <memory>
#include <string>

#include "blocks/core/param_reader.h"
#include "blocks/core/plugin.h"
#include "clamp_latents.h"
#include "util/status_macros.h"

namespace clamp_plugin {

using loopserve::BlockParams;
using loopserve::ComponentContext;
using loopserve::ParamReader;

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
