// RegisterBuiltinBlocks and RegisterBuiltinComponents: every block and
// component type the library ships, under the names configuration files and
// FromBlocks entries use.
//
//   BlockRegistry blocks;
//   RETURN_IF_ERROR(RegisterBuiltinBlocks(blocks));
//   ComponentRegistry components;
//   RETURN_IF_ERROR(RegisterBuiltinComponents(components));
#pragma once

#include "absl/status/status.h"
#include "blocks/core/component_registry.h"
#include "blocks/core/registry.h"

namespace loopserve {

// Registers "Sequential"; the seed blocks "LoopWrapper" and "LoopBlock"; and
// the denoising blocks "SetTimesteps", "PrepareLatents", "DenoiseLoop",
// "ScaleModelInput", "PredictNoise", "SchedulerStep", "Decode", "Preview".
// ALREADY_EXISTS when any of them is registered already.
absl::Status RegisterBuiltinBlocks(BlockRegistry& registry);

// Registers "ddim_scheduler", "euler_scheduler",
// "gaussian_mixture_denoiser", "torchscript_denoiser", "torchscript_decoder"
// and "latent_preview".
absl::Status RegisterBuiltinComponents(ComponentRegistry& registry);

}  // namespace loopserve
