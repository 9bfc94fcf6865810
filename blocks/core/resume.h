// Resuming a run from a checkpoint (Note [resuming a loop] in loop.h): which
// loop it continues, and which of the blocks before that loop run again
// because a fork changed what they read.
//
//   // Before the run is queued: the fork's changes a block before the loop
//   // consumed into what the loop carries are refused at once.
//   ASSIGN_OR_RETURN(ResumePlan plan,
//                    PlanResume(*pipeline.root, "digits-text/denoise",
//                               /*changed=*/{"prompt"},
//                               /*stateful=*/{"generator", "schedule"}));
//   state.SetResume({.loop = "digits-text/denoise", .next_iteration = 5,
//                    .carried = carried,
//                    .carried_names = plan.carried_names,
//                    .changed = {"prompt"}});
//   // Then SequentialBlocks calls RunAgainIfChanged for each block before
//   // the loop.
//
// Thread-safety: PlanResume, PathWithin and ResumeTarget are pure
// functions; RunAgainIfChanged runs on the run's thread, as RunBlock.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/block.h"

namespace loopserve {

class LoopBlocks;

struct ResumePlan {
  // The loop the run continues.
  const LoopBlocks* loop = nullptr;
  // What the loop carries on from the checkpoint (LoopResume::carried_names):
  // its intermediate outputs and `stateful`.
  absl::flat_hash_set<std::string> carried_names;
};

// How a run of `root` resumes in the loop at `loop_path` when the inputs
// named in `changed` differ from the checkpoint's. A block before the loop
// runs again when it reads a changed value, and may not when it makes a
// value the loop carries on from the checkpoint: one of the loop's
// intermediate outputs (the latents), or one of `stateful`, the
// intermediates holding objects the loop changes in place (a generator, a
// sampler's RunState). NOT_FOUND when `loop_path` is not a loop under
// `root`; INVALID_ARGUMENT naming the inputs that cannot change, the block
// that reads them and what it makes. (A value a block run again makes anew
// is checked when the run starts: RunAgainIfChanged.)
absl::StatusOr<ResumePlan> PlanResume(
    const Block& root, absl::string_view loop_path,
    const absl::flat_hash_set<std::string>& changed,
    const absl::flat_hash_set<std::string>& stateful);

// Whether `path` is `ancestor` or lies below it.
bool PathWithin(absl::string_view path, absl::string_view ancestor);

// For a composite running `blocks` in order: the index of the one that holds
// the loop `resume` continues; those before it go through RunAgainIfChanged
// instead of RunBlock. 0 when `resume` is null or none holds it.
size_t ResumeTarget(std::span<const SubBlock> blocks, const LoopResume* resume);

// For a resumed run, a block before the loop: runs it when a value it reads
// is among state.resume()->changed, and adds to those its outputs that came
// out different; else leaves it done. INVALID_ARGUMENT, naming what changed
// and what the block makes, when it would make anew a value the loop
// carries on.
absl::Status RunAgainIfChanged(const Block& block, const Components& components,
                               PipelineState& state, RunContext& context);

}  // namespace loopserve
