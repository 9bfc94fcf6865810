// LoopBlocks: the loop wrapper, diffusers' LoopSequentialPipelineBlocks.
//
// A loop wrapper declares loop_inputs, loop_intermediate_inputs and
// loop_intermediate_outputs, holds loop blocks (LoopStepBlock) and defines
// the loop in Run, calling LoopStep once per iteration. LoopStep runs every
// loop block, in order, on one shared BlockState, then tells the run's
// IterationObserver. The guide's example:
//
//   class LoopWrapper : public LoopBlocks {
//    public:
//     std::vector<InputParam> loop_inputs() const override {
//       return {{.name = "num_steps", .type_hint = TypeHint::Int(),
//                .required = true}};
//     }
//     absl::Status Run(const Components& components, PipelineState& state,
//                      RunContext& context) const override {
//       ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
//       ASSIGN_OR_RETURN(int64_t num_steps,
//                        block_state.Get<int64_t>("num_steps"));
//       for (int64_t i = 0; i < num_steps; ++i) {
//         RETURN_IF_ERROR(LoopStep(components, block_state,
//                                  {.i = i, .total = num_steps}, context));
//       }
//       return SetBlockState(state, block_state);
//     }
//   };
//
// Declarations (match diffusers):
//   inputs: loop_inputs, then the loop blocks' inputs not produced by an
//     earlier loop block (first declaration wins);
//   intermediate_inputs: likewise, from loop_intermediate_inputs;
//   intermediate_outputs: the loop blocks' outputs, then the
//     loop_intermediate_outputs not among them.
// So GetBlockState gathers everything the loop blocks read, and
// SetBlockState writes back everything they produce.
//
// Thread-safety: as Block.
#pragma once

#include <chrono>
#include <vector>

#include "blocks/core/composite.h"

namespace loopserve {

class LoopBlocks : public CompositeBlock {
 public:
  BlockKind kind() const override { return BlockKind::kLoop; }

  // Values the user provides for the loop itself, e.g. num_steps.
  virtual std::vector<InputParam> loop_inputs() const { return {}; }
  // Intermediates the loop reads.
  virtual std::vector<InputParam> loop_intermediate_inputs() const {
    return {};
  }
  // Intermediates the loop produces beyond its loop blocks' outputs.
  virtual std::vector<OutputParam> loop_intermediate_outputs() const {
    return {};
  }

  std::vector<InputParam> inputs() const final;
  std::vector<InputParam> intermediate_inputs() const final;
  std::vector<OutputParam> intermediate_outputs() const final;

  // Block::GetBlockState, for a loop that may be resumed (Note [resuming a
  // loop]): when `state` resumes this loop, the values the checkpoint
  // carried replace those read from the state, and first_iteration() says
  // where the loop continues.
  absl::StatusOr<BlockState> GetBlockState(PipelineState& state) const;

 protected:
  // One iteration: every loop block in order on `block_state`, then the
  // observer. Returns the first error, attributed to the loop block that
  // caused it, or the observer's stop status unchanged.
  absl::Status LoopStep(const Components& components, BlockState& block_state,
                        const LoopIndex& index, RunContext& context) const;

 private:
  // Only loop blocks (LoopStepBlock) can be held.
  absl::Status CheckSubBlock(const SubBlock& sub_block) const override;
  void OnSubBlocksSet() override;

  // The sub-blocks, cast once.
  std::vector<const LoopStepBlock*> steps_;
};

// Note [resuming a loop]
// ~~~~~~~~~~~~~~~~~~~~~~~
// A run can stop after any iteration and continue later, on any replica,
// from a checkpoint (engine/checkpoint.h): the pipeline state (inputs and
// the intermediates the blocks before the loop made), the loop's
// intermediate outputs after that iteration, and the iteration. Resuming
// needs nothing of a loop wrapper written as the guide writes one:
//   - the blocks before the loop do not run again (SequentialBlocks skips
//     them, except those whose inputs a fork changed: RunAgainIfChanged in
//     resume.h);
//   - the loop's GetBlockState reads its inputs from the restored state
//     and puts back the values its loop blocks carried;
//   - LoopStep returns at once for the iterations done before the
//     checkpoint, so the wrapper's own loop, counting from 0, reaches the
//     next iteration with everything as it was.
// What it asks of loop blocks: every value they keep from one iteration to
// the next is a declared intermediate output (or an object in the state
// that saves itself: a generator, a RunState). Anything else they keep in
// the state is taken for a cache, left out of checkpoints, and must be
// recomputed when missing.

// Note [loop step cost]
// ~~~~~~~~~~~~~~~~~~~~~
// LoopStep is the innermost path of every pipeline: for the seed loop it is
// the whole cost of an iteration. It is inline so that the loop wrapper's
// loop compiles into direct virtual calls of RunStep with no allocation, no
// lookup beyond the loop block's own BlockState scan, and exception handling
// that costs nothing unless something throws.
inline absl::Status LoopBlocks::LoopStep(const Components& components,
                                         BlockState& block_state,
                                         const LoopIndex& index,
                                         RunContext& context) const {
  // Done before the checkpoint this run resumed from.
  if (ABSL_PREDICT_FALSE(index.i < block_state.first_iteration())) {
    return absl::OkStatus();
  }
  // A timed iteration: one clock read per loop block and two more.
  using Clock = std::chrono::steady_clock;
  BlockTimer* const timer =
      context.timer != nullptr && context.timer->TimeIteration(*this)
          ? context.timer
          : nullptr;
  const Clock::time_point start =
      timer != nullptr ? Clock::now() : Clock::time_point();
  Clock::time_point last = start;
  for (const LoopStepBlock* step : steps_) {
    absl::Status status = InvokeGuarded(
        *step, [&] { return step->RunStep(components, block_state, index); });
    if (ABSL_PREDICT_FALSE(!status.ok())) return status;
    if (timer != nullptr) {
      const Clock::time_point now = Clock::now();
      timer->OnBlockTimed(*step, now - last);
      last = now;
    }
  }
  if (context.observer != nullptr) {
    absl::Status status = context.observer->OnIteration(
        LoopIteration{.loop = *this, .index = index, .state = block_state});
    if (ABSL_PREDICT_FALSE(!status.ok())) {
      return AttributeToRun(std::move(status));
    }
  }
  if (timer != nullptr) timer->OnIterationTimed(*this, Clock::now() - start);
  return absl::OkStatus();
}

}  // namespace loopserve
