#include "blocks/core/components.h"

#include <c10/util/Type.h>

#include "absl/strings/str_cat.h"
#include "blocks/core/sorted_keys.h"

namespace loopserve {

absl::Status Components::AddErased(std::string name,
                                   std::shared_ptr<const void> object,
                                   std::type_index type) {
  if (name.empty()) {
    return absl::InvalidArgumentError("component name is empty");
  }
  if (object == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("component '", name, "' is null"));
  }
  if (entries_.contains(name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("component '", name, "' is already loaded"));
  }
  entries_.emplace(std::move(name), Entry{std::move(object), type});
  return absl::OkStatus();
}

absl::StatusOr<const void*> Components::Find(absl::string_view name,
                                             const std::type_info& type) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat("component '", name, "' is not loaded"));
  }
  if (it->second.type != std::type_index(type)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "component '", name, "' is a ", c10::demangle(it->second.type.name()),
        ", not a ", c10::demangle(type.name())));
  }
  return it->second.object.get();
}

absl::Status Components::AddShared(std::string name, const Components& from,
                                   absl::string_view from_name) {
  auto it = from.entries_.find(from_name);
  if (it == from.entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat("component '", from_name, "' is not loaded"));
  }
  return AddErased(std::move(name), it->second.object, it->second.type);
}

bool Components::Contains(absl::string_view name) const {
  return entries_.contains(name);
}

std::vector<std::string> Components::Names() const {
  return SortedKeys(entries_);
}

absl::Status CheckComponents(const std::vector<ComponentSpec>& specs,
                             const Components& components,
                             absl::string_view owner) {
  for (const ComponentSpec& spec : specs) {
    if (!components.Contains(spec.name)) {
      return absl::NotFoundError(absl::StrCat(
          owner, " expects component '", spec.name, "'",
          spec.type.empty() ? "" : absl::StrCat(" (", spec.type, ")"),
          ", which is not loaded"));
    }
  }
  return absl::OkStatus();
}

}  // namespace loopserve
