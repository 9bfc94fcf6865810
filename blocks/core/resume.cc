#include "blocks/core/resume.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/loop.h"

namespace loopserve {
namespace {

std::string Quoted(const std::vector<std::string>& names) {
  return absl::StrJoin(names, ", ", [](std::string* out, const std::string& s) {
    absl::StrAppend(out, "'", s, "'");
  });
}

}  // namespace

bool PathWithin(absl::string_view path, absl::string_view ancestor) {
  return path == ancestor ||
         (absl::StartsWith(path, ancestor) && path.size() > ancestor.size() &&
          path[ancestor.size()] == '/');
}

size_t ResumeTarget(std::span<const SubBlock> blocks,
                    const LoopResume* resume) {
  if (resume == nullptr) return 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (PathWithin(resume->loop, blocks[i].block->path())) return i;
  }
  return 0;
}

absl::StatusOr<ResumePlan> PlanResume(
    const Block& root, absl::string_view loop_path,
    const absl::flat_hash_set<std::string>& changed,
    const absl::flat_hash_set<std::string>& stateful) {
  // The blocks before the loop, in the order a run meets them: at each
  // level from the root down, the siblings before the one holding it.
  std::vector<const Block*> before;
  const Block* node = &root;
  while (node->path() != loop_path) {
    const Block* next = nullptr;
    for (const SubBlock& sub : node->sub_blocks()) {
      if (PathWithin(loop_path, sub.block->path())) {
        next = sub.block.get();
        break;
      }
      before.push_back(sub.block.get());
    }
    if (next == nullptr || node->kind() == BlockKind::kLoop) {
      return absl::NotFoundError(absl::StrCat(
          "the checkpoint's loop '", loop_path, "' is not in this pipeline"));
    }
    node = next;
  }
  const auto* loop = dynamic_cast<const LoopBlocks*>(node);
  if (loop == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "the checkpoint's loop '", loop_path, "' is not a loop block"));
  }

  absl::flat_hash_set<std::string> carried = stateful;
  for (const OutputParam& output : loop->signature().intermediate_outputs) {
    carried.insert(output.name);
  }
  ResumePlan plan{.loop = loop, .rerun = {}};
  // Changed values: the inputs, then what blocks running again make.
  absl::flat_hash_set<std::string> dirty = changed;
  for (const Block* block : before) {
    const BlockSignature& sig = block->signature();
    std::vector<std::string> reads;
    for (const auto* params : {&sig.inputs, &sig.intermediate_inputs}) {
      for (const InputParam& param : *params) {
        if (dirty.contains(param.name)) reads.push_back(param.name);
      }
    }
    if (reads.empty()) continue;
    std::vector<std::string> makes_carried;
    for (const OutputParam& output : sig.intermediate_outputs) {
      if (carried.contains(output.name)) makes_carried.push_back(output.name);
      dirty.insert(output.name);
    }
    if (!makes_carried.empty()) {
      std::sort(reads.begin(), reads.end());
      std::sort(makes_carried.begin(), makes_carried.end());
      return absl::InvalidArgumentError(absl::StrCat(
          reads.size() == 1 ? "input " : "inputs ", Quoted(reads),
          " cannot change when resuming: ", block->Label(),
          " reads ", reads.size() == 1 ? "it" : "them",
          " before the loop and makes ", Quoted(makes_carried),
          ", which the loop carries on from the checkpoint; leave ",
          reads.size() == 1 ? "it" : "them", " out to keep the checkpoint's"));
    }
    plan.rerun.push_back(block->path());
  }
  return plan;
}

}  // namespace loopserve
