// The pipeline of bench/unet_pipeline.pbtxt (DDIM on bench/make_unet.py's
// UNet-like model), loaded for bench/gpu_bench and the device tests. Its
// targets define LOOPSERVE_UNET_PIPELINE, the template's path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "app/default_pipelines.h"
#include "engine/pipeline_config.h"
#include "util/status_macros.h"

namespace loopserve {

// The pipeline "unet": `model` (a TorchScript file) in `dtype` (float32,
// float16, bfloat16), on [B,4,size,size] latents, on `device`.
inline absl::StatusOr<PipelineCatalog> LoadUnetPipeline(
    const std::string& model, const std::string& dtype, int64_t size,
    c10::Device device, const BatchingOptions& batching = {}) {
  ASSIGN_OR_RETURN(ConfigSource config,
                   ReadConfigSource(LOOPSERVE_UNET_PIPELINE));
  // Relative to the caller's directory, not the template's.
  const std::string model_path = std::filesystem::absolute(model).string();
  config.text =
      absl::StrReplaceAll(config.text, {{"@MODEL@", model_path},
                                        {"@DTYPE@", dtype},
                                        {"@SIZE@", absl::StrCat(size)}});
  BlockRegistry blocks;
  ComponentRegistry components;
  RETURN_IF_ERROR(RegisterTypes({}, blocks, components));
  PipelineCatalog catalog;
  RETURN_IF_ERROR(
      LoadServerConfig(config, blocks, components, device, catalog, batching));
  return catalog;
}

}  // namespace loopserve
