// Pipelines from configuration: loads a ServerConfig (proto/loopserve/v1/
// config.proto, protobuf text format) into a PipelineCatalog: the components
// it names, created through the ComponentRegistry, and each pipeline's block
// tree, created through the BlockRegistry and bound to its components by role.
//
//   ASSIGN_OR_RETURN(ConfigSource config, ReadConfigSource(path));
//   PipelineCatalog catalog;
//   RETURN_IF_ERROR(LoadServerConfig(config, blocks, components, device,
//                                    catalog));
//
// The registries say which block and component types exist: the built-in
// ones and plugins' (app/default_pipelines.h puts them together).
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
#include "engine/pipeline_catalog.h"

namespace loopserve {

struct ConfigSource {
  // The configuration, in protobuf text format.
  std::string text;
  // What errors call it: the file's path, or "<embedded>".
  std::string source{};
  // Relative paths in component params resolve against it.
  std::string base_dir{};
};

// Loads `config` into `catalog`: every component, then every pipeline.
// Model components batch their calls across runs under `batching`.
absl::Status LoadServerConfig(const ConfigSource& config,
                              const BlockRegistry& blocks,
                              const ComponentRegistry& components,
                              c10::Device device, PipelineCatalog& catalog,
                              const BatchingOptions& batching = {});

// The configuration file at `path`, its relative paths resolving against
// its directory; NOT_FOUND naming it when it cannot be read.
absl::StatusOr<ConfigSource> ReadConfigSource(const std::string& path);

}  // namespace loopserve
