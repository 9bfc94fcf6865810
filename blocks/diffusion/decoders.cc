#include "blocks/diffusion/decoders.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "blocks/diffusion/torchscript_module.h"
#include "util/png.h"
#include "util/status_macros.h"

namespace loopserve {

// ---- torchscript_decoder ----

TorchScriptDecoder::TorchScriptDecoder(
    Options options, std::unique_ptr<torch::jit::Module> module)
    : options_(std::move(options)), module_(std::move(module)) {}

TorchScriptDecoder::~TorchScriptDecoder() = default;

absl::StatusOr<std::shared_ptr<const TorchScriptDecoder>>
TorchScriptDecoder::Load(const Options& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<torch::jit::Module> module,
                   LoadModule(options.path, options.device, options.dtype));
  return std::shared_ptr<const TorchScriptDecoder>(
      new TorchScriptDecoder(options, std::move(module)));
}

absl::StatusOr<at::Tensor> TorchScriptDecoder::Decode(
    const at::Tensor& latents) const {
  const at::Tensor scaled =
      (latents / options_.scaling_factor).to(options_.dtype);
  const c10::IValue value(scaled);
  ASSIGN_OR_RETURN(c10::IValue out,
                   CallModule(*module_, "decoder", {{"latents", &value}}));
  ASSIGN_OR_RETURN(at::Tensor image, OutputSelector().Select(out, "decoder"));
  if (image.dim() != 4 || image.size(1) != 3) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the decoder returned ", ShapeString(image), ", not [B,3,H,W]"));
  }
  // diffusers' image processor: [-1, 1] -> [0, 255].
  return ((image.to(at::kFloat) / 2 + 0.5).clamp(0, 1) * 255)
      .round()
      .to(at::kByte)
      .permute({0, 2, 3, 1})
      .contiguous()
      .cpu();
}

// ---- latent_preview ----

LatentPreview::LatentPreview(std::vector<double> factors,
                             std::vector<double> bias, int64_t upscale)
    : channels_(static_cast<int64_t>(factors.size() / 3)),
      factors_(at::tensor(factors, at::kDouble)
                   .to(at::kFloat)
                   .reshape({channels_, 3})),
      bias_(at::tensor(bias, at::kDouble).to(at::kFloat)),
      upscale_(upscale) {}

absl::StatusOr<at::Tensor> LatentPreview::Decode(
    const at::Tensor& latents) const {
  if (latents.dim() != 4 || latents.size(1) != channels_) {
    return absl::InvalidArgumentError(
        absl::StrCat("latent preview needs latents of [B,", channels_,
                     ",H,W], got ", ShapeString(latents)));
  }
  // [B,C,H,W] -> [B,H,W,C] · [C,3] on the CPU: previews are small, and the
  // copy off the device is needed for the PNG anyway.
  at::Tensor rgb = at::matmul(
      latents.detach().to(at::kCPU, at::kFloat).permute({0, 2, 3, 1}),
      factors_);
  rgb =
      (((rgb + bias_) + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(at::kByte);
  if (upscale_ > 1) {
    rgb = rgb.repeat_interleave(upscale_, 1).repeat_interleave(upscale_, 2);
  }
  return rgb.contiguous();
}

absl::StatusOr<std::string> LatentPreview::RenderPng(
    const BlockState& state) const {
  const c10::IValue* value = state.Find("denoised");
  if (value == nullptr || !value->isTensor()) value = state.Find("latents");
  if (value == nullptr || !value->isTensor()) return std::string();
  ASSIGN_OR_RETURN(const at::Tensor rgb, Decode(value->toTensor()));
  return EncodePngSideBySide(rgb.data_ptr<uint8_t>(), rgb.size(0), rgb.size(1),
                             rgb.size(2));
}

}  // namespace loopserve
