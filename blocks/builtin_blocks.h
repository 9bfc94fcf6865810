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

// Registers the composite "Sequential"; the seed blocks "LoopWrapper" and
// "LoopBlock" (blocks/examples/seed_blocks.h); and the denoising family's
// blocks (blocks/diffusion/): "EncodePrompt", "EncodeImage", "AddTimeIds",
// "SetTimesteps", "PrepareLatents", "DenoiseLoop", "ScaleModelInput",
// "PredictNoise", "SchedulerStep", "Decode", "Preview". ALREADY_EXISTS
// when any of them is registered already.
absl::Status RegisterBuiltinBlocks(BlockRegistry& registry);

// Registers the denoising family's components: the schedulers
// "ddim_scheduler", "ddpm_scheduler", "euler_scheduler",
// "euler_ancestral_scheduler",
// "dpm_solver_multistep_scheduler", "unipc_multistep_scheduler",
// "lcm_scheduler", "flow_match_euler_scheduler" and "diffusers_scheduler"
// (scheduler_config.h); the denoisers "gaussian_mixture_denoiser" and
// "torchscript_denoiser", the decoders "torchscript_decoder" and
// "latent_preview", the encoders "torchscript_text_encoder",
// "torchscript_encoder" and "identity_encoder" (model_registration.h).
// BuiltinBlocksTest holds these lists to the registries.
absl::Status RegisterBuiltinComponents(ComponentRegistry& registry);

}  // namespace loopserve
