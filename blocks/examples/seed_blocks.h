// The seed example of diffusers' LoopSequentialPipelineBlocks guide
// (shared/seed/), in C++: a loop wrapper that loops num_steps times and a loop
// block that increments x.
//
//   BlockRegistry registry;
//   RETURN_IF_ERROR(RegisterBuiltinBlocks(registry));
//   ASSIGN_OR_RETURN(std::unique_ptr<Block> loop, MakeSeedLoop(registry));
//   PipelineState state;
//   state.SetInput("num_steps", int64_t{5});
//   state.SetInput("x", int64_t{0});
//   RunContext context;
//   RETURN_IF_ERROR(RunBlock(*loop, Components(), state, context));
//   // state.GetIntermediate("x") is 5; with MakeSeedLoop2, 10.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/loop.h"
#include "blocks/core/registry.h"

namespace loopserve {

// The guide's LoopWrapper: loops num_steps (int, required, >= 0) times.
class LoopWrapper : public LoopBlocks {
 public:
  static constexpr absl::string_view kTypeName = "LoopWrapper";
  absl::string_view type_name() const override { return kTypeName; }
  absl::string_view model_name() const override { return "test"; }
  std::string description() const override { return "I'm a loop!!"; }

  std::vector<InputParam> loop_inputs() const override;

  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override;
};

// The guide's LoopBlock: x += 1, for an int, double or tensor x (required).
// A tensor x is replaced, not changed in place: Note [out-of-place x].
class LoopBlock : public LoopStepBlock {
 public:
  static constexpr absl::string_view kTypeName = "LoopBlock";
  absl::string_view type_name() const override { return kTypeName; }
  absl::string_view model_name() const override { return "test"; }
  std::string description() const override {
    return "I'm a block used inside the `LoopWrapper` class";
  }

  std::vector<InputParam> inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;

  absl::Status RunStep(const Components& components, BlockState& state,
                       const LoopIndex& index) const override;
};

// Registers LoopWrapper and LoopBlock.
absl::Status RegisterSeedBlocks(BlockRegistry& registry);

// The pipeline names of the two seed assemblies.
inline constexpr absl::string_view kSeedLoopName = "seed-loop";
inline constexpr absl::string_view kSeedLoop2Name = "seed-loop-2";

// LoopWrapper.from_blocks_dict({"block1": LoopBlock}), named "seed-loop".
// The registry must hold the seed blocks.
absl::StatusOr<std::unique_ptr<Block>> MakeSeedLoop(
    const BlockRegistry& registry);

// LoopWrapper.from_blocks_dict({"block1": LoopBlock(), "block2": LoopBlock}),
// named "seed-loop-2".
absl::StatusOr<std::unique_ptr<Block>> MakeSeedLoop2(
    const BlockRegistry& registry);

}  // namespace loopserve
