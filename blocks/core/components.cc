#include "blocks/core/components.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/sorted_keys.h"

namespace loopserve {

absl::Status Components::AddErased(std::string name,
                                   std::shared_ptr<const void> object,
                                   std::vector<Interface> interfaces,
                                   std::string type_name) {
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
  Entry entry{.object = std::move(object),
              .interfaces = std::move(interfaces),
              .component = name,
              .type_name = std::move(type_name)};
  entries_.emplace(std::move(name), std::move(entry));
  return absl::OkStatus();
}

bool Components::Entry::Is(const std::type_info& type) const {
  for (const Interface& interface : interfaces) {
    if (*interface.type == type) return true;
  }
  return false;
}

absl::StatusOr<const void*> Components::Find(absl::string_view name,
                                             const std::type_info& type,
                                             absl::string_view choice) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat("component '", name, "' is not loaded"));
  }
  const Entry* entry = &it->second;
  if (!choice.empty() && choice != entry->component) {
    entry = nullptr;
    for (const Entry& candidate : it->second.choices) {
      if (candidate.component == choice) entry = &candidate;
    }
    if (entry == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("role '", name, "' has no component '", choice,
                       "'; it has: ", absl::StrJoin(Choices(name), ", ")));
    }
  }
  for (const Interface& interface : entry->interfaces) {
    if (*interface.type == type) return interface.object;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("component '", name, "' is ", DescribeEntry(name, *entry),
                   ", not a ", ComponentInterface::Of(type).Name()));
}

absl::Status Components::AddShared(std::string name, const Components& from,
                                   absl::string_view from_name) {
  auto it = from.entries_.find(from_name);
  if (it == from.entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat("component '", from_name, "' is not loaded"));
  }
  RETURN_IF_ERROR(AddErased(name, it->second.object, it->second.interfaces,
                            it->second.type_name));
  entries_.at(name).component = it->second.component;
  return absl::OkStatus();
}

absl::Status Components::AddChoices(
    std::string name, const Components& from,
    const std::vector<std::string>& from_names) {
  if (from_names.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("role '", name, "' is bound to no component"));
  }
  std::vector<Entry> choices;
  for (const std::string& from_name : from_names) {
    auto it = from.entries_.find(from_name);
    if (it == from.entries_.end()) {
      return absl::NotFoundError(
          absl::StrCat("component '", from_name, "' is not loaded"));
    }
    for (const Entry& chosen : choices) {
      if (chosen.component == it->second.component) {
        return absl::InvalidArgumentError(absl::StrCat(
            "role '", name, "' names component '", from_name, "' twice"));
      }
    }
    choices.push_back(it->second);
    choices.back().choices.clear();
  }
  RETURN_IF_ERROR(AddShared(name, from, from_names.front()));
  if (choices.size() > 1) entries_.at(name).choices = std::move(choices);
  return absl::OkStatus();
}

std::vector<std::string> Components::Choices(absl::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return {};
  if (it->second.choices.empty()) return {it->second.component};
  std::vector<std::string> names;
  for (const Entry& choice : it->second.choices) {
    names.push_back(choice.component);
  }
  return names;
}

bool Components::Contains(absl::string_view name) const {
  return entries_.contains(name);
}

bool Components::Provides(absl::string_view name,
                          const ComponentInterface& interface) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return false;
  if (interface.is_any()) return true;
  if (!it->second.Is(*interface.type())) return false;
  for (const Entry& choice : it->second.choices) {
    if (!choice.Is(*interface.type())) return false;
  }
  return true;
}

std::string Components::Describe(absl::string_view name,
                                 const ComponentInterface& interface) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return "";
  if (!interface.is_any()) {
    for (const Entry& choice : it->second.choices) {
      if (!choice.Is(*interface.type())) return DescribeEntry(name, choice);
    }
  }
  return DescribeEntry(name, it->second);
}

std::string Components::DescribeEntry(absl::string_view name,
                                      const Entry& entry) {
  std::vector<std::string> kinds;
  for (const Interface& interface : entry.interfaces) {
    kinds.push_back(ComponentInterface::Of(*interface.type).Name());
  }
  std::vector<std::string> origin;
  if (entry.component != name) {
    origin.push_back(absl::StrCat("component '", entry.component, "'"));
  }
  if (!entry.type_name.empty()) origin.push_back(entry.type_name);
  return absl::StrCat(
      "a ", absl::StrJoin(kinds, " and "),
      origin.empty() ? ""
                     : absl::StrCat(" (", absl::StrJoin(origin, ", "), ")"));
}

std::vector<std::string> Components::Names() const {
  return SortedKeys(entries_);
}

absl::Status CheckComponent(const ComponentSpec& spec,
                            const Components& components,
                            absl::string_view owner) {
  if (!components.Contains(spec.role)) {
    return absl::NotFoundError(absl::StrCat(
        owner, " expects component '", spec.role, "'",
        spec.type.empty() ? "" : absl::StrCat(" (", spec.type, ")"),
        ", which is not loaded"));
  }
  if (!components.Provides(spec.role, spec.interface)) {
    return absl::FailedPreconditionError(absl::StrCat(
        owner, " expects component '", spec.role, "' to be a ",
        spec.interface.Name(),
        spec.type.empty() ? "" : absl::StrCat(" (", spec.type, ")"),
        ", but it is ", components.Describe(spec.role, spec.interface)));
  }
  return absl::OkStatus();
}

absl::Status CheckComponents(const std::vector<ComponentSpec>& specs,
                             const Components& components,
                             absl::string_view owner) {
  for (const ComponentSpec& spec : specs) {
    RETURN_IF_ERROR(CheckComponent(spec, components, owner));
  }
  return absl::OkStatus();
}

}  // namespace loopserve
