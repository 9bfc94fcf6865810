// RegisterDiffusionBlocks: the denoising family's block types, each read
// from its params by one named reader.
#include "blocks/diffusion/diffusion_blocks.h"

#include <memory>
#include <string>
#include <utility>

#include "blocks/core/param_reader.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

absl::StatusOr<std::unique_ptr<Block>> MakeSetTimesteps(
    const BlockParams& raw) {
  ParamReader params(raw);
  SetTimesteps::Options o;
  ASSIGN_OR_RETURN(o.default_steps,
                   params.Int("num_inference_steps", o.default_steps));
  ASSIGN_OR_RETURN(o.flow, params.Bool("flow", o.flow));
  ASSIGN_OR_RETURN(o.strength, params.Double("strength", o.strength));
  RETURN_IF_ERROR(params.CheckAllRead());
  if (o.default_steps < 1) {
    return ParamError("num_inference_steps", "must be >= 1");
  }
  if (!(o.strength > 0 && o.strength <= 1)) {
    return ParamError("strength", "must be in (0, 1]");
  }
  return std::make_unique<SetTimesteps>(o);
}

absl::StatusOr<std::unique_ptr<Block>> MakePrepareLatents(
    const BlockParams& raw) {
  ParamReader params(raw);
  PrepareLatents::Options o;
  ASSIGN_OR_RETURN(o.channels, params.Int("channels", o.channels));
  ASSIGN_OR_RETURN(o.height, params.Int("height", o.height));
  ASSIGN_OR_RETURN(o.width, params.Int("width", o.width));
  ASSIGN_OR_RETURN(o.vae_scale_factor,
                   params.Int("vae_scale_factor", o.vae_scale_factor));
  ASSIGN_OR_RETURN(o.size_multiple,
                   params.Int("size_multiple", o.vae_scale_factor));
  RETURN_IF_ERROR(params.CheckAllRead());
  for (auto [name, value] : {std::pair{"channels", o.channels},
                             {"height", o.height},
                             {"width", o.width},
                             {"vae_scale_factor", o.vae_scale_factor},
                             {"size_multiple", o.size_multiple}}) {
    if (value < 1) return ParamError(name, "must be >= 1");
  }
  if (o.size_multiple % o.vae_scale_factor != 0) {
    return ParamError("size_multiple",
                      "must be a multiple of "
                      "vae_scale_factor");
  }
  return std::make_unique<PrepareLatents>(o);
}

absl::StatusOr<std::unique_ptr<Block>> MakePredictNoise(
    const BlockParams& raw) {
  ParamReader params(raw);
  ASSIGN_OR_RETURN(double scale, params.Double("guidance_scale", 1.0));
  RETURN_IF_ERROR(params.CheckAllRead());
  return std::make_unique<PredictNoise>(scale);
}

}  // namespace

absl::Status RegisterDiffusionBlocks(BlockRegistry& registry) {
  RETURN_IF_ERROR(registry.Register(std::string(SetTimesteps::kTypeName),
                                    MakeSetTimesteps));
  RETURN_IF_ERROR(registry.Register(std::string(PrepareLatents::kTypeName),
                                    MakePrepareLatents));
  RETURN_IF_ERROR(registry.Register<DenoiseLoop>());
  RETURN_IF_ERROR(registry.Register<ScaleModelInput>());
  RETURN_IF_ERROR(registry.Register(std::string(PredictNoise::kTypeName),
                                    MakePredictNoise));
  RETURN_IF_ERROR(registry.Register<SchedulerStep>());
  RETURN_IF_ERROR(registry.Register<Decode>());
  return registry.Register<Preview>();
}

}  // namespace loopserve
