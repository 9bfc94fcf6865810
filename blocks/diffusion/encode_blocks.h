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

#include <optional>
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
// `negative_prompt` (a string or one per prompt) with the text encoder, into
// each conditioning value it names (c) and its unconditional counterpart
// (negative_c), which PredictNoise takes, as diffusers' encode_prompt does:
// each prompt's rows repeated `num_images_per_prompt` times, `clip_skip`
// final layers skipped (when the encoder tokenizes). Without a negative
// prompt the unconditional half is the empty prompt's, or with
// `force_zeros_for_empty_prompt` (SDXL's) left to PredictNoise's zeros.
// A conditioning tensor the client sends takes precedence over the prompt's.
// A list of n prompts makes a batch of n (batch_size 1 or n).
class EncodePrompt final : public Block {
 public:
  static constexpr absl::string_view kTypeName = "EncodePrompt";
  struct Options {
    bool force_zeros_for_empty_prompt = false;
  };
  explicit EncodePrompt(Options options) : options_(options) {}
  EncodePrompt() : EncodePrompt(Options{}) {}
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  std::vector<ComponentSpec> expected_components() const override;
  absl::Status Bind(const Components& components) override;
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override;

 private:
  Options options_;
  // The bound text encoder's outputs, and the largest clip_skip it takes
  // (none: it reads none) (Bind).
  std::vector<std::string> outputs_;
  std::optional<int64_t> max_clip_skip_;
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

// SDXL's micro-conditioning, as diffusers' _get_add_time_ids computes it:
// time_ids = original_size + crops_coords_top_left + target_size, or with
// `aesthetic_score` (a refiner's requires_aesthetics_score) original_size +
// crops_coords_top_left + (aesthetic_score,); negative_time_ids from the
// negative_ forms. Sizes default to the latents' size × vae_scale_factor
// (the run's height and width, or its image's), crops to (0, 0). Without
// aesthetic_score the negative sizes count only when both are given (else
// the negative half is time_ids), as diffusers' text-to-image pipeline has
// it; with it each defaults to its positive. Writes float32 [1, 6] (or
// [1, 5]) tensors, which serve every row of the batch.
class AddTimeIds final : public Block {
 public:
  static constexpr absl::string_view kTypeName = "AddTimeIds";
  struct Options {
    bool aesthetic_score = false;
    int64_t vae_scale_factor = 8;
  };
  explicit AddTimeIds(Options options) : options_(options) {}
  AddTimeIds() : AddTimeIds(Options{}) {}
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> inputs() const override;
  std::vector<InputParam> intermediate_inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override;

 private:
  Options options_;
};

// Registers EncodePrompt, EncodeImage and AddTimeIds.
absl::Status RegisterEncodeBlocks(BlockRegistry& registry);

}  // namespace loopserve
