#include "blocks/core/resume.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/loop.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

std::string Quoted(const std::vector<std::string>& names) {
  return absl::StrJoin(names, ", ", [](std::string* out, const std::string& s) {
    absl::StrAppend(out, "'", s, "'");
  });
}

// The names `block` reads that are among `names`, sorted.
std::vector<std::string> NamesRead(
    const Block& block, const absl::flat_hash_set<std::string>& names) {
  const BlockSignature& sig = block.signature();
  std::vector<std::string> read;
  for (const auto* params : {&sig.inputs, &sig.intermediate_inputs}) {
    for (const InputParam& param : *params) {
      if (names.contains(param.name)) read.push_back(param.name);
    }
  }
  std::sort(read.begin(), read.end());
  read.erase(std::unique(read.begin(), read.end()), read.end());
  return read;
}

// OK when `block` may run again with `changed` values: it makes none of
// `carried`.
absl::Status CheckRunAgain(const Block& block,
                           const absl::flat_hash_set<std::string>& changed,
                           const absl::flat_hash_set<std::string>& carried) {
  const std::vector<std::string> reads = NamesRead(block, changed);
  if (reads.empty()) return absl::OkStatus();
  std::vector<std::string> makes;
  for (const OutputParam& output : block.signature().intermediate_outputs) {
    if (carried.contains(output.name)) makes.push_back(output.name);
  }
  if (makes.empty()) return absl::OkStatus();
  std::sort(makes.begin(), makes.end());
  const bool one = reads.size() == 1;
  return absl::InvalidArgumentError(absl::StrCat(
      "resuming changes ", Quoted(reads),
      " (an input given, or made anew "
      "from one), which ",
      block.Label(), " reads before the loop to make ", Quoted(makes),
      ", which the loop carries on from the checkpoint; "
      "leave ",
      one ? "that input" : "those inputs", " out to keep the checkpoint's"));
}

// Whether two values of a state are the same value.
bool SameValue(const c10::IValue& a, const c10::IValue& b) {
  if (a.isSameIdentity(b)) return true;
  if (a.isTensor() && b.isTensor()) {
    const at::Tensor& x = a.toTensor();
    const at::Tensor& y = b.toTensor();
    return x.defined() == y.defined() &&
           (!x.defined() ||
            (x.scalar_type() == y.scalar_type() && x.sizes() == y.sizes() &&
             x.device() == y.device() && at::equal(x, y)));
  }
  if (a.isList() && b.isList()) {
    const auto x = a.toListRef();
    const auto y = b.toListRef();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      if (!SameValue(x[i], y[i])) return false;
    }
    return true;
  }
  if (a.isNone()) return b.isNone();
  if (a.isInt()) return b.isInt() && a.toInt() == b.toInt();
  if (a.isDouble()) return b.isDouble() && a.toDouble() == b.toDouble();
  if (a.isBool()) return b.isBool() && a.toBool() == b.toBool();
  if (a.isString()) return b.isString() && a.toStringRef() == b.toStringRef();
  return false;
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

  ResumePlan plan{.loop = loop, .carried_names = stateful};
  for (const OutputParam& output : loop->signature().intermediate_outputs) {
    plan.carried_names.insert(output.name);
  }
  for (const Block* block : before) {
    RETURN_IF_ERROR(CheckRunAgain(*block, changed, plan.carried_names));
  }
  return plan;
}

absl::Status RunAgainIfChanged(const Block& block, const Components& components,
                               PipelineState& state, RunContext& context) {
  LoopResume* resume = state.mutable_resume();
  if (resume == nullptr) {  // not resuming (any more): an ordinary run
    return RunBlock(block, components, state, context);
  }
  if (NamesRead(block, resume->changed).empty()) {
    return absl::OkStatus();  // done before the checkpoint
  }
  if (absl::Status s =
          CheckRunAgain(block, resume->changed, resume->carried_names);
      !s.ok()) {
    return AttributeToRun(std::move(s));  // the request's fault
  }
  const std::vector<OutputParam>& outputs =
      block.signature().intermediate_outputs;
  // The block runs on the state as it found it the first time, without
  // the values it made then: it reads some of them as inputs (a client's
  // conditioning overrides the prompt's), and they would shadow the fork's.
  std::vector<c10::IValue> before;
  for (const OutputParam& output : outputs) {
    const c10::IValue* value = state.GetIntermediate(output.name);
    before.push_back(value != nullptr ? *value : c10::IValue());
    state.EraseIntermediate(output.name);
  }
  RETURN_IF_ERROR(RunBlock(block, components, state, context));
  for (size_t i = 0; i < outputs.size(); ++i) {
    const c10::IValue* after = state.GetIntermediate(outputs[i].name);
    if (after == nullptr || !SameValue(before[i], *after)) {
      resume->changed.insert(outputs[i].name);
    }
  }
  return absl::OkStatus();
}

}  // namespace loopserve
