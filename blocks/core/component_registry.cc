#include "blocks/core/component_registry.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/sorted_keys.h"

namespace loopserve {

std::string ComponentContext::ResolvePath(absl::string_view path) const {
  std::filesystem::path p{std::string(path)};
  if (p.is_absolute() || base_dir.empty()) return p.string();
  return (std::filesystem::path(base_dir) / p).string();
}

absl::Status ComponentRegistry::NullFactory(absl::string_view type_name) {
  return absl::InvalidArgumentError(
      absl::StrCat("component type '", type_name, "' has a null factory"));
}

absl::Status ComponentRegistry::RegisterErased(std::string type_name,
                                               ErasedFactory factory) {
  if (type_name.empty()) {
    return absl::InvalidArgumentError("component type name is empty");
  }
  if (factories_.contains(type_name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("component type '", type_name, "' is already registered"));
  }
  factories_.emplace(std::move(type_name), std::move(factory));
  return absl::OkStatus();
}

absl::Status ComponentRegistry::Create(absl::string_view type_name,
                                       std::string name,
                                       const BlockParams& params,
                                       const ComponentContext& context,
                                       Components& into) const {
  auto it = factories_.find(type_name);
  if (it == factories_.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown component type '", type_name,
                     "'; registered: ", absl::StrJoin(TypeNames(), ", ")));
  }
  ComponentContext named = context;
  named.name = name;
  return it->second(std::move(name), params, named, into);
}

bool ComponentRegistry::Contains(absl::string_view type_name) const {
  return factories_.contains(type_name);
}

std::vector<std::string> ComponentRegistry::TypeNames() const {
  return SortedKeys(factories_);
}

}  // namespace loopserve
