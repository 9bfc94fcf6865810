#include "blocks/builtin_blocks.h"

#include "blocks/core/composite.h"
#include "blocks/core/status_macros.h"
#include "blocks/examples/seed_blocks.h"

namespace loopserve {

absl::Status RegisterBuiltinBlocks(BlockRegistry& registry) {
  RETURN_IF_ERROR(registry.Register<SequentialBlocks>());
  return RegisterSeedBlocks(registry);
}

}  // namespace loopserve
