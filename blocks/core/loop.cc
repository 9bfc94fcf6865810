#include "blocks/core/loop.h"

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace loopserve {

std::vector<InputParam> LoopBlocks::inputs() const {
  return MergeInputs(loop_inputs(), &BlockSignature::inputs);
}

std::vector<InputParam> LoopBlocks::intermediate_inputs() const {
  return MergeInputs(loop_intermediate_inputs(),
                     &BlockSignature::intermediate_inputs);
}

std::vector<OutputParam> LoopBlocks::intermediate_outputs() const {
  return MergeOutputs(loop_intermediate_outputs());
}

absl::StatusOr<BlockState> LoopBlocks::GetBlockState(
    PipelineState& state) const {
  std::shared_ptr<LoopResume> resume = state.TakeResume(path());
  if (resume == nullptr) return Block::GetBlockState(state);
  // The carried values are what the loop reads in place of its
  // intermediate inputs of the same name (the latents).
  for (const auto& [name, value] : resume->carried.entries()) {
    state.SetIntermediate(name, value);
  }
  ASSIGN_OR_RETURN(BlockState block_state, Block::GetBlockState(state));
  for (const auto& [name, value] : resume->carried.entries()) {
    block_state.Set(name, value);
  }
  block_state.set_first_iteration(resume->next_iteration);
  return block_state;
}

absl::Status LoopBlocks::CheckSubBlock(const SubBlock& sub_block) const {
  if (dynamic_cast<const LoopStepBlock*>(sub_block.block.get()) == nullptr) {
    return BlockError(
        *this, absl::StatusCode::kInvalidArgument,
        absl::StrCat("sub-block '", sub_block.name, "' (",
                     sub_block.block->type_name(),
                     ") is not a loop block; a loop wrapper holds only "
                     "LoopStepBlocks"));
  }
  return absl::OkStatus();
}

void LoopBlocks::OnSubBlocksSet() {
  steps_.clear();
  for (const SubBlock& sub : sub_blocks()) {
    steps_.push_back(static_cast<const LoopStepBlock*>(sub.block.get()));
  }
}

}  // namespace loopserve
