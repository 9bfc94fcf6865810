#include "blocks/diffusion/encode_blocks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "blocks/core/param_reader.h"
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
       .description =
           options_.force_zeros_for_empty_prompt
               ? "What guidance steers away from: a string, or one per "
                 "prompt; none: zero conditioning"
               : "What guidance steers away from: a string, or one per "
                 "prompt; none: the empty prompt"},
      {.name = "num_images_per_prompt",
       .type_hint = TypeHint::Int(),
       .default_value = int64_t{1},
       .description = "Samples per prompt, in [1, 1024]",
       .minimum = 1.0,
       .maximum = 1024.0},
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
  if (max_clip_skip_.has_value()) {
    inputs.push_back(
        {.name = "clip_skip",
         .type_hint = TypeHint::Int(),
         .default_value = int64_t{0},
         .description = absl::StrCat("Final layers of the text encoder to skip "
                                     "(diffusers' clip_skip; 0: none), in [0, ",
                                     *max_clip_skip_, "]"),
         .minimum = 0.0,
         .maximum = static_cast<double>(*max_clip_skip_)});
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
  max_clip_skip_ = encoder->max_clip_skip();
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
  // No negative prompt: the empty one's conditioning, or none at all, which
  // PredictNoise makes zeros (diffusers' force_zeros_for_empty_prompt).
  if (negatives.empty() && !options_.force_zeros_for_empty_prompt) {
    negatives.push_back("");
  }
  const int64_t n = static_cast<int64_t>(prompts.size());
  if (negatives.size() > 1 && static_cast<int64_t>(negatives.size()) != n) {
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
  ASSIGN_OR_RETURN(const int64_t per_prompt,
                   block_state.Get<int64_t>("num_images_per_prompt"));
  // Bounded before any row is repeated: a run's batch is at most that of
  // its latents (PrepareLatents).
  if (std::max(batch, n) * per_prompt > kMaxPrompts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'num_images_per_prompt' (", per_prompt, ") × ",
        std::max(batch, n), " prompts makes a batch of ",
        std::max(batch, n) * per_prompt, "; at most ", kMaxPrompts));
  }
  block_state.Set("batch_size", std::max(batch, n) * per_prompt);
  int64_t clip_skip = 0;
  if (max_clip_skip_.has_value()) {
    ASSIGN_OR_RETURN(clip_skip, block_state.Get<int64_t>("clip_skip"));
  }

  // What the client did not send, from one call of the encoder: the
  // prompts, then the negative prompts. diffusers skips clip_skip layers
  // for the prompts only, so then the negative prompts take a call of
  // their own.
  bool need_positive = false;
  bool need_negative = false;
  for (const std::string& name : outputs_) {
    need_positive |= !block_state.OptionalTensor(name).defined();
    need_negative |=
        !block_state.OptionalTensor(absl::StrCat("negative_", name)).defined();
  }
  need_negative &= !negatives.empty();
  std::vector<at::Tensor> encoded;
  std::vector<at::Tensor> encoded_negatives;
  if (need_positive && need_negative && clip_skip == 0) {
    std::vector<std::string> texts = prompts;
    texts.insert(texts.end(), negatives.begin(), negatives.end());
    ASSIGN_OR_RETURN(encoded, encoder->Encode(texts, 0));
    for (at::Tensor& both : encoded) {
      encoded_negatives.push_back(both.slice(0, n));
      both = both.slice(0, 0, n);
    }
  } else {
    if (need_positive) {
      ASSIGN_OR_RETURN(encoded, encoder->Encode(prompts, clip_skip));
    }
    if (need_negative) {
      ASSIGN_OR_RETURN(encoded_negatives, encoder->Encode(negatives, 0));
    }
  }
  // diffusers repeats each prompt's rows num_images_per_prompt times, in
  // place: [p0, p0, p1, p1], for the conditioning given as tensors too.
  auto per_image = [per_prompt](const at::Tensor& rows) {
    return per_prompt == 1 || rows.size(0) == 1
               ? rows
               : rows.repeat_interleave(per_prompt, 0);
  };
  for (size_t i = 0; i < outputs_.size(); ++i) {
    const std::string& name = outputs_[i];
    const std::string negative_name = absl::StrCat("negative_", name);
    at::Tensor positive = block_state.OptionalTensor(name);
    if (!positive.defined()) positive = encoded[i];
    block_state.Set(name, per_image(positive));
    at::Tensor negative = block_state.OptionalTensor(negative_name);
    if (!negative.defined() && !encoded_negatives.empty()) {
      negative = encoded_negatives[i];
    }
    if (negative.defined()) block_state.Set(negative_name, per_image(negative));
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
           .internal = true},
          {.name = "image_latents_std",
           .type_hint = TypeHint::Tensor(),
           .description = "When the encoder's latents are a distribution: "
                          "its standard deviation, image_latents its mean "
                          "(PrepareLatents samples it)",
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
  block_state.Set("image_latents_std", c10::IValue());
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
  ASSIGN_OR_RETURN(ImageLatents latents, encoder->Encode(pixels));
  block_state.Set("image_latents", std::move(latents.mean));
  if (latents.std.defined()) {
    block_state.Set("image_latents_std", std::move(latents.std));
  }
  return SetBlockState(state, block_state);
}

