// ComponentRegistry: component type name -> factory, so a configuration file
// can load components by type ("ddim_scheduler", "torchscript_denoiser").
//
//   ComponentRegistry registry;
//   RETURN_IF_ERROR(registry.Register<Scheduler>(
//       "ddim_scheduler", [](const BlockParams& params,
//                            const ComponentContext& context)
//           -> absl::StatusOr<std::shared_ptr<const Scheduler>> { ... }));
//   Components loaded;
//   RETURN_IF_ERROR(registry.Create("ddim_scheduler", "ddim", params,
//                                   context, loaded));
//   // loaded.Get<Scheduler>("ddim")
//
// A factory registers the interfaces its blocks ask for (Scheduler, not
// DdimScheduler): Components::Get finds a component only as one of them.
// A component that is several things registers as each:
//   registry.Register<LatentPreview, ImageDecoder, IterationPreview>(...)
//
// Thread-safety: as BlockRegistry.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/components.h"
#include "blocks/core/registry.h"
#include "blocks/core/run_scope.h"

namespace loopserve {

// Where components are loaded.
struct ComponentContext {
  // The server's --device: components live there.
  c10::Device device = c10::kCPU;
  // Relative paths in params (a model file, a scheduler_config.json) are
  // resolved against this directory: the configuration file's.
  std::string base_dir{};
  // Where a factory leaves what an operator should know but that is not an
  // error (a scheduler_config.json's keys the scheduler does not use); the
  // configuration loader reports them (--check_config prints them). May be
  // null.
  std::vector<std::string>* notes = nullptr;
  // The server's --max_batch_size, --batch_window_ms and --batch_lanes: a
  // model component that can batch its calls across runs does so under
  // them (BatchedDenoiser).
  BatchingOptions batching{};
  // The name the component is created under (Create sets it), for metrics.
  std::string name{};

  // `path`, resolved against base_dir.
  std::string ResolvePath(absl::string_view path) const;
};

class ComponentRegistry {
 public:
  template <typename T>
  using Factory = std::function<absl::StatusOr<std::shared_ptr<const T>>(
      const BlockParams&, const ComponentContext&)>;

  // Registers `factory` under `type_name`; components it makes are added to
  // Components as T, and as each of `Also` (other interfaces T derives
  // from). ALREADY_EXISTS when the name is taken.
  template <typename T, typename... Also>
  absl::Status Register(std::string type_name, Factory<T> factory) {
    if (!factory) return NullFactory(type_name);
    return RegisterErased(
        type_name,
        [factory = std::move(factory), type_name](
            std::string name, const BlockParams& params,
            const ComponentContext& context, Components& into) -> absl::Status {
          ASSIGN_OR_RETURN(std::shared_ptr<const T> component,
                           factory(params, context));
          return into.Add<T, Also...>(std::move(name), std::move(component),
                                      type_name);
        });
  }

  // Creates a component of `type_name` from `params` and adds it to `into`
  // as `name`. NOT_FOUND naming the type (and the registered ones) when
  // unknown; the factory's error otherwise.
  absl::Status Create(absl::string_view type_name, std::string name,
                      const BlockParams& params,
                      const ComponentContext& context, Components& into) const;

  bool Contains(absl::string_view type_name) const;
  // Sorted.
  std::vector<std::string> TypeNames() const;

 private:
  using ErasedFactory = std::function<absl::Status(
      std::string, const BlockParams&, const ComponentContext&, Components&)>;

  static absl::Status NullFactory(absl::string_view type_name);
  absl::Status RegisterErased(std::string type_name, ErasedFactory factory);

  absl::flat_hash_map<std::string, ErasedFactory> factories_;
};

}  // namespace loopserve
