#include "app/default_pipelines.h"

#include "blocks/builtin_blocks.h"
#include "engine/plugin_loader.h"
#include "util/status_macros.h"

namespace loopserve {

ConfigSource DefaultConfig(const std::string& model_dir) {
  return {.text = std::string(DefaultConfigText()),
          .source = "<embedded default configuration>",
          .base_dir = model_dir};
}

absl::Status RegisterTypes(const std::vector<std::string>& plugins,
                           BlockRegistry& blocks,
                           ComponentRegistry& components) {
  RETURN_IF_ERROR(RegisterBuiltinBlocks(blocks));
  RETURN_IF_ERROR(RegisterBuiltinComponents(components));
  for (const std::string& plugin : plugins) {
    RETURN_IF_ERROR(LoadPlugin(plugin, blocks, components));
  }
  return absl::OkStatus();
}

absl::StatusOr<PipelineCatalog> LoadPipelines(const PipelineSources& sources,
                                              c10::Device device,
                                              const BatchingOptions& batching) {
  BlockRegistry blocks;
  ComponentRegistry components;
  RETURN_IF_ERROR(RegisterTypes(sources.plugins, blocks, components));
  ConfigSource config = DefaultConfig(sources.model_dir);
  if (!sources.config_path.empty()) {
    ASSIGN_OR_RETURN(config, ReadConfigSource(sources.config_path));
  }
  PipelineCatalog catalog;
  RETURN_IF_ERROR(
      LoadServerConfig(config, blocks, components, device, catalog, batching));
  return catalog;
}

absl::StatusOr<PipelineCatalog> LoadDefaultPipelines(
    c10::Device device, const BatchingOptions& batching) {
  return LoadPipelines({}, device, batching);
}

}  // namespace loopserve
