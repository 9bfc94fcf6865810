#include "blocks/diffusion/encoders.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/param_reader.h"
#include "blocks/diffusion/torchscript_module.h"
#include "util/status_macros.h"

namespace loopserve {

// ---- torchscript_text_encoder ----

TorchScriptTextEncoder::TorchScriptTextEncoder(
    Options options, std::unique_ptr<torch::jit::Module> module)
    : options_(std::move(options)), module_(std::move(module)) {
  if (options_.tokenizers.empty()) return;
  max_clip_skip_ = kUnknownMaxClipSkip;
  if (module_->hasattr("max_clip_skip") &&
      module_->attr("max_clip_skip").isInt()) {
    max_clip_skip_ =
        std::max<int64_t>(module_->attr("max_clip_skip").toInt(), 0);
  }
}

TorchScriptTextEncoder::~TorchScriptTextEncoder() = default;

absl::StatusOr<std::shared_ptr<const TorchScriptTextEncoder>>
TorchScriptTextEncoder::Load(const Options& options) {
  if (options.outputs.empty()) return ParamError("outputs", "is empty");
  absl::flat_hash_set<std::string> seen;
  for (const std::string& name : options.outputs) {
    if (name.empty() || !seen.insert(name).second) {
      return ParamError("outputs", absl::StrCat("names must be non-empty and "
                                                "distinct; got '",
                                                name, "'"));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<torch::jit::Module> module,
                   LoadModule(options.path, options.device, options.dtype));
  const std::vector<std::string> forward = ForwardArgumentNames(*module);
  if (options.tokenizers.empty() && forward.size() != 1) {
    return ParamError("path",
                      absl::StrCat("a text encoder's forward takes the list "
                                   "of texts alone; this one takes (",
                                   absl::StrJoin(forward, ", "), ")"));
  }
  if (!options.tokenizers.empty() &&
      forward.size() != options.tokenizers.size() + 1) {
    return ParamError(
        "path", absl::StrCat("with ", options.tokenizers.size(),
                             " tokenizers a text encoder's forward takes ",
                             options.tokenizers.size(),
                             " ids tensors and clip_skip; this one takes (",
                             absl::StrJoin(forward, ", "), ")"));
  }
  return std::shared_ptr<const TorchScriptTextEncoder>(
      new TorchScriptTextEncoder(options, std::move(module)));
}

absl::StatusOr<std::vector<at::Tensor>> TorchScriptTextEncoder::Encode(
    const std::vector<std::string>& texts, int64_t clip_skip) const {
  std::vector<c10::IValue> values;
  std::vector<std::string> names;
  if (options_.tokenizers.empty()) {
    c10::List<std::string> list;
    for (const std::string& text : texts) list.push_back(text);
    values.emplace_back(std::move(list));
    names.push_back("texts");
  } else {
    for (size_t t = 0; t < options_.tokenizers.size(); ++t) {
      const ClipTokenizer& tokenizer = *options_.tokenizers[t];
      std::vector<int64_t> ids;
      ids.reserve(texts.size() *
                  static_cast<size_t>(tokenizer.model_max_length()));
      for (const std::string& text : texts) {
        ASSIGN_OR_RETURN(std::vector<int64_t> row, tokenizer.Encode(text));
        ids.insert(ids.end(), row.begin(), row.end());
      }
      values.emplace_back(at::tensor(ids, at::kLong)
                              .view({static_cast<int64_t>(texts.size()),
                                     tokenizer.model_max_length()})
                              .to(options_.device));
      names.push_back(absl::StrCat("input_ids_", t + 1));
    }
    values.emplace_back(clip_skip);
    names.push_back("clip_skip");
  }
  std::vector<NamedValue> inputs;
  for (size_t i = 0; i < values.size(); ++i) {
    inputs.push_back({names[i], &values[i]});
  }
  ASSIGN_OR_RETURN(c10::IValue out,
                   CallModule(*module_, "text encoder", inputs));
  std::vector<c10::IValue> elements;
  if (out.isTuple()) {
    elements = out.toTupleRef().elements().vec();
  } else if (out.isList()) {
    elements = out.toListRef().vec();
  } else {
    elements.push_back(out);
  }
  if (elements.size() != options_.outputs.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the text encoder returned ", elements.size(),
                     " values; param "
                     "'outputs' names ",
                     options_.outputs.size(), " (",
                     absl::StrJoin(options_.outputs, ", "), ")"));
  }
  std::vector<at::Tensor> tensors;
  for (size_t i = 0; i < elements.size(); ++i) {
    const int64_t rows = static_cast<int64_t>(texts.size());
    if (!elements[i].isTensor() || elements[i].toTensor().dim() < 1 ||
        elements[i].toTensor().size(0) != rows) {
      return absl::FailedPreconditionError(
          absl::StrCat("the text encoder's '", options_.outputs[i],
                       "' is not a tensor of ", rows, " rows (one per text)"));
    }
    tensors.push_back(elements[i].toTensor());
  }
  return tensors;
}

