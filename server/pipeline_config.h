// Pipelines from configuration: loads a ServerConfig (proto/loopserve/v1/
// config.proto, protobuf text format) into a PipelineCatalog: the components
// it names, created through the ComponentRegistry, and each pipeline's block
// tree, created through the BlockRegistry and bound to its components by role.
//
//   ASSIGN_OR_RETURN(PipelineCatalog catalog, LoadPipelines(path, device));
//
// or, with registries of one's own:
//
//   RETURN_IF_ERROR(LoadServerConfig(
//       {.text = text, .source = path, .base_dir = DirOf(path)},
//       blocks, components, device, catalog));
//
// Every error names the source, the line and the field:
//   "pipelines.pbtxt:14:7: pipeline 'gmm-ddim', block 'denoise/denoiser':
//    unknown block type 'PredictNoize'; registered: ..."
// and is INVALID_ARGUMENT (NOT_FOUND for a file that cannot be read).
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/component_registry.h"
#include "blocks/core/registry.h"
#include "server/pipeline_catalog.h"

namespace loopserve {

struct ConfigSource {
  // The configuration, in protobuf text format.
  absl::string_view text;
  // What errors call it: the file's path, or "<embedded>".
  std::string source{};
  // Relative paths in component params resolve against it.
  std::string base_dir{};
};

// Loads `config` into `catalog`: every component, then every pipeline.
absl::Status LoadServerConfig(const ConfigSource& config,
                              const BlockRegistry& blocks,
                              const ComponentRegistry& components,
                              c10::Device device, PipelineCatalog& catalog);

// The file's contents; NOT_FOUND naming it when it cannot be read.
absl::StatusOr<std::string> ReadConfigFile(const std::string& path);

// The embedded default configuration (server/default_config.pbtxt): the seed
// pipelines, gmm-ddim, gmm-euler and digits-ddim. Its model paths are
// relative to --model_dir.
absl::string_view DefaultConfigText();
// --model_dir's default: the source tree's deploy/models.
absl::string_view DefaultModelDir();

// The pipelines of the configuration file `config_path`, built from the
// built-in blocks and components, loaded onto `device`. An empty path loads
// the embedded default configuration, its models from `model_dir`.
absl::StatusOr<PipelineCatalog> LoadPipelines(
    const std::string& config_path, c10::Device device,
    const std::string& model_dir = std::string(DefaultModelDir()));

}  // namespace loopserve
