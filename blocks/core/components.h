// Components: the named, long-lived objects a pipeline uses (schedulers,
// denoisers, decoders), loaded once at start-up and resident on the device.
//
//   Components components;
//   RETURN_IF_ERROR(components.Add<Scheduler>(
//       "scheduler", std::make_shared<DdimScheduler>(config)));
//   ...
//   // in a block:
//   ASSIGN_OR_RETURN(const Scheduler* scheduler,
//                    components.Get<Scheduler>("scheduler"));
//
// A component is added as one or more interfaces (Add<T, Also...>), and Get
// finds it only as one of those: a latent preview is both an ImageDecoder
// and an IterationPreview. ComponentSpec::interface lets a block declare the
// interface it will Get, so that a configuration binding a role to the wrong
// kind of component fails when it loads (CheckComponents), not when it runs.
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
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/params.h"
#include "util/status_macros.h"

namespace loopserve {

class Components {
 public:
  // Adds `component` under `name`, to be found as a T and as each of
  // `Also` (interfaces T derives from). `type_name` (the registered type,
  // "ddim_scheduler") is for messages. ALREADY_EXISTS when the name is
  // taken, INVALID_ARGUMENT when the name is empty or the component null.
  template <typename T, typename... Also>
  absl::Status Add(std::string name, std::shared_ptr<const T> component,
                   std::string type_name = {}) {
    static_assert((std::is_base_of_v<Also, T> && ...),
                  "a component is added as T or as interfaces T derives "
                  "from");
    const T* object = component.get();
    return AddErased(std::move(name), std::move(component),
                     {{&typeid(T), object},
                      {&typeid(Also), static_cast<const Also*>(object)}...},
                     std::move(type_name));
  }

  // The component `name` as a T. NOT_FOUND when absent, FAILED_PRECONDITION
  // when it was not added as a T. The pointer lives as long as this
  // Components.
  template <typename T>
  absl::StatusOr<const T*> Get(absl::string_view name) const {
    ASSIGN_OR_RETURN(const void* component, Find(name, typeid(T), ""));
    return static_cast<const T*>(component);
  }
  // The component `choice` of those bound to role `name` (AddChoices), as
  // a T; an empty `choice` is the default. NOT_FOUND naming the choices
  // when `choice` is not one of them.
  template <typename T>
  absl::StatusOr<const T*> Get(absl::string_view name,
                               absl::string_view choice) const {
    ASSIGN_OR_RETURN(const void* component, Find(name, typeid(T), choice));
    return static_cast<const T*>(component);
  }

  // Adds `from`'s component `from_name` under `name`, sharing it: how a
  // pipeline binds a role ("scheduler") to a loaded component. NOT_FOUND when
  // `from` lacks it; otherwise as Add.
  absl::Status AddShared(std::string name, const Components& from,
                         absl::string_view from_name);
  // Binds role `name` to several of `from`'s components, `from_names[0]`
  // the default: Get(name) finds the default, Get(name, choice) any of
  // them by its component name. How a pipeline offers a run a choice (of
  // scheduler). INVALID_ARGUMENT when `from_names` is empty or repeats a
  // name; otherwise as AddShared.
  absl::Status AddChoices(std::string name, const Components& from,
                          const std::vector<std::string>& from_names);
  // The component names bound to role `name`, the default first: one for
  // a plain binding, none when `name` is absent.
  std::vector<std::string> Choices(absl::string_view name) const;

  bool Contains(absl::string_view name) const;
  // Whether `name` is present and can be had as `interface` (any interface
  // when unspecified), every choice of it (AddChoices) too.
  bool Provides(absl::string_view name,
                const ComponentInterface& interface) const;
  // "a Denoiser (component 'gmm', gaussian_mixture_denoiser)": what `name`
  // is, and, when bound by role, the component it is bound to; for
  // messages. With choices, the first that is not an `interface`. Empty
  // when absent.
  std::string Describe(absl::string_view name,
                       const ComponentInterface& interface = {}) const;
  // Sorted.
  std::vector<std::string> Names() const;

 private:
  struct Interface {
    const std::type_info* type;
    const void* object;
  };
  struct Entry {
    std::shared_ptr<const void> object;
    // The first is the type it was added as.
    std::vector<Interface> interfaces;
    // For messages: the pool name it was shared from, and its type name.
    std::string component;
    std::string type_name;
    // A role bound to several components (AddChoices): all of them, this
    // one (the default) first.
    std::vector<Entry> choices{};

    bool Is(const std::type_info& type) const;
  };

  absl::Status AddErased(std::string name, std::shared_ptr<const void> object,
                         std::vector<Interface> interfaces,
                         std::string type_name);
  absl::StatusOr<const void*> Find(absl::string_view name,
                                   const std::type_info& type,
                                   absl::string_view choice) const;
  static std::string DescribeEntry(absl::string_view name, const Entry& entry);

  absl::flat_hash_map<std::string, Entry> entries_;
};

// Checks that `components` holds `spec`'s component, and, when the spec
// names an interface, that it is one. NOT_FOUND naming the missing one and
// who expects it (`owner`); FAILED_PRECONDITION naming both kinds when it is
// of another.
absl::Status CheckComponent(const ComponentSpec& spec,
                            const Components& components,
                            absl::string_view owner);
// CheckComponent for each of `specs`; the first error.
absl::Status CheckComponents(const std::vector<ComponentSpec>& specs,
                             const Components& components,
                             absl::string_view owner);

}  // namespace loopserve
