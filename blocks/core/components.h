// Components: the named, long-lived objects a pipeline uses (schedulers,
// denoisers, decoders), loaded once at start-up and resident on the device.
//
//   Components components;
//   RETURN_IF_ERROR(components.Add("scheduler",
//                                  std::make_shared<DdimScheduler>(config)));
//   ...
//   // in a block:
//   ASSIGN_OR_RETURN(const DdimScheduler* scheduler,
//                    components.Get<DdimScheduler>("scheduler"));
//
// Ownership: Components shares ownership of each component; a component lives
// as long as any Components holding it.
//
// Thread-safety: Add is for start-up only and is not synchronised. Once
// serving, a Components is immutable: blocks receive it by const reference,
// and every const method may be called from any number of threads. Components
// themselves must therefore be safe to use concurrently through const
// methods; per-run mutable state (timesteps, step index, generators) belongs
// in the PipelineState, never in a component.
#pragma once

#include <memory>
#include <string>
#include <typeindex>
#include <typeinfo>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/params.h"
#include "blocks/core/status_macros.h"

namespace loopserve {

class Components {
 public:
  // Adds `component` under `name`. ALREADY_EXISTS when the name is taken,
  // INVALID_ARGUMENT when the name is empty or the component null.
  template <typename T>
  absl::Status Add(std::string name, std::shared_ptr<const T> component) {
    return AddErased(std::move(name), std::move(component),
                     std::type_index(typeid(T)));
  }

  // The component `name` as a T. NOT_FOUND when absent, FAILED_PRECONDITION
  // when it was added as another type. The pointer lives as long as this
  // Components.
  template <typename T>
  absl::StatusOr<const T*> Get(absl::string_view name) const {
    ASSIGN_OR_RETURN(const void* component, Find(name, typeid(T)));
    return static_cast<const T*>(component);
  }

  // Adds `from`'s component `from_name` under `name`, sharing it: how a
  // pipeline binds a role ("scheduler") to a loaded component. NOT_FOUND when
  // `from` lacks it; otherwise as Add.
  absl::Status AddShared(std::string name, const Components& from,
                         absl::string_view from_name);

  bool Contains(absl::string_view name) const;
  // Sorted.
  std::vector<std::string> Names() const;

 private:
  struct Entry {
    std::shared_ptr<const void> object;
    std::type_index type;
  };

  absl::Status AddErased(std::string name, std::shared_ptr<const void> object,
                         std::type_index type);
  absl::StatusOr<const void*> Find(absl::string_view name,
                                   const std::type_info& type) const;

  absl::flat_hash_map<std::string, Entry> entries_;
};

// Checks that `components` holds every component that `specs` names.
// NOT_FOUND naming the first missing one and who expects it (`owner`).
absl::Status CheckComponents(const std::vector<ComponentSpec>& specs,
                             const Components& components,
                             absl::string_view owner);

}  // namespace loopserve
