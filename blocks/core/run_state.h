// RunState: per-run state a component hands its runs (a sampler's schedule
// and multistep memory), kept in the pipeline state as a capsule. For a
// checkpoint it saves itself as plain values; the component that made it
// restores it (RunStateRestorer), found again by its role and choice.
//
//   // A component's per-run state:
//   class RunSchedule final : public RunState {
//     RunStateOwner owner() const override { return {"scheduler", "ddim"}; }
//     absl::StatusOr<c10::IValue> Save() const override { ... }
//   };
//   block_state.Set("schedule", RunStateValue(c10::make_intrusive<...>()));
//
//   // The component, added to Components as a RunStateRestorer too:
//   absl::StatusOr<c10::intrusive_ptr<RunState>> RestoreRunState(
//       const c10::IValue& saved, const RunStateOwner& owner) const override;
//
// Generators need none of this: a checkpoint saves their state itself.
//
// Thread-safety: a RunState belongs to one run; RestoreRunState is const
// and safe from any thread, as components are.
#pragma once

#include <ATen/core/ivalue.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loopserve {

// Where the component that made a RunState is bound in a pipeline:
// Components::Get<RunStateRestorer>(role, choice).
struct RunStateOwner {
  std::string role;
  std::string choice;
};

class RunState : public torch::CustomClassHolder {
 public:
  virtual RunStateOwner owner() const = 0;
  // Its contents as plain values: tensors, ints, doubles, bools, strings,
  // and lists and string-keyed dicts of them.
  virtual absl::StatusOr<c10::IValue> Save() const = 0;
};

// A component whose runs keep a RunState.
class RunStateRestorer {
 public:
  virtual ~RunStateRestorer() = default;
  // The RunState that `saved` (Save() of one this component made, bound as
  // `owner` says) describes. INVALID_ARGUMENT when `saved` is not one.
  virtual absl::StatusOr<c10::intrusive_ptr<RunState>> RestoreRunState(
      const c10::IValue& saved, const RunStateOwner& owner) const = 0;
};

// `state` as a value of the pipeline state.
inline c10::IValue RunStateValue(c10::intrusive_ptr<RunState> state) {
  return c10::IValue::make_capsule(std::move(state));
}

// The RunState `value` holds; nullptr when it holds none.
inline RunState* AsRunState(const c10::IValue& value) {
  return value.isCapsule() ? dynamic_cast<RunState*>(value.toCapsule().get())
                           : nullptr;
}

}  // namespace loopserve
