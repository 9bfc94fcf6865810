// Test blocks whose declarations and behaviour each test sets.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "blocks/core/block.h"
#include "blocks/core/loop.h"
#include "util/status_macros.h"

namespace loopserve::testing {

struct FakeDeclarations {
  std::vector<InputParam> inputs{};
  std::vector<InputParam> intermediate_inputs{};
  std::vector<OutputParam> intermediate_outputs{};
  std::vector<ComponentSpec> expected_components{};
};

// `Base` (Block or LoopStepBlock) declaring what it is given.
template <typename Base>
class Declared : public Base {
 public:
  explicit Declared(FakeDeclarations declarations)
      : declarations_(std::move(declarations)) {}

  std::vector<InputParam> inputs() const override {
    return declarations_.inputs;
  }
  std::vector<InputParam> intermediate_inputs() const override {
    return declarations_.intermediate_inputs;
  }
  std::vector<OutputParam> intermediate_outputs() const override {
    return declarations_.intermediate_outputs;
  }
  std::vector<ComponentSpec> expected_components() const override {
    return declarations_.expected_components;
  }

 private:
  FakeDeclarations declarations_;
};

// A leaf block: Run calls `run` on its block state between GetBlockState
// and SetBlockState.
class FakeBlock : public Declared<Block> {
 public:
  using RunFn = std::function<absl::Status(BlockState&)>;
  static constexpr absl::string_view kTypeName = "FakeBlock";

  explicit FakeBlock(FakeDeclarations declarations, RunFn run = nullptr)
      : Declared(std::move(declarations)), run_(std::move(run)) {}

  absl::string_view type_name() const override { return kTypeName; }

  absl::Status Run(const Components&, PipelineState& state,
                   RunContext&) const override {
    ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
    if (run_) RETURN_IF_ERROR(run_(block_state));
    return SetBlockState(state, block_state);
  }

 private:
  RunFn run_;
};

// A loop block: RunStep calls `step`.
class FakeStep : public Declared<LoopStepBlock> {
 public:
  using StepFn = std::function<absl::Status(BlockState&, const LoopIndex&)>;
  static constexpr absl::string_view kTypeName = "FakeStep";

  explicit FakeStep(FakeDeclarations declarations, StepFn step = nullptr)
      : Declared(std::move(declarations)), step_(std::move(step)) {}

  absl::string_view type_name() const override { return kTypeName; }

  absl::Status RunStep(const Components&, BlockState& state,
                       const LoopIndex& index) const override {
    return step_ ? step_(state, index) : absl::OkStatus();
  }

 private:
  StepFn step_;
};

// A loop wrapper with given loop declarations that runs `iterations` times.
class FakeLoop : public LoopBlocks {
 public:
  static constexpr absl::string_view kTypeName = "FakeLoop";

  explicit FakeLoop(int64_t iterations = 1, FakeDeclarations loop = {})
      : iterations_(iterations), loop_(std::move(loop)) {}

  absl::string_view type_name() const override { return kTypeName; }
  std::vector<InputParam> loop_inputs() const override { return loop_.inputs; }
  std::vector<InputParam> loop_intermediate_inputs() const override {
    return loop_.intermediate_inputs;
  }
  std::vector<OutputParam> loop_intermediate_outputs() const override {
    return loop_.intermediate_outputs;
  }

  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override {
    ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
    for (int64_t i = 0; i < iterations_; ++i) {
      RETURN_IF_ERROR(LoopStep(components, block_state,
                               {.i = i, .total = iterations_}, context));
    }
    return SetBlockState(state, block_state);
  }

 private:
  int64_t iterations_;
  FakeDeclarations loop_;
};

inline InputParam Input(std::string name, bool required = false) {
  return {.name = std::move(name), .required = required};
}

inline OutputParam Output(std::string name) {
  return {.name = std::move(name)};
}

// The names of `params`, in order.
template <typename Param>
std::vector<std::string> Names(const std::vector<Param>& params) {
  std::vector<std::string> names;
  for (const Param& param : params) names.push_back(param.name);
  return names;
}

// The roles of `specs`, in order.
inline std::vector<std::string> Roles(const std::vector<ComponentSpec>& specs) {
  std::vector<std::string> roles;
  for (const ComponentSpec& spec : specs) roles.push_back(spec.role);
  return roles;
}

// Records what an observer sees; stops the loop with `stop_status` at
// iteration `stop_at` when set.
class RecordingObserver : public IterationObserver {
 public:
  struct Seen {
    std::string loop;
    int64_t i;
    int64_t total;
    c10::IValue x;
  };

  absl::Status OnIteration(const LoopIteration& iteration) override {
    const c10::IValue* x = iteration.state.Find("x");
    seen.push_back({iteration.loop.path(), iteration.index.i,
                    iteration.index.total, x ? *x : c10::IValue()});
    if (stop_at >= 0 && iteration.index.i == stop_at) return stop_status;
    return absl::OkStatus();
  }

  std::vector<Seen> seen;
  int64_t stop_at = -1;
  absl::Status stop_status = absl::CancelledError("client went away");
};

}  // namespace loopserve::testing
