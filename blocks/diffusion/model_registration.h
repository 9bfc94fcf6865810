// RegisterModels: the model components of the denoising family, under the
// type names configurations use.
//
//   denoisers (denoisers.h)   gaussian_mixture_denoiser, torchscript_denoiser
//   decoders (decoders.h)     torchscript_decoder, latent_preview
//   encoders (encoders.h)     torchscript_text_encoder, torchscript_encoder,
//                             identity_encoder
//
// Each type's params are read by one named reader (model_registration.cc);
// a denoiser is wrapped to batch its calls across runs (Note [step
// batching] in batched_denoiser.h). The schedulers are registered beside
// their configuration (scheduler_config.h).
#pragma once

#include "absl/status/status.h"
#include "blocks/core/component_registry.h"

namespace loopserve {

// Registers every type above: the denoisers as Denoiser, torchscript_decoder
// as ImageDecoder, latent_preview as ImageDecoder and IterationPreview, the
// text encoder as TextEncoder and the image encoders as ImageEncoder.
absl::Status RegisterModels(ComponentRegistry& registry);

}  // namespace loopserve
