// The blocks after the loop: Decode (latents to images) and Preview.
#include <ATen/ATen.h>

#include "blocks/diffusion/decoders.h"
#include "blocks/diffusion/diffusion_blocks.h"
#include "util/status_macros.h"

namespace loopserve {

// ---- Decode and Preview ----

std::vector<InputParam> LatentsToImage::intermediate_inputs() const {
  return {{.name = "latents",
           .type_hint = TypeHint::Tensor(),
           .required = true,
           .description = "The denoised latents"}};
}

std::vector<OutputParam> LatentsToImage::intermediate_outputs() const {
  return {{.name = std::string(spec_.output),
           .type_hint = TypeHint::Tensor(),
           .description = std::string(spec_.output_description)}};
}

std::vector<ComponentSpec> LatentsToImage::expected_components() const {
  return {{.role = std::string(spec_.role),
           .type = std::string(spec_.component_types),
           .description = "Latents -> UINT8 [B,H,W,3] images",
           .interface = ComponentInterface::Of<ImageDecoder>()}};
}

absl::Status LatentsToImage::Run(const Components& components,
                                 PipelineState& state, RunContext&) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  ASSIGN_OR_RETURN(const ImageDecoder* decoder,
                   components.Get<ImageDecoder>(spec_.role));
  ASSIGN_OR_RETURN(const at::Tensor latents,
                   block_state.Get<at::Tensor>("latents"));
  ASSIGN_OR_RETURN(at::Tensor image, decoder->Decode(latents));
  block_state.Set(spec_.output, std::move(image));
  return SetBlockState(state, block_state);
}

Decode::Decode()
    : LatentsToImage(
          {.role = kDecoderRole,
           .output = "image",
           .output_description = "The image, UINT8 [B,H,W,3]",
           .component_types = "torchscript_decoder | latent_preview"}) {}

std::string Decode::description() const {
  return "Decodes the latents into an image";
}

Preview::Preview()
    : LatentsToImage(
          {.role = kPreviewRole,
           .output = "preview",
           .output_description = "The latent preview, UINT8 [B,H,W,3]",
           .component_types = "latent_preview"}) {}

std::string Preview::description() const {
  return "A quick linear RGB preview of the latents";
}

}  // namespace loopserve
