// libFuzzer target: a server configuration (protobuf text format) through
// the loader, against the built-in blocks and components: parsing, every
// component's params, every pipeline's assembly and binding. Model files
// resolve under a folder that does not exist, so nothing is read from disk.
//
//   build-sanitize/tests/fuzz/config_fuzz -max_total_time=60 \
//       NEW_CORPUS tests/fuzz/corpus/config
#include <cstdint>
#include <cstdlib>
#include <string>

#include "blocks/builtin_blocks.h"
#include "blocks/core/component_registry.h"
#include "blocks/core/registry.h"
#include "engine/pipeline_catalog.h"
#include "engine/pipeline_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopserve;
  static const BlockRegistry* blocks = [] {
    auto* registry = new BlockRegistry();
    if (!RegisterBuiltinBlocks(*registry).ok()) std::abort();
    return registry;
  }();
  static const ComponentRegistry* components = [] {
    auto* registry = new ComponentRegistry();
    if (!RegisterBuiltinComponents(*registry).ok()) std::abort();
    return registry;
  }();
  PipelineCatalog catalog;
  (void)LoadServerConfig(
      {.text = std::string(reinterpret_cast<const char*>(data), size),
       .source = "<fuzz>",
       .base_dir = "/nonexistent-loopserve-fuzz"},
      *blocks, *components, c10::kCPU, catalog);
  return 0;
}
