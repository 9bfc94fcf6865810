// The values a pipeline run works on.
//
// PipelineState is the whole run's state: the user's inputs (never changed by
// blocks) and the intermediates that blocks produce. BlockState is one block's
// view of it, a small name -> value bag that a block reads and writes; a loop
// wrapper's BlockState is shared by all its loop blocks and carries values
// from one iteration to the next.
//
//   PipelineState state;
//   state.SetInput("num_steps", int64_t{5});
//   state.SetInput("x", int64_t{0});
//   RETURN_IF_ERROR(RunBlock(*pipeline, components, state, context));
//   int64_t x = state.GetIntermediate("x")->toInt();  // 5
//
// Values are c10::IValue: copying one copies a reference for tensors, strings
// and lists, a word for scalars.
//
// Thread-safety: neither class is synchronised. A run owns its states and
// touches them from one thread at a time.
#pragma once

#include <ATen/core/ivalue.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/params.h"

namespace loopserve {

struct LoopResume;

class PipelineState {
 public:
  using ValueMap = absl::flat_hash_map<std::string, c10::IValue>;

  // Sets (or replaces) a user input.
  void SetInput(std::string name, c10::IValue value);
  // Sets (or replaces) an intermediate value.
  void SetIntermediate(std::string name, c10::IValue value);
  // Removes an intermediate value, if there is one.
  void EraseIntermediate(absl::string_view name);

  // The value, or nullptr when there is none. The pointer stays valid until
  // the next Set* of the same map.
  const c10::IValue* GetInput(absl::string_view name) const;
  const c10::IValue* GetIntermediate(absl::string_view name) const;

  const ValueMap& inputs() const { return inputs_; }
  const ValueMap& intermediates() const { return intermediates_; }

  // A resumed run (Note [resuming a loop] in loop.h): where its loop
  // continues. Set before the run starts; the loop takes it.
  void SetResume(LoopResume resume);
  // The resume not yet taken; nullptr when none.
  const LoopResume* resume() const { return resume_.get(); }
  LoopResume* mutable_resume() { return resume_.get(); }
  // The resume of the loop at `loop_path`, taken out; nullptr when there is
  // none for it.
  std::shared_ptr<LoopResume> TakeResume(absl::string_view loop_path);

 private:
  ValueMap inputs_;
  ValueMap intermediates_;
  std::shared_ptr<LoopResume> resume_;
};

// Maps a C++ type to the ValueKind that holds it, for BlockState::Get<T>.
template <typename T>
struct ValueKindOf;
template <>
struct ValueKindOf<int64_t> {
  static constexpr ValueKind kKind = ValueKind::kInt;
};
template <>
struct ValueKindOf<double> {
  static constexpr ValueKind kKind = ValueKind::kDouble;
};
template <>
struct ValueKindOf<bool> {
  static constexpr ValueKind kKind = ValueKind::kBool;
};
template <>
struct ValueKindOf<std::string> {
  static constexpr ValueKind kKind = ValueKind::kString;
};
template <>
struct ValueKindOf<at::Tensor> {
  static constexpr ValueKind kKind = ValueKind::kTensor;
};

// A block's working set of named values.
//
// Lookups scan a small vector: a block state holds a handful of values, and
// for those a scan beats hashing. Note [loop step cost] in loop.h says why
// that matters.
class BlockState {
 public:
  BlockState() = default;

  // Sets `name` to `value`, adding it when absent.
  void Set(absl::string_view name, c10::IValue value);

  // The value of `name`, or nullptr when absent. A declared input that had no
  // value and no default is present and None. The pointer stays valid until
  // a value is added.
  c10::IValue* Find(absl::string_view name);
  const c10::IValue* Find(absl::string_view name) const;
  bool Contains(absl::string_view name) const { return Find(name) != nullptr; }

  // The value of `name` as a T (int64_t, double, bool, std::string or
  // at::Tensor). NOT_FOUND when absent; INVALID_ARGUMENT naming the value and
  // both kinds when it holds another kind. An int reads as a double.
  template <typename T>
  absl::StatusOr<T> Get(absl::string_view name) const;
  // The tensor `name` holds; an undefined tensor when it is absent or holds
  // no tensor (an optional input left out is None).
  at::Tensor OptionalTensor(absl::string_view name) const {
    const c10::IValue* value = Find(name);
    return value != nullptr && value->isTensor() ? value->toTensor()
                                                 : at::Tensor();
  }

  size_t size() const { return entries_.size(); }
  const std::vector<std::pair<std::string, c10::IValue>>& entries() const {
    return entries_;
  }

  // Used by GetBlockState, which knows how many values it will add.
  void Reserve(size_t n) { entries_.reserve(n); }

  // A loop's state: the first iteration its loop blocks run. 0, unless the
  // run resumed from a checkpoint (Note [resuming a loop] in loop.h).
  int64_t first_iteration() const { return first_iteration_; }
  void set_first_iteration(int64_t i) { first_iteration_ = i; }

 private:
  absl::Status KindError(absl::string_view name, const c10::IValue* value,
                         ValueKind wanted) const;

  std::vector<std::pair<std::string, c10::IValue>> entries_;
  int64_t first_iteration_ = 0;
};

// Where a resumed run continues: the loop, its next iteration, and the
// values it carried from one iteration to the next when the checkpoint was
// made. The blocks before the loop do not run again unless a value they read
// changed: an input a fork changed, or a value such a block made anew
// (RunAgainIfChanged, blocks/core/resume.h).
struct LoopResume {
  // The loop wrapper's path.
  std::string loop;
  int64_t next_iteration = 0;
  // The loop's intermediate outputs, as they were after iteration
  // next_iteration - 1.
  BlockState carried;
  // What the loop carries on from the checkpoint, which no block before it
  // may make anew: the names in `carried`, and the intermediates holding
  // objects it changes in place (a generator, a RunState).
  absl::flat_hash_set<std::string> carried_names;
  // The values that differ from the checkpoint's: the inputs a fork
  // changed, then what the blocks run again made differently.
  absl::flat_hash_set<std::string> changed;
};

// Implementation details below.

inline const c10::IValue* BlockState::Find(absl::string_view name) const {
  for (const auto& [key, value] : entries_) {
    if (key == name) return &value;
  }
  return nullptr;
}

inline c10::IValue* BlockState::Find(absl::string_view name) {
  for (auto& [key, value] : entries_) {
    if (key == name) return &value;
  }
  return nullptr;
}

template <typename T>
absl::StatusOr<T> BlockState::Get(absl::string_view name) const {
  constexpr ValueKind kWanted = ValueKindOf<T>::kKind;
  const c10::IValue* value = Find(name);
  if (value != nullptr) {
    if constexpr (kWanted == ValueKind::kInt) {
      if (value->isInt()) return value->toInt();
    } else if constexpr (kWanted == ValueKind::kDouble) {
      if (value->isDouble()) return value->toDouble();
      if (value->isInt()) return static_cast<double>(value->toInt());
    } else if constexpr (kWanted == ValueKind::kBool) {
      if (value->isBool()) return value->toBool();
    } else if constexpr (kWanted == ValueKind::kString) {
      if (value->isString()) return value->toStringRef();
    } else if constexpr (kWanted == ValueKind::kTensor) {
      if (value->isTensor()) return value->toTensor();
    }
  }
  return KindError(name, value, kWanted);
}

}  // namespace loopserve
