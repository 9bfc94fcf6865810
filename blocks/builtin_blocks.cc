#include "blocks/builtin_blocks.h"

#include "blocks/core/composite.h"
#include "blocks/core/status_macros.h"
#include "blocks/diffusion/denoisers.h"
#include "blocks/diffusion/diffusion_blocks.h"
#include "blocks/diffusion/encode_blocks.h"
#include "blocks/diffusion/encoders.h"
#include "blocks/diffusion/schedulers.h"
#include "blocks/examples/seed_blocks.h"

namespace loopserve {

absl::Status RegisterBuiltinBlocks(BlockRegistry& registry) {
  RETURN_IF_ERROR(registry.Register<SequentialBlocks>());
  RETURN_IF_ERROR(RegisterSeedBlocks(registry));
  RETURN_IF_ERROR(RegisterDiffusionBlocks(registry));
  return RegisterEncodeBlocks(registry);
}

absl::Status RegisterBuiltinComponents(ComponentRegistry& registry) {
  RETURN_IF_ERROR(RegisterSchedulers(registry));
  RETURN_IF_ERROR(RegisterModels(registry));
  return RegisterEncoders(registry);
}

}  // namespace loopserve
