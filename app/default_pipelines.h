// The pipelines a loopserve binary serves: the built-in block and component
// types, those of the plugins it is given (--plugin), and the configuration
// it is given (--config) or else the embedded default one
// (app/default_config.pbtxt: seed-loop, seed-loop-2, gmm-ddim, gmm-euler
// and digits-ddim).
//
//   ASSIGN_OR_RETURN(PipelineCatalog catalog,
//                    LoadPipelines({.config_path = flag_config,
//                                   .plugins = flag_plugins}, device));
//
// This is the one target that links every built-in block
// (loopserve_default_pipelines); the engine itself links none, and a binary
// that serves other blocks registers its own.
#pragma once

#include <c10/core/Device.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/component_registry.h"
#include "blocks/core/registry.h"
#include "engine/pipeline_catalog.h"
#include "engine/pipeline_config.h"

namespace loopserve {

// The embedded default configuration's text, and --model_dir's default:
// the source tree's deploy/models (the images set /opt/loopserve/models).
absl::string_view DefaultConfigText();
absl::string_view DefaultModelDir();

// The embedded default configuration, its model paths relative to
// `model_dir`.
ConfigSource DefaultConfig(const std::string& model_dir);

struct PipelineSources {
  // A configuration file; empty: the embedded default.
  std::string config_path{};
  // Where the embedded default's models are.
  std::string model_dir = std::string(DefaultModelDir());
  // Plugins (shared libraries) whose block and component types to add.
  std::vector<std::string> plugins{};
};

// Registers the built-in block and component types, then each plugin's.
absl::Status RegisterTypes(const std::vector<std::string>& plugins,
                           BlockRegistry& blocks,
                           ComponentRegistry& components);

// The pipelines of `sources`, their components loaded onto `device`.
// Model components batch their calls across runs under `batching`
// (Note [step batching] in blocks/diffusion/batched_denoiser.h).
absl::StatusOr<PipelineCatalog> LoadPipelines(
    const PipelineSources& sources, c10::Device device,
    const BatchingOptions& batching = {});
// The embedded default configuration's pipelines (tests, benchmarks).
absl::StatusOr<PipelineCatalog> LoadDefaultPipelines(
    c10::Device device, const BatchingOptions& batching = {});

}  // namespace loopserve
