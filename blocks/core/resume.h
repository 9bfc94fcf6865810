// Resuming a run from a checkpoint (Note [resuming a loop] in loop.h): which
// loop it continues, and which of the blocks before that loop must run
// again because a fork changed what they read.
//
//   ASSIGN_OR_RETURN(ResumePlan plan,
//                    PlanResume(*pipeline.root, "digits-text/denoise",
//                               /*changed=*/{"prompt"},
//                               /*stateful=*/{"generator", "schedule"}));
//   state.SetResume({.loop = "digits-text/denoise", .next_iteration = 5,
//                    .carried = carried, .rerun = plan.rerun});
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/block.h"

namespace loopserve {

class LoopBlocks;

struct ResumePlan {
  // The loop the run continues.
  const LoopBlocks* loop = nullptr;
  // Paths of the blocks before the loop that run again: those reading an
  // input the fork changed, or a value such a block makes again.
  std::vector<std::string> rerun;
};

// How a run of `root` resumes in the loop at `loop_path` when the inputs
// named in `changed` differ from the checkpoint's. A block before the loop
// runs again when it reads a changed value, and may not when it makes a
// value the loop carries on from the checkpoint: one of the loop's
// intermediate outputs (the latents), or one of `stateful`, the
// intermediates holding objects the loop changes in place (a generator, a
// sampler's RunState). NOT_FOUND when `loop_path` is not a loop under
// `root`; INVALID_ARGUMENT naming the inputs that cannot change, the block
// that reads them and what it makes.
absl::StatusOr<ResumePlan> PlanResume(
    const Block& root, absl::string_view loop_path,
    const absl::flat_hash_set<std::string>& changed,
    const absl::flat_hash_set<std::string>& stateful);

// Whether `path` is `ancestor` or lies below it.
bool PathWithin(absl::string_view path, absl::string_view ancestor);

// For a composite running `blocks` in order: the index of the one that holds
// the loop `resume` continues, so that those before it are skipped (unless
// in LoopResume::rerun); 0 when `resume` is null or none holds it.
size_t ResumeTarget(std::span<const SubBlock> blocks,
                    const LoopResume* resume);

}  // namespace loopserve
