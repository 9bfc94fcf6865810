// Reading a scheduler's configuration as diffusers' classes take it: their
// keys, their defaults, and a model folder's scheduler_config.json as users
// have it.
//
// A scheduler component's params are its diffusers class's keys, plus
// `config_file` (a scheduler_config.json, resolved against the
// configuration's directory), whose keys apply first:
//   - `_class_name`, `_diffusers_version` and every other "_" key are
//     metadata, accepted;
//   - a key this class reads is taken;
//   - a key this class has but loopserve implements only at its default
//     (`thresholding`, `trained_betas`, ...) must be at that default;
//   - a key of another diffusers scheduler (a PNDM config's
//     `skip_prk_steps`, `set_alpha_to_one` given to Euler) is unused, and
//     listed in the notes (`--check_config` prints them);
//   - a key no diffusers scheduler knows is an error with a did-you-mean.
// Params given in the configuration itself apply over the file and must be
// keys the class reads.
//
// The schedulers are registered here, from their configuration: schedulers.h
// knows no registry.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/component_registry.h"
#include "blocks/diffusion/schedulers.h"

namespace loopserve {

enum class SchedulerKind {
  kDdim,
  kDdpm,
  kEuler,
  kEulerAncestral,
  kDpmSolverMultistep,
  kUniPcMultistep,
  kLcm,
  kFlowMatchEuler,
};

struct SchedulerType {
  SchedulerKind kind;
  // loopserve's component type: "ddim_scheduler".
  absl::string_view type_name;
  // diffusers' class: "DDIMScheduler".
  absl::string_view diffusers_class;
};

// Every scheduler loopserve serves.
const std::vector<SchedulerType>& SchedulerTypes();

struct ReadConfig {
  SchedulerConfig config;
  // The config file's keys this class does not use, sorted.
  std::vector<std::string> unused_keys;
};

// The configuration of a `kind` scheduler from its component params (see
// above). INVALID_ARGUMENT naming the param or the file's key.
absl::StatusOr<ReadConfig> ReadSchedulerConfig(SchedulerKind kind,
                                               const BlockParams& params,
                                               const ComponentContext& context);

// The kind a scheduler_config.json's `_class_name` names: what
// `diffusers_scheduler` serves. INVALID_ARGUMENT listing the classes served
// when it names another, or when the file has no `_class_name`.
absl::StatusOr<SchedulerKind> SchedulerKindOfFile(
    const BlockParams& params, const ComponentContext& context);

// Registers every scheduler of SchedulerTypes() under its type name, and
// `diffusers_scheduler` (the kind its config_file names), each as Scheduler
// and as RunStateRestorer (checkpoints restore its RunSchedules).
absl::Status RegisterSchedulers(ComponentRegistry& registry);

}  // namespace loopserve