// ---- AddTimeIds ----

namespace {

InputParam SizeInput(std::string name, std::string description) {
  return {.name = std::move(name),
          .type_hint = TypeHint::List(),
          .description = std::move(description)};
}

// The (a, b) pair of list input `name`, or `fallback` when absent.
absl::StatusOr<std::pair<double, double>> PairInput(
    const BlockState& state, absl::string_view name,
    std::pair<double, double> fallback) {
  const c10::IValue* value = state.Find(name);
  if (value == nullptr || value->isNone()) return fallback;
  auto number = [](const c10::IValue& v) {
    return v.isInt() ? static_cast<double>(v.toInt()) : v.toDouble();
  };
  if (!value->isList() || value->toListRef().size() != 2 ||
      !std::all_of(
          value->toListRef().begin(), value->toListRef().end(),
          [](const c10::IValue& v) { return v.isInt() || v.isDouble(); })) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", name, "' must be a list of two numbers"));
  }
  return std::pair{number(value->toListRef()[0]),
                   number(value->toListRef()[1])};
}

bool Given(const BlockState& state, absl::string_view name) {
  const c10::IValue* value = state.Find(name);
  return value != nullptr && !value->isNone();
}

}  // namespace

std::string AddTimeIds::description() const {
  return "SDXL's micro-conditioning: the image's sizes and crop as the "
         "denoiser's time_ids";
}

std::vector<InputParam> AddTimeIds::inputs() const {
  std::vector<InputParam> inputs = {
      SizeInput("original_size",
                "(height, width) the model is told the "
                "original image had; default the image's"),
      SizeInput("crops_coords_top_left",
                "(top, left) of the crop the model is told of; default (0, 0)"),
      SizeInput("negative_original_size",
                "original_size of the unconditional half"),
      SizeInput("negative_crops_coords_top_left",
                "crops_coords_top_left of the unconditional half")};
  if (options_.aesthetic_score) {
    inputs.push_back({.name = "aesthetic_score",
                      .type_hint = TypeHint::Double(),
                      .default_value = 6.0,
                      .description = "The aesthetic score the refiner is "
                                     "conditioned on"});
    inputs.push_back({.name = "negative_aesthetic_score",
                      .type_hint = TypeHint::Double(),
                      .default_value = 2.5,
                      .description = "aesthetic_score of the unconditional "
                                     "half"});
  } else {
    inputs.push_back(SizeInput("target_size",
                               "(height, width) the model is told to draw at; "
                               "default the image's"));
    inputs.push_back(SizeInput("negative_target_size",
                               "target_size of the unconditional half"));
  }
  return inputs;
}

std::vector<InputParam> AddTimeIds::intermediate_inputs() const {
  return {{.name = "latents",
           .type_hint = TypeHint::Tensor(),
           .required = true,
           .description = "The prepared latents, whose size gives the "
                          "default sizes"}};
}

std::vector<OutputParam> AddTimeIds::intermediate_outputs() const {
  return {{.name = "time_ids",
           .type_hint = TypeHint::Tensor(),
           .description = "The micro-conditioning, float32 [1, n]",
           .internal = true},
          {.name = "negative_time_ids",
           .type_hint = TypeHint::Tensor(),
           .description = "The unconditional half's",
           .internal = true}};
}

