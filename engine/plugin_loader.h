// LoadPlugin: adds a plugin's block and component types to the registries
// (`loopserve --plugin=PATH.so`; blocks/core/plugin.h is the plugin's side).
//
//   RETURN_IF_ERROR(LoadPlugin("/opt/plugins/libclamp.so", blocks,
//                              components));
//
// Errors name the plugin: NOT_FOUND when the file is not there;
// INVALID_ARGUMENT when it is not a shared library or not a loopserve
// plugin; FAILED_PRECONDITION when it was built against other headers
// (Note [plugin ABI]) or needs a symbol this loopserve lacks; the plugin's
// own error (ALREADY_EXISTS for a type registered twice ...) otherwise.
//
// A loaded plugin stays loaded for the life of the process: blocks and
// components made from its types run its code. Loading one again
// (another registry) reuses it.
//
// Thread-safety: start-up only, one thread.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "blocks/core/component_registry.h"
#include "blocks/core/registry.h"

namespace loopserve {

absl::Status LoadPlugin(const std::string& path, BlockRegistry& blocks,
                        ComponentRegistry& components);

}  // namespace loopserve
