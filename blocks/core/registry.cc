#include "blocks/core/registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/sorted_keys.h"

namespace loopserve {

absl::Status BlockRegistry::Register(std::string type_name,
                                     BlockFactory factory) {
  if (type_name.empty()) {
    return absl::InvalidArgumentError("block type name is empty");
  }
  if (!factory) {
    return absl::InvalidArgumentError(
        absl::StrCat("block type '", type_name, "' has a null factory"));
  }
  if (factories_.contains(type_name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("block type '", type_name, "' is already registered"));
  }
  factories_.emplace(std::move(type_name), std::move(factory));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Block>> BlockRegistry::Create(
    absl::string_view type_name, const BlockParams& params) const {
  auto it = factories_.find(type_name);
  if (it == factories_.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown block type '", type_name,
                     "'; registered: ", absl::StrJoin(TypeNames(), ", ")));
  }
  return it->second(params);
}

bool BlockRegistry::Contains(absl::string_view type_name) const {
  return factories_.contains(type_name);
}

std::vector<std::string> BlockRegistry::TypeNames() const {
  return SortedKeys(factories_);
}

absl::Status RefuseParams(absl::string_view type_name,
                          const BlockParams& params) {
  if (params.empty()) return absl::OkStatus();
  std::vector<std::string> names;
  for (const auto& [name, value] : params) names.push_back(name);
  std::sort(names.begin(), names.end());
  return absl::InvalidArgumentError(absl::StrCat("block type '", type_name,
                                                 "' takes no params; got '",
                                                 names.front(), "'"));
}

}  // namespace loopserve