absl::Status AddTimeIds::Run(const Components&, PipelineState& state,
                             RunContext& context) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  ASSIGN_OR_RETURN(const at::Tensor latents,
                   block_state.Get<at::Tensor>("latents"));
  const std::pair<double, double> image_size = {
      static_cast<double>(latents.size(-2) * options_.vae_scale_factor),
      static_cast<double>(latents.size(-1) * options_.vae_scale_factor)};
  ASSIGN_OR_RETURN(const auto original,
                   PairInput(block_state, "original_size", image_size));
  ASSIGN_OR_RETURN(const auto crops,
                   PairInput(block_state, "crops_coords_top_left", {0, 0}));
  ASSIGN_OR_RETURN(const auto negative_original,
                   PairInput(block_state, "negative_original_size", original));
  ASSIGN_OR_RETURN(
      const auto negative_crops,
      PairInput(block_state, "negative_crops_coords_top_left", {0, 0}));
  std::vector<double> ids = {original.first, original.second, crops.first,
                             crops.second};
  std::vector<double> negative_ids = {
      negative_original.first, negative_original.second, negative_crops.first,
      negative_crops.second};
  if (options_.aesthetic_score) {
    ASSIGN_OR_RETURN(const double score,
                     block_state.Get<double>("aesthetic_score"));
    ASSIGN_OR_RETURN(const double negative_score,
                     block_state.Get<double>("negative_aesthetic_score"));
    ids.push_back(score);
    negative_ids.push_back(negative_score);
  } else {
    ASSIGN_OR_RETURN(const auto target,
                     PairInput(block_state, "target_size", image_size));
    ASSIGN_OR_RETURN(
        const auto negative_target,
        PairInput(block_state, "negative_target_size", image_size));
    ids.insert(ids.end(), {target.first, target.second});
    if (Given(block_state, "negative_original_size") &&
        Given(block_state, "negative_target_size")) {
      negative_ids.insert(negative_ids.end(),
                          {negative_target.first, negative_target.second});
    } else {
      negative_ids = ids;
    }
  }
  auto row = [&](const std::vector<double>& values) {
    return at::tensor(values, at::kDouble)
        .to(at::kFloat)
        .view({1, static_cast<int64_t>(values.size())})
        .to(context.device);
  };
  block_state.Set("time_ids", row(ids));
  block_state.Set("negative_time_ids", row(negative_ids));
  return SetBlockState(state, block_state);
}

// ---- registration ----

namespace {

absl::StatusOr<std::unique_ptr<Block>> MakeEncodePrompt(
    const BlockParams& raw) {
  ParamReader params(raw);
  EncodePrompt::Options o;
  ASSIGN_OR_RETURN(o.force_zeros_for_empty_prompt,
                   params.Bool("force_zeros_for_empty_prompt",
                               o.force_zeros_for_empty_prompt));
  RETURN_IF_ERROR(params.CheckAllRead());
  return std::make_unique<EncodePrompt>(o);
}

absl::StatusOr<std::unique_ptr<Block>> MakeAddTimeIds(const BlockParams& raw) {
  ParamReader params(raw);
  AddTimeIds::Options o;
  ASSIGN_OR_RETURN(o.aesthetic_score,
                   params.Bool("aesthetic_score", o.aesthetic_score));
  ASSIGN_OR_RETURN(o.vae_scale_factor,
                   params.Int("vae_scale_factor", o.vae_scale_factor));
  RETURN_IF_ERROR(params.CheckAllRead());
  if (o.vae_scale_factor < 1)
    return ParamError("vae_scale_factor", "must be >= 1");
  return std::make_unique<AddTimeIds>(o);
}

}  // namespace

absl::Status RegisterEncodeBlocks(BlockRegistry& registry) {
  RETURN_IF_ERROR(registry.Register(std::string(EncodePrompt::kTypeName),
                                    MakeEncodePrompt));
  RETURN_IF_ERROR(registry.Register<EncodeImage>());
  return registry.Register(std::string(AddTimeIds::kTypeName), MakeAddTimeIds);
}

}  // namespace loopserve
