#include "engine/pipeline_catalog.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/iteration_preview.h"
#include "engine/digest.h"
#include "engine/tensor_codec.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

// Adds the intermediate outputs of every loop under `block` to `outputs`.
void CollectLoopOutputs(const Block& block,
                        absl::flat_hash_set<std::string>& seen,
                        std::vector<OutputParam>& outputs) {
  if (block.kind() == BlockKind::kLoop) {
    for (const OutputParam& output : block.signature().intermediate_outputs) {
      if (!output.internal && seen.insert(output.name).second) {
        outputs.push_back(output);
      }
    }
  }
  for (const SubBlock& sub : block.sub_blocks()) {
    CollectLoopOutputs(*sub.block, seen, outputs);
  }
}

}  // namespace

v1::ParamSpec ToParamSpec(const InputParam& param) {
  v1::ParamSpec spec;
  spec.set_name(param.name);
  spec.set_type(param.type_hint.ToString());
  spec.set_required(param.required);
  for (const std::string& choice : param.choices) spec.add_choices(choice);
  if (!param.default_value.isNone()) {
    // A default the wire cannot carry is left out rather than failing the
    // description.
    if (!EncodeValue(param.default_value, *spec.mutable_default_value()).ok()) {
      spec.clear_default_value();
    }
  }
  spec.set_description(param.description);
  return spec;
}

v1::ParamSpec ToParamSpec(const OutputParam& param) {
  v1::ParamSpec spec;
  spec.set_name(param.name);
  spec.set_type(param.type_hint.ToString());
  spec.set_description(param.description);
  return spec;
}

v1::BlockSpec ToBlockSpec(const BlockDescription& description) {
  v1::BlockSpec spec;
  spec.set_name(description.name);
  spec.set_type(description.type);
  spec.set_kind(std::string(BlockKindName(description.kind)));
  spec.set_description(description.description);
  for (const InputParam& p : description.signature.inputs) {
    *spec.add_inputs() = ToParamSpec(p);
  }
  for (const InputParam& p : description.signature.intermediate_inputs) {
    *spec.add_intermediate_inputs() = ToParamSpec(p);
  }
  for (const OutputParam& p : description.signature.intermediate_outputs) {
    *spec.add_intermediate_outputs() = ToParamSpec(p);
  }
  for (const BlockDescription& child : description.blocks) {
    *spec.add_blocks() = ToBlockSpec(child);
  }
  return spec;
}

absl::Status PipelineCatalog::Add(std::string name, std::string description,
                                  std::unique_ptr<Block> root,
                                  Components components,
                                  std::string* role_at_fault) {
  if (name.empty()) return absl::InvalidArgumentError("pipeline name is empty");
  if (root == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline '", name, "' has no blocks"));
  }
  if (by_name_.contains(name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("pipeline '", name, "' is already defined"));
  }
  root->SetName(name);
  RETURN_IF_ERROR(CheckExpectedComponents(*root, components, role_at_fault));
  RETURN_IF_ERROR(BindComponents(*root, components));
  auto pipeline = std::make_unique<Pipeline>();
  pipeline->name = name;
  for (InputParam input : root->signature().inputs) {
    if (!input.choices_of_role.empty()) {
      input.choices = components.Choices(input.choices_of_role);
      if (!input.choices.empty()) input.default_value = input.choices.front();
    }
    pipeline->inputs.push_back(std::move(input));
  }
  pipeline->description = std::move(description);
  pipeline->components = std::move(components);
  absl::flat_hash_set<std::string> seen;
  CollectLoopOutputs(*root, seen, pipeline->iteration_outputs);
  for (const OutputParam& output : root->signature().intermediate_outputs) {
    if (!output.internal) pipeline->outputs.push_back(output);
  }

  v1::PipelineDescription& proto = pipeline->description_proto;
  proto.set_name(name);
  proto.set_description(pipeline->description);
  for (const InputParam& p : pipeline->inputs) {
    *proto.add_inputs() = ToParamSpec(p);
  }
  for (const OutputParam& p : pipeline->iteration_outputs) {
    *proto.add_iteration_outputs() = ToParamSpec(p);
  }
  for (const OutputParam& p : pipeline->outputs) {
    *proto.add_outputs() = ToParamSpec(p);
  }
  *proto.mutable_blocks() = ToBlockSpec(root->Describe());
  proto.set_preview(pipeline->components.Provides(
      kPreviewRole, ComponentInterface::Of<IterationPreview>()));

  // The tree and what is bound to each role; the configuration adds the
  // rest (AddToFingerprint).
  std::string identity = DeterministicBytes(proto);
  for (const std::string& role : pipeline->components.Names()) {
    absl::StrAppend(&identity, "\n", role, "\n",
                    absl::StrJoin(pipeline->components.Choices(role), "|"),
                    "\n", pipeline->components.Describe(role));
  }
  pipeline->fingerprint = Sha256(identity);

  pipeline->root = std::move(root);
  by_name_.emplace(name, pipeline.get());
  pipelines_.push_back(std::move(pipeline));
  return absl::OkStatus();
}

absl::Status PipelineCatalog::AddToFingerprint(absl::string_view name,
                                               absl::string_view data) {
  for (const std::unique_ptr<Pipeline>& pipeline : pipelines_) {
    if (pipeline->name == name) {
      pipeline->fingerprint = Sha256(absl::StrCat(pipeline->fingerprint, data));
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(
      absl::StrCat("pipeline '", name, "' is not defined"));
}

const Pipeline* PipelineCatalog::Find(absl::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

}  // namespace loopserve
