#include "blocks/diffusion/encode_blocks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "blocks/diffusion/encoders.h"
#include "blocks/diffusion/torchscript_module.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

// Bounds on what a run may ask a text encoder to read.
constexpr int64_t kMaxPrompts = 1024;
constexpr size_t kMaxPromptBytes = 16384;

// The texts of input `name`: a string, or a list of strings; empty when
// absent.
absl::StatusOr<std::vector<std::string>> Texts(const BlockState& state,
                                               absl::string_view name) {
  const c10::IValue* value = state.Find(name);
  std::vector<std::string> texts;
  if (value == nullptr || value->isNone()) return texts;
  if (value->isString()) {
    texts.push_back(value->toStringRef());
  } else if (value->isList()) {
    for (const c10::IValue& element : value->toListRef()) {
      if (!element.isString()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", name, "' must be a string or a list of strings"));
      }
      texts.push_back(element.toStringRef());
    }
    if (texts.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "' is an empty list"));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", name, "' must be a string or a list of strings"));
  }
  if (static_cast<int64_t>(texts.size()) > kMaxPrompts) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", name, "' has ", texts.size(),
                     " texts; at most ", kMaxPrompts));
  }
  for (const std::string& text : texts) {
    if (text.size() > kMaxPromptBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "' has a text of ", text.size(),
                       " bytes; at most ", kMaxPromptBytes));
    }
  }
  return texts;
}

}  // namespace

// ---- EncodePrompt ----

std::string EncodePrompt::description() const {
  return "Encodes the prompt and the negative prompt into the denoiser's "
         "conditioning";
}

std::vector<InputParam> EncodePrompt::inputs() const {
  std::vector<InputParam> inputs = {
      {.name = "prompt",
       .type_hint = TypeHint::String() | TypeHint::List(),
       .description = "What to draw: a string, or a list of strings (one "
                      "per sample); none: the empty prompt"},
      {.name = "negative_prompt",
       .type_hint = TypeHint::String() | TypeHint::List(),
       .default_value = std::string(),
       .description = "What guidance steers away from: a string, or one "
                      "per prompt"},
      {.name = "batch_size",
       .type_hint = TypeHint::Int(),
       .default_value = int64_t{1},
       .description = "Samples per run, in [1, 1024]; a list of n prompts "
                      "makes it n",
       .minimum = 1.0,
       .maximum = 1024.0}};
  // Conditioning given as tensors replaces the prompts', so a request
  // giving both is refused (as diffusers refuses prompt with
  // prompt_embeds), naming the two.
  for (const std::string& name : outputs_) {
    inputs[0].excluded_by.push_back(name);
    inputs[1].excluded_by.push_back(absl::StrCat("negative_", name));
  }
  for (const std::string& name : outputs_) {
    inputs.push_back({.name = name,
                      .type_hint = TypeHint::Tensor(),
                      .description = "Conditioning, given instead of the "
                                     "prompt (not with it)"});
    inputs.push_back({.name = absl::StrCat("negative_", name),
                      .type_hint = TypeHint::Tensor(),
                      .description = "Unconditional conditioning, given "
                                     "instead of the negative prompt's"});
  }
  return inputs;
}

std::vector<OutputParam> EncodePrompt::intermediate_outputs() const {
  std::vector<OutputParam> outputs = {{.name = "batch_size",
                                       .type_hint = TypeHint::Int(),
                                       .description = "Samples per run",
                                       .internal = true}};
  for (const std::string& name : outputs_) {
    outputs.push_back({.name = name,
                       .type_hint = TypeHint::Tensor(),
                       .description = "The prompt's conditioning",
                       .internal = true});
    outputs.push_back({.name = absl::StrCat("negative_", name),
                       .type_hint = TypeHint::Tensor(),
                       .description = "The negative prompt's conditioning",
                       .internal = true});
  }
  return outputs;
}

std::vector<ComponentSpec> EncodePrompt::expected_components() const {
  return {{.role = std::string(kTextEncoderRole),
           .type = std::string(TorchScriptTextEncoder::kTypeName),
           .description = "Prompts -> conditioning",
           .interface = ComponentInterface::Of<TextEncoder>()}};
}

absl::Status EncodePrompt::Bind(const Components& components) {
  ASSIGN_OR_RETURN(const TextEncoder* encoder,
                   components.Get<TextEncoder>(kTextEncoderRole));
  const std::span<const std::string> outputs = encoder->outputs();
  outputs_.assign(outputs.begin(), outputs.end());
  return absl::OkStatus();
}

