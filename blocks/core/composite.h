// Composite blocks and their assembly: CompositeBlock (named sub-blocks),
// SequentialBlocks (runs them in order) and FromBlocks, diffusers'
// from_blocks_dict. LoopBlocks, the loop wrapper, is in loop.h.
//
// FromBlocks takes, for each sub-block, either a registered type name or an
// instance, exactly as diffusers' guide shows both:
//
//   ASSIGN_OR_RETURN(std::unique_ptr<LoopWrapper> loop,
//                    FromBlocks<LoopWrapper>(
//                        registry, {{"block1", std::make_unique<LoopBlock>()},
//                                   {"block2", "LoopBlock"}}));
//
// Aggregated declarations (match diffusers):
//   inputs / intermediate_inputs: the sub-blocks', in order, minus those an
//     earlier sub-block produces; the first declaration of a name wins.
//   intermediate_outputs: the sub-blocks', in order; first declaration wins.
//   expected_components: the sub-blocks', first declaration of a name wins.
//
// Thread-safety: as Block. SetSubBlocks is assembly, before serving.
#pragma once

#include <concepts>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blocks/core/block.h"
#include "blocks/core/registry.h"
#include "util/status_macros.h"

namespace loopserve {

class CompositeBlock : public Block {
 public:
  std::span<const SubBlock> sub_blocks() const override { return sub_blocks_; }

  std::vector<InputParam> inputs() const override;
  std::vector<InputParam> intermediate_inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  std::vector<ComponentSpec> expected_components() const override;

  // The sub-blocks this type has unless told otherwise, in order: (name,
  // registered type) pairs a configuration need not repeat (Note [default
  // sub-blocks]). Empty by default.
  virtual std::vector<std::pair<std::string, std::string>> default_sub_blocks()
      const {
    return {};
  }

  // Places the sub-blocks, once, before the block is run or described.
  // INVALID_ARGUMENT for an empty name, a name with '/', a null block or a
  // block this composite cannot hold; ALREADY_EXISTS for a repeated name;
  // FAILED_PRECONDITION when sub-blocks are set already or the signature
  // was already computed.
  absl::Status SetSubBlocks(std::vector<SubBlock> sub_blocks);

 protected:
  // Whether this composite can hold `sub_block`; OK by default.
  virtual absl::Status CheckSubBlock(const SubBlock& sub_block) const;
  // Called once SetSubBlocks has placed the sub-blocks.
  virtual void OnSubBlocksSet() {}

  // The aggregation rules above, with `leading` params ahead of the
  // sub-blocks' (a loop's loop_inputs) and `trailing` outputs after theirs.
  std::vector<InputParam> MergeInputs(
      std::vector<InputParam> leading,
      std::vector<InputParam> BlockSignature::*which) const;
  std::vector<OutputParam> MergeOutputs(
      std::vector<OutputParam> trailing) const;

  void AssignPath(std::string path) override;

 private:
  std::vector<SubBlock> sub_blocks_;
};

// Note [default sub-blocks]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// A composite type whose sub-blocks are nearly always the same (DenoiseLoop:
// ScaleModelInput, PredictNoise, SchedulerStep) names them in
// default_sub_blocks(), and a configuration says only what differs:
//   - no sub-blocks listed: the defaults, each created with no params;
//   - a listed sub-block with a default's name takes its place (another
//     type, or params);
//   - the other listed sub-blocks run after the defaults, in the order
//     listed; listing one before a default's name is refused, since it
//     would not run there.
// WithDefaultSubBlocks applies these rules; SetSubBlocks and FromBlocks do
// not (code that assembles a block names every sub-block).

// `listed` (built from a configuration) merged with `composite`'s defaults,
// those created through `registry`: Note [default sub-blocks].
// INVALID_ARGUMENT naming a listed sub-block out of place.
absl::StatusOr<std::vector<SubBlock>> WithDefaultSubBlocks(
    const CompositeBlock& composite, const BlockRegistry& registry,
    std::vector<SubBlock> listed);

// Runs its sub-blocks in order on the pipeline state: diffusers'
// SequentialPipelineBlocks. Registered as "Sequential". A resumed run skips
// those before the loop it continues (Note [resuming a loop] in loop.h); a
// composite that runs its children otherwise must do the same
// (ResumeTarget, resume.h).
class SequentialBlocks : public CompositeBlock {
 public:
  static constexpr absl::string_view kTypeName = "Sequential";
  absl::string_view type_name() const override { return kTypeName; }
  BlockKind kind() const override { return BlockKind::kSequential; }

  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override;
};

// One FromBlocks entry's block: a registered type name or an instance.
class BlockSource {
 public:
  BlockSource(const char* type_name) : type_name_(type_name) {}
  BlockSource(std::string type_name) : type_name_(std::move(type_name)) {}
  template <std::derived_from<Block> T>
  BlockSource(std::unique_ptr<T> instance)
      : is_instance_(true), instance_(std::move(instance)) {}

  // The block: created from the registry, or the instance moved out.
  // Note [instances in braced lists]: a braced list's elements are const, so
  // the instance is held `mutable` and handed over once; a second Take is
  // FAILED_PRECONDITION.
  absl::StatusOr<std::unique_ptr<Block>> Take(
      const BlockRegistry& registry) const;

 private:
  std::string type_name_;
  bool is_instance_ = false;
  mutable std::unique_ptr<Block> instance_;
  mutable bool taken_ = false;
};

struct BlockEntry {
  std::string name;
  BlockSource source;
};

// Resolves `entries` into sub-blocks, in order.
absl::StatusOr<std::vector<SubBlock>> ResolveBlockEntries(
    const BlockRegistry& registry, std::span<const BlockEntry> entries);

// diffusers' `T.from_blocks_dict({...})`: a new T (constructed from `args`)
// holding `entries` as its sub-blocks, in order.
template <std::derived_from<CompositeBlock> T, typename... Args>
absl::StatusOr<std::unique_ptr<T>> FromBlocks(
    const BlockRegistry& registry, std::initializer_list<BlockEntry> entries,
    Args&&... args) {
  ASSIGN_OR_RETURN(
      std::vector<SubBlock> sub_blocks,
      ResolveBlockEntries(registry, std::span<const BlockEntry>(
                                        entries.begin(), entries.size())));
  auto block = std::make_unique<T>(std::forward<Args>(args)...);
  RETURN_IF_ERROR(block->SetSubBlocks(std::move(sub_blocks)));
  return block;
}

}  // namespace loopserve