// ---- torchscript_encoder ----

TorchScriptEncoder::TorchScriptEncoder(
    Options options, std::unique_ptr<torch::jit::Module> module,
    OutputSelector output)
    : options_(std::move(options)),
      output_(std::move(output)),
      module_(std::move(module)) {}

TorchScriptEncoder::~TorchScriptEncoder() = default;

absl::StatusOr<std::shared_ptr<const TorchScriptEncoder>>
TorchScriptEncoder::Load(const Options& options) {
  ASSIGN_OR_RETURN(OutputSelector output,
                   OutputSelector::Parse(options.output));
  if (options.sample && !options.moments) {
    return ParamError("sample",
                      "needs moments: true (the distribution's "
                      "mean and log-variance)");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<torch::jit::Module> module,
                   LoadModule(options.path, options.device, options.dtype));
  return std::shared_ptr<const TorchScriptEncoder>(
      new TorchScriptEncoder(options, std::move(module), std::move(output)));
}

absl::StatusOr<ImageLatents> TorchScriptEncoder::Encode(
    const at::Tensor& image) const {
  const c10::IValue value(image.to(options_.dtype));
  ASSIGN_OR_RETURN(c10::IValue out,
                   CallModule(*module_, "image encoder", {{"image", &value}}));
  ASSIGN_OR_RETURN(at::Tensor latents, output_.Select(out, "image encoder"));
  if (latents.dim() != 4 || latents.size(0) != image.size(0) ||
      (options_.moments && latents.size(1) % 2 != 0)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the image encoder returned ", ShapeString(latents),
                     " for an image "
                     "of ",
                     ShapeString(image), ", not [B,",
                     options_.moments ? "2C" : "C", ",h,w]"));
  }
  latents = latents.to(at::kFloat);
  if (!options_.moments) return ImageLatents{latents * options_.scaling_factor};
  const std::vector<at::Tensor> moments = latents.chunk(2, 1);
  ImageLatents encoded{moments[0] * options_.scaling_factor};
  if (options_.sample) {
    encoded.std =
        (moments[1].clamp(-30.0, 20.0) * 0.5).exp() * options_.scaling_factor;
  }
  return encoded;
}

// ---- identity_encoder ----

absl::StatusOr<ImageLatents> IdentityEncoder::Encode(
    const at::Tensor& image) const {
  if (channels_ == 1 && image.size(1) == 3) {
    return ImageLatents{image.mean(1, /*keepdim=*/true)};
  }
  if (channels_ != 0 && image.size(1) != channels_) {
    return absl::InvalidArgumentError(absl::StrCat("input 'image' has ",
                                                   image.size(1),
                                                   " channels; this pipeline's "
                                                   "images have ",
                                                   channels_));
  }
  return ImageLatents{image};
}

}  // namespace loopserve
