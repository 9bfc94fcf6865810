// PipelineCatalog: the pipelines a server serves, by name, with what each
// accepts and produces, derived once from its block tree.
//
//   PipelineCatalog catalog;
//   RETURN_IF_ERROR(catalog.Add("seed-loop", "x += 1", std::move(root)));
//   const Pipeline* pipeline = catalog.Find("seed-loop");
//
// Thread-safety: Add is for start-up only; Find, List and the Pipelines
// they return are immutable afterwards and safe from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "blocks/core/block.h"
#include "blocks/core/registry.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

struct Pipeline {
  std::string name;
  std::string description;
  // Named after the pipeline: its path is `name`.
  std::unique_ptr<Block> root;
  // The components its blocks use, by role ("scheduler", "denoiser").
  Components components;
  // What can be streamed each iteration: the intermediate outputs of every
  // loop in the tree, first declaration of a name wins; internal ones left
  // out.
  std::vector<OutputParam> iteration_outputs;
  // Final outputs: the root's intermediate outputs, internal ones left out.
  std::vector<OutputParam> outputs;

  // What a RunRequest may set: the root's inputs, a choice of components
  // (choices_of_role) resolved to the names bound to the role, the first
  // the default.
  std::vector<InputParam> inputs;
  // DescribePipeline's answer, built once.
  v1::PipelineDescription description_proto;
  // SHA-256 of its block tree (description_proto), its components' roles
  // and kinds, and what the configuration adds (AddToFingerprint): a
  // checkpoint resumes only in a pipeline with the same one.
  std::string fingerprint;
};

class PipelineCatalog {
 public:
  // Adds `root` as pipeline `name` (and names the root so), its blocks using
  // `components`. ALREADY_EXISTS when the name is taken; INVALID_ARGUMENT for
  // an empty name; NOT_FOUND naming a component the blocks expect that
  // `components` lacks, FAILED_PRECONDITION one of the wrong interface
  // (CheckExpectedComponents); then `role_at_fault`, when given, receives
  // its role. Then binds the blocks to the components (BindComponents): a
  // block's error there names it.
  absl::Status Add(std::string name, std::string description,
                   std::unique_ptr<Block> root, Components components = {},
                   std::string* role_at_fault = nullptr);

  // Mixes `data` (a digest of the configuration of the pipeline's
  // components and of their model files) into pipeline `name`'s
  // fingerprint. NOT_FOUND when there is no such pipeline. Start-up only.
  absl::Status AddToFingerprint(absl::string_view name, absl::string_view data);

  // The pipeline, or nullptr.
  const Pipeline* Find(absl::string_view name) const;
  // In the order they were added.
  const std::vector<std::unique_ptr<Pipeline>>& pipelines() const {
    return pipelines_;
  }

  // What loading noted that is not an error (a scheduler_config.json's
  // unused keys), each prefixed with where it comes from; --check_config
  // prints them.
  void AddNote(std::string note) { notes_.push_back(std::move(note)); }
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  std::vector<std::string> notes_;
  std::vector<std::unique_ptr<Pipeline>> pipelines_;
  absl::flat_hash_map<std::string, const Pipeline*> by_name_;
};

// The wire form of a parameter and of a block tree.
v1::ParamSpec ToParamSpec(const InputParam& param);
v1::ParamSpec ToParamSpec(const OutputParam& param);
v1::BlockSpec ToBlockSpec(const BlockDescription& description);

}  // namespace loopserve
