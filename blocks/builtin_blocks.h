// RegisterBuiltinBlocks: registers every block type the library ships, under
// the names configuration files and FromBlocks entries use.
//
//   BlockRegistry registry;
//   RETURN_IF_ERROR(RegisterBuiltinBlocks(registry));
#pragma once

#include "absl/status/status.h"
#include "blocks/core/registry.h"

namespace loopserve {

// Registers "Sequential", and the seed blocks "LoopWrapper" and "LoopBlock".
// ALREADY_EXISTS when any of them is registered already.
absl::Status RegisterBuiltinBlocks(BlockRegistry& registry);

}  // namespace loopserve
