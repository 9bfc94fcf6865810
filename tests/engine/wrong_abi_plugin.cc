// What a plugin built against another loopserve's headers looks like to the
// loader: LOOPSERVE_PLUGIN's symbols, with another plugin ABI (Note [plugin
// ABI] in blocks/core/plugin.h).
#include "blocks/core/plugin.h"

extern "C" __attribute__((visibility("default"))) const loopserve::PluginAbi*
loopserve_plugin_abi() {
  static const loopserve::PluginAbi abi{"0.0.1-0123456789abcdef", TORCH_VERSION,
                                        _GLIBCXX_USE_CXX11_ABI};
  return &abi;
}

extern "C" __attribute__((visibility("default"))) absl::Status
loopserve_plugin_register(loopserve::PluginRegistries&) {
  return absl::InternalError("a plugin with another ABI was registered");
}
