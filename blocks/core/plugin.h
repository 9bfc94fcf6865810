// Plugins: block and component types from a shared library, served with
// `loopserve --plugin=PATH.so` (repeatable) without rebuilding loopserve.
//
//   // clamp_plugin.cc, built as a shared library against loopserve's
//   // headers (find_package(loopserve); loopserve_add_plugin(...)):
//   #include "blocks/core/plugin.h"
//
//   namespace clamp {
//   absl::Status Register(loopserve::PluginRegistries& registries) {
//     RETURN_IF_ERROR(registries.blocks.Register<ClampLatents>());
//     return registries.components.Register<ClampRange>("clamp_range",
//                                                       MakeClampRange);
//   }
//   }  // namespace clamp
//
//   LOOPSERVE_PLUGIN(clamp::Register)
//
// docs/writing-blocks.md walks through a whole plugin
// (blocks/examples/clamp_plugin/).
//
// Note [plugin ABI]
// ~~~~~~~~~~~~~~~~~
// A plugin's blocks are C++ classes that derive from loopserve's, call its
// functions and are called through its vtables, so a plugin must be built
// against exactly the headers of the loopserve that loads it, with the same
// libtorch and the same C++ library ABI. LOOPSERVE_PLUGIN records what the
// plugin was built against (LOOPSERVE_PLUGIN_ABI, a digest of blocks/core's
// headers computed by the build, and libtorch's version); the loader
// compares it with its own before resolving any of the plugin's symbols,
// and refuses a mismatch with a message that says what to rebuild. The
// plugin resolves loopserve's own symbols from the process that loads it
// (the loopserve binary exports them); it links libtorch and abseil as
// loopserve does.
//
// Thread-safety: a plugin's registration runs once, at start-up, on one
// thread, like RegisterBuiltinBlocks.
#pragma once

#include <torch/version.h>

#include "absl/status/status.h"
#include "blocks/core/component_registry.h"
#include "blocks/core/plugin_abi.h"
#include "blocks/core/registry.h"
#include "util/status_macros.h"

namespace loopserve {

// Where a plugin registers its types.
struct PluginRegistries {
  BlockRegistry& blocks;
  ComponentRegistry& components;
};

// What a plugin was built against: Note [plugin ABI].
struct PluginAbi {
  // LOOPSERVE_PLUGIN_ABI of the headers it was compiled with.
  const char* headers;
  // TORCH_VERSION.
  const char* torch_version;
  // _GLIBCXX_USE_CXX11_ABI.
  int cxx11_abi;
};

// The symbols LOOPSERVE_PLUGIN defines.
inline constexpr char kPluginAbiSymbol[] = "loopserve_plugin_abi";
inline constexpr char kPluginRegisterSymbol[] = "loopserve_plugin_register";
using PluginAbiFunction = const PluginAbi* (*)();
using PluginRegisterFunction = absl::Status (*)(PluginRegistries&);

}  // namespace loopserve

// Makes the shared library a loopserve plugin whose types `register_function`
// (absl::Status(loopserve::PluginRegistries&)) registers. Once per plugin,
// at namespace scope.
#define LOOPSERVE_PLUGIN(register_function)                              \
  extern "C" __attribute__((visibility("default")))                      \
  const ::loopserve::PluginAbi*                                          \
  loopserve_plugin_abi() {                                               \
    /* Built here, from this plugin's headers: Note [plugin ABI]. */     \
    static const ::loopserve::PluginAbi abi{                             \
        LOOPSERVE_PLUGIN_ABI, TORCH_VERSION, _GLIBCXX_USE_CXX11_ABI};    \
    return &abi;                                                         \
  }                                                                      \
  extern "C" __attribute__((visibility("default"))) ::absl::Status       \
  loopserve_plugin_register(::loopserve::PluginRegistries& registries) { \
    return register_function(registries);                                \
  }
