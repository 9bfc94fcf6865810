#include "blocks/builtin_blocks.h"

#include "blocks/core/composite.h"
#include "blocks/diffusion/diffusion_blocks.h"
#include "blocks/diffusion/encode_blocks.h"
#include "blocks/diffusion/model_registration.h"
#include "blocks/diffusion/scheduler_config.h"
#include "blocks/examples/seed_blocks.h"
#include "util/status_macros.h"

namespace loopserve {

absl::Status RegisterBuiltinBlocks(BlockRegistry& registry) {
  RETURN_IF_ERROR(registry.Register<SequentialBlocks>());
  RETURN_IF_ERROR(RegisterSeedBlocks(registry));
  RETURN_IF_ERROR(RegisterDiffusionBlocks(registry));
  return RegisterEncodeBlocks(registry);
}

absl::Status RegisterBuiltinComponents(ComponentRegistry& registry) {
  RETURN_IF_ERROR(RegisterSchedulers(registry));
  return RegisterModels(registry);
}

}  // namespace loopserve
