#include "engine/plugin_loader.h"

#include <dlfcn.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "blocks/core/plugin.h"

namespace loopserve {
namespace {

std::string DlError() {
  const char* error = dlerror();
  return error != nullptr ? error : "unknown error";
}

}  // namespace

absl::Status LoadPlugin(const std::string& path, BlockRegistry& blocks,
                        ComponentRegistry& components) {
  const std::string name = absl::StrCat("plugin '", path, "'");
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat(name, ": no such file"));
  }
  // Lazily first: the ABI is checked before the plugin's calls into
  // loopserve are resolved, so that a plugin built against other headers
  // is told so rather than "undefined symbol" (Note [plugin ABI]). The path
  // is given with a slash so that dlopen does not search the library path.
  const std::string file =
      path.find('/') == std::string::npos ? "./" + path : path;
  void* handle = dlopen(file.c_str(), RTLD_LAZY | RTLD_LOCAL | RTLD_NODELETE);
  if (handle == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": cannot load it: ", DlError()));
  }
  auto abi_function =
      reinterpret_cast<PluginAbiFunction>(dlsym(handle, kPluginAbiSymbol));
  auto register_function = reinterpret_cast<PluginRegisterFunction>(
      dlsym(handle, kPluginRegisterSymbol));
  if (abi_function == nullptr || register_function == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " is not a loopserve plugin: it does not define ",
        kPluginAbiSymbol, " and ", kPluginRegisterSymbol,
        " (LOOPSERVE_PLUGIN in blocks/core/plugin.h defines them)"));
  }
  const PluginAbi& abi = *abi_function();
  if (std::strcmp(abi.headers, LOOPSERVE_PLUGIN_ABI) != 0 ||
      std::strcmp(abi.torch_version, TORCH_VERSION) != 0 ||
      abi.cxx11_abi != _GLIBCXX_USE_CXX11_ABI) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, " was built against other headers: loopserve plugin ABI ",
        abi.headers, ", libtorch ", abi.torch_version, ", C++11 ABI ",
        abi.cxx11_abi, "; this loopserve has ", LOOPSERVE_PLUGIN_ABI,
        ", libtorch ", TORCH_VERSION, ", C++11 ABI ", _GLIBCXX_USE_CXX11_ABI,
        ". Rebuild the plugin against this loopserve's headers "
        "(find_package(loopserve) from its install prefix)"));
  }
  // Now every symbol, so that a missing one fails here, not mid-run.
  if (dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(name, ": ", DlError()));
  }
  PluginRegistries registries{.blocks = blocks, .components = components};
  if (absl::Status status = register_function(registries); !status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat(name, ": ", status.message()));
  }
  return absl::OkStatus();
}

}  // namespace loopserve
