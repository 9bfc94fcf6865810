#include "blocks/core/composite.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "blocks/core/resume.h"

namespace loopserve {

std::vector<InputParam> CompositeBlock::inputs() const {
  return MergeInputs({}, &BlockSignature::inputs);
}

std::vector<InputParam> CompositeBlock::intermediate_inputs() const {
  return MergeInputs({}, &BlockSignature::intermediate_inputs);
}

std::vector<OutputParam> CompositeBlock::intermediate_outputs() const {
  return MergeOutputs({});
}

std::vector<ComponentSpec> CompositeBlock::expected_components() const {
  std::vector<ComponentSpec> merged;
  absl::flat_hash_set<std::string> seen;
  for (const SubBlock& sub : sub_blocks_) {
    for (const ComponentSpec& spec :
         sub.block->signature().expected_components) {
      if (seen.insert(spec.role).second) merged.push_back(spec);
    }
  }
  return merged;
}

std::vector<InputParam> CompositeBlock::MergeInputs(
    std::vector<InputParam> leading,
    std::vector<InputParam> BlockSignature::*which) const {
  std::vector<InputParam> merged = std::move(leading);
  absl::flat_hash_set<std::string> taken;  // declared, or produced earlier
  for (const InputParam& param : merged) taken.insert(param.name);
  for (const SubBlock& sub : sub_blocks_) {
    const BlockSignature& sig = sub.block->signature();
    for (const InputParam& param : sig.*which) {
      if (taken.insert(param.name).second) merged.push_back(param);
    }
    for (const OutputParam& output : sig.intermediate_outputs) {
      taken.insert(output.name);
    }
  }
  return merged;
}

std::vector<OutputParam> CompositeBlock::MergeOutputs(
    std::vector<OutputParam> trailing) const {
  std::vector<OutputParam> merged;
  absl::flat_hash_set<std::string> seen;
  for (const SubBlock& sub : sub_blocks_) {
    for (const OutputParam& output :
         sub.block->signature().intermediate_outputs) {
      if (seen.insert(output.name).second) merged.push_back(output);
    }
  }
  for (OutputParam& output : trailing) {
    if (seen.insert(output.name).second) merged.push_back(std::move(output));
  }
  return merged;
}

absl::Status CompositeBlock::CheckSubBlock(const SubBlock&) const {
  return absl::OkStatus();
}

absl::Status CompositeBlock::SetSubBlocks(std::vector<SubBlock> sub_blocks) {
  if (!sub_blocks_.empty()) {
    return BlockError(*this, absl::StatusCode::kFailedPrecondition,
                      "sub-blocks are already set");
  }
  if (signature_resolved()) {
    return BlockError(*this, absl::StatusCode::kFailedPrecondition,
                      "sub-blocks must be set before the block is run or "
                      "described");
  }
  absl::flat_hash_set<absl::string_view> names;
  for (const SubBlock& sub : sub_blocks) {
    if (sub.name.empty() || sub.name.find('/') != std::string::npos) {
      return BlockError(
          *this, absl::StatusCode::kInvalidArgument,
          absl::StrCat("sub-block name '", sub.name,
                       "' must be non-empty and must not contain '/'"));
    }
    if (sub.block == nullptr) {
      return BlockError(*this, absl::StatusCode::kInvalidArgument,
                        absl::StrCat("sub-block '", sub.name, "' is null"));
    }
    if (!names.insert(sub.name).second) {
      return BlockError(*this, absl::StatusCode::kAlreadyExists,
                        absl::StrCat("sub-block name '", sub.name,
                                     "' appears more than once"));
    }
    if (absl::Status s = CheckSubBlock(sub); !s.ok()) return s;
  }
  sub_blocks_ = std::move(sub_blocks);
  AssignPath(path());
  OnSubBlocksSet();
  return absl::OkStatus();
}

void CompositeBlock::AssignPath(std::string path) {
  for (SubBlock& sub : sub_blocks_) {
    sub.block->AssignPath(path.empty() ? sub.name
                                       : absl::StrCat(path, "/", sub.name));
  }
  Block::AssignPath(std::move(path));
}

absl::Status SequentialBlocks::Run(const Components& components,
                                   PipelineState& state,
                                   RunContext& context) const {
  const std::span<const SubBlock> blocks = sub_blocks();
  // Note [resuming a loop]: the blocks before the loop are done, unless a
  // fork changed what they read.
  const size_t first = ResumeTarget(blocks, state.resume());
  for (size_t i = 0; i < blocks.size(); ++i) {
    RETURN_IF_ERROR(
        i < first
            ? RunAgainIfChanged(*blocks[i].block, components, state, context)
            : RunBlock(*blocks[i].block, components, state, context));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Block>> BlockSource::Take(
    const BlockRegistry& registry) const {
  if (!is_instance_) return registry.Create(type_name_);
  if (taken_) {
    return absl::FailedPreconditionError(
        "this block instance was already placed in a composite block");
  }
  taken_ = true;
  if (instance_ == nullptr) {
    return absl::InvalidArgumentError("block instance is null");
  }
  return std::move(instance_);
}

absl::StatusOr<std::vector<SubBlock>> ResolveBlockEntries(
    const BlockRegistry& registry, std::span<const BlockEntry> entries) {
  std::vector<SubBlock> sub_blocks;
  sub_blocks.reserve(entries.size());
  for (const BlockEntry& entry : entries) {
    absl::StatusOr<std::unique_ptr<Block>> block = entry.source.Take(registry);
    if (!block.ok()) {
      return absl::Status(block.status().code(),
                          absl::StrCat("sub-block '", entry.name,
                                       "': ", block.status().message()));
    }
    sub_blocks.push_back({entry.name, *std::move(block)});
  }
  return sub_blocks;
}

absl::StatusOr<std::vector<SubBlock>> WithDefaultSubBlocks(
    const CompositeBlock& composite, const BlockRegistry& registry,
    std::vector<SubBlock> listed) {
  const std::vector<std::pair<std::string, std::string>> defaults =
      composite.default_sub_blocks();
  if (defaults.empty()) return listed;
  auto is_default = [&defaults](absl::string_view name) {
    return std::any_of(defaults.begin(), defaults.end(),
                       [name](const auto& d) { return d.first == name; });
  };
  // A listed extra before a default's name would not run where it is listed.
  const SubBlock* extra = nullptr;
  for (const SubBlock& sub : listed) {
    if (!is_default(sub.name)) {
      if (extra == nullptr) extra = &sub;
    } else if (extra != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sub-block '", extra->name, "' is listed before '", sub.name,
          "', one of ", composite.type_name(),
          "'s standard sub-blocks; other sub-blocks run after the standard "
          "ones, so list it after them"));
    }
  }
  std::vector<SubBlock> merged;
  merged.reserve(defaults.size() + listed.size());
  for (const auto& entry : defaults) {
    // Not a structured binding: clang 14 (the sanitizer builds') cannot
    // capture one in a lambda.
    const std::string& name = entry.first;
    const std::string& type = entry.second;
    auto given =
        std::find_if(listed.begin(), listed.end(),
                     [&](const SubBlock& s) { return s.name == name; });
    if (given != listed.end()) {
      merged.push_back(std::move(*given));
      continue;
    }
    absl::StatusOr<std::unique_ptr<Block>> block = registry.Create(type, {});
    if (!block.ok()) {
      return absl::Status(block.status().code(),
                          absl::StrCat("standard sub-block '", name,
                                       "': ", block.status().message()));
    }
    merged.push_back({.name = name, .block = *std::move(block)});
  }
  for (SubBlock& sub : listed) {
    // Those taken above were moved from: their blocks are null.
    if (sub.block != nullptr) merged.push_back(std::move(sub));
  }
  return merged;
}

}  // namespace loopserve
