#include "blocks/core/loop.h"

#include "absl/strings/str_cat.h"

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