absl::Status EncodePrompt::Run(const Components& components,
                               PipelineState& state, RunContext&) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  ASSIGN_OR_RETURN(const TextEncoder* encoder,
                   components.Get<TextEncoder>(kTextEncoderRole));
  ASSIGN_OR_RETURN(std::vector<std::string> prompts,
                   Texts(block_state, "prompt"));
  ASSIGN_OR_RETURN(std::vector<std::string> negatives,
                   Texts(block_state, "negative_prompt"));
  if (prompts.empty()) prompts.push_back("");
  if (negatives.empty()) negatives.push_back("");
  const int64_t n = static_cast<int64_t>(prompts.size());
  if (negatives.size() != 1 && static_cast<int64_t>(negatives.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'negative_prompt' must be one text or one per prompt (", n,
        "), got ", negatives.size()));
  }
  ASSIGN_OR_RETURN(const int64_t batch, block_state.Get<int64_t>("batch_size"));
  if (n > 1 && batch != 1 && batch != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'batch_size' (", batch,
                     ") must be 1 or the number of prompts (", n, ")"));
  }
  block_state.Set("batch_size", std::max(batch, n));

  // What the client did not send, from one call of the encoder: the
  // prompts, then the negative prompts.
  bool need_positive = false;
  bool need_negative = false;
  for (const std::string& name : outputs_) {
    need_positive |= !block_state.OptionalTensor(name).defined();
    need_negative |=
        !block_state.OptionalTensor(absl::StrCat("negative_", name)).defined();
  }
  std::vector<std::string> texts;
  if (need_positive) texts = prompts;
  const int64_t negative_offset = static_cast<int64_t>(texts.size());
  if (need_negative)
    texts.insert(texts.end(), negatives.begin(), negatives.end());
  std::vector<at::Tensor> encoded;
  if (!texts.empty()) {
    ASSIGN_OR_RETURN(encoded, encoder->Encode(texts));
  }
  for (size_t i = 0; i < outputs_.size(); ++i) {
    const std::string& name = outputs_[i];
    const std::string negative_name = absl::StrCat("negative_", name);
    if (!block_state.OptionalTensor(name).defined()) {
      block_state.Set(name, encoded[i].slice(0, 0, n));
    }
    if (!block_state.OptionalTensor(negative_name).defined()) {
      block_state.Set(
          negative_name,
          encoded[i].slice(
              0, negative_offset,
              negative_offset + static_cast<int64_t>(negatives.size())));
    }
  }
  return SetBlockState(state, block_state);
}

// ---- EncodeImage ----

std::string EncodeImage::description() const {
  return "Encodes the input image into image_latents (image-to-image)";
}

std::vector<InputParam> EncodeImage::inputs() const {
  return {{.name = "image",
           .type_hint = TypeHint::Tensor(),
           .description = "Image-to-image: the image to start from, UINT8 "
                          "[B,H,W,3] or float [B,C,H,W] in [-1, 1]"},
          {.name = "image_latents",
           .type_hint = TypeHint::Tensor(),
           .description = "The image already in latent space, instead of "
                          "'image'"}};
}

std::vector<OutputParam> EncodeImage::intermediate_outputs() const {
  return {{.name = "image_latents",
           .type_hint = TypeHint::Tensor(),
           .description = "The image in latent space; None without one",
           .internal = true}};
}

std::vector<ComponentSpec> EncodeImage::expected_components() const {
  return {{.role = std::string(kEncoderRole),
           .type = "torchscript_encoder | identity_encoder",
           .description = "Images -> latents",
           .interface = ComponentInterface::Of<ImageEncoder>()}};
}

absl::Status EncodeImage::Run(const Components& components,
                              PipelineState& state, RunContext& context) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  const at::Tensor image = block_state.OptionalTensor("image");
  if (!image.defined()) return SetBlockState(state, block_state);
  if (block_state.OptionalTensor("image_latents").defined()) {
    return absl::InvalidArgumentError(
        "inputs 'image' and 'image_latents' both give the image; give one");
  }
  at::Tensor pixels;
  if (image.scalar_type() == at::kByte && image.dim() == 4 &&
      image.size(3) == 3 && image.numel() > 0) {
    // diffusers' image processor: [0, 255] -> [-1, 1], channels first.
    pixels = image.to(context.device)
                 .permute({0, 3, 1, 2})
                 .to(at::kFloat)
                 .div(127.5)
                 .sub(1.0);
  } else if (at::isFloatingType(image.scalar_type()) && image.dim() == 4 &&
             image.numel() > 0) {
    pixels = image.to(context.device, at::kFloat);
    const at::Tensor magnitude = pixels.abs().max();
    if (!(magnitude.item<float>() <= 1.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input 'image' must hold values in [-1, 1], got ",
                       magnitude.item<float>(), " (as a magnitude)"));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'image' must be UINT8 [B,H,W,3] or float [B,C,H,W] in "
        "[-1, 1], got ",
        c10::toString(image.scalar_type()), " ", ShapeString(image)));
  }
  ASSIGN_OR_RETURN(const ImageEncoder* encoder,
                   components.Get<ImageEncoder>(kEncoderRole));
  ASSIGN_OR_RETURN(at::Tensor latents, encoder->Encode(pixels));
  block_state.Set("image_latents", std::move(latents));
  return SetBlockState(state, block_state);
}

// ---- registration ----

absl::Status RegisterEncodeBlocks(BlockRegistry& registry) {
  RETURN_IF_ERROR(registry.Register<EncodePrompt>());
  return registry.Register<EncodeImage>();
}

}  // namespace loopserve
