// The blocks that encode a run's prompt and image before the denoising loop,
// after diffusers' text-to-image and image-to-image pipelines:
//
//   Sequential {
//     encode_prompt: EncodePrompt   prompt, negative_prompt -> conditioning
//     encode_image:  EncodeImage    image -> image_latents
//     set_timesteps, prepare_latents, denoise, decode  (diffusion_blocks.h)
//   }
//
// Components, by role: "text_encoder" (TextEncoder), "encoder"
// (ImageEncoder).
//
// Thread-safety: as Block.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "blocks/core/block.h"
#include "blocks/core/registry.h"

namespace loopserve {

inline constexpr absl::string_view kTextEncoderRole = "text_encoder";
inline constexpr absl::string_view kEncoderRole = "encoder";

// Encodes `prompt` (a string, or a list of them: one per sample) and
// `negative_prompt` ("" by default, as diffusers encodes the unconditional
// half) with the text encoder, into each conditioning value it names (c)
// and its unconditional counterpart (negative_c), which PredictNoise takes.
// A conditioning tensor the client sends takes precedence over the prompt's.
// A list of n prompts makes a batch of n (batch_size 1 or n).
class EncodePrompt final : public Block {
 public:
  static constexpr absl::string_view kTypeName = "EncodePrompt";
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  std::vector<ComponentSpec> expected_components() const override;
  absl::Status Bind(const Components& components) override;
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override;

 private:
  // The bound text encoder's outputs (Bind).
  std::vector<std::string> outputs_;
};

// image_latents from `image` (UINT8 [B,H,W,3], or float [B,C,H,W] in
// [-1, 1]) through the encoder; a client's image_latents pass through.
// Neither: no image (image_latents None), a text-to-image run.
class EncodeImage final : public Block {
 public:
  static constexpr absl::string_view kTypeName = "EncodeImage";
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  std::vector<ComponentSpec> expected_components() const override;
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override;
};

// Registers EncodePrompt and EncodeImage.
absl::Status RegisterEncodeBlocks(BlockRegistry& registry);

}  // namespace loopserve
