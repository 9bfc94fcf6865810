// Block: the unit pipelines are assembled from, after diffusers'
// ModularPipelineBlocks.
//
// A block declares what it reads (inputs, intermediate_inputs), what it writes
// (intermediate_outputs) and which components it uses, and runs on a
// PipelineState:
//
//   class AddOne : public Block {
//    public:
//     static constexpr absl::string_view kTypeName = "AddOne";
//     absl::string_view type_name() const override { return kTypeName; }
//     std::vector<InputParam> inputs() const override {
//       return {{.name = "x", .type_hint = TypeHint::Int(), .required = true}};
//     }
//     std::vector<OutputParam> intermediate_outputs() const override {
//       return {{.name = "y", .type_hint = TypeHint::Int()}};
//     }
//     absl::Status Run(const Components&, PipelineState& state,
//                      RunContext&) const override {
//       ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
//       ASSIGN_OR_RETURN(int64_t x, block_state.Get<int64_t>("x"));
//       block_state.Set("y", x + 1);
//       return SetBlockState(state, block_state);
//     }
//   };
//
// A loop block (LoopStepBlock) instead works on the BlockState its loop
// wrapper shares, once per iteration. Composite blocks (SequentialBlocks,
// LoopBlocks, composite.h and loop.h) hold named sub-blocks.
//
// Thread-safety: once assembled, a block is immutable; Run and every other
// const method may be called concurrently from any number of runs. All
// per-run state lives in the PipelineState and BlockState. Assembly
// (SetName, CompositeBlock::SetSubBlocks, BindComponents) happens before
// serving, on one thread.
//
// Errors: see Note [error attribution] below.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/components.h"
#include "blocks/core/params.h"
#include "blocks/core/run_context.h"
#include "blocks/core/state.h"

namespace loopserve {

enum class BlockKind { kBlock, kSequential, kLoop };

// "block", "sequential" or "loop": the names DescribePipeline reports.
absl::string_view BlockKindName(BlockKind kind);

class Block;

// A named child of a composite block.
struct SubBlock {
  std::string name{};
  std::unique_ptr<Block> block{};
};

// A block's declarations, resolved once (for composites: aggregated over the
// sub-blocks).
struct BlockSignature {
  std::vector<InputParam> inputs{};
  std::vector<InputParam> intermediate_inputs{};
  std::vector<OutputParam> intermediate_outputs{};
  std::vector<ComponentSpec> expected_components{};
};

// A block tree as data: what DescribePipeline serves.
struct BlockDescription {
  std::string name{};
  std::string path{};
  std::string type{};
  BlockKind kind = BlockKind::kBlock;
  std::string model_name{};
  std::string description{};
  BlockSignature signature{};
  std::vector<BlockDescription> blocks{};
};

class Block {
 public:
  virtual ~Block() = default;
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  // ---- What a block declares. Override these. ----

  // The name the block type is registered under, e.g. "LoopBlock".
  virtual absl::string_view type_name() const = 0;
  virtual absl::string_view model_name() const { return {}; }
  virtual std::string description() const { return {}; }
  virtual BlockKind kind() const { return BlockKind::kBlock; }
  // Values read from the user's inputs (or, when an earlier block produced
  // one of the same name, from the intermediates: Note [input resolution]).
  virtual std::vector<InputParam> inputs() const { return {}; }
  // Values read from the intermediates earlier blocks produced.
  virtual std::vector<InputParam> intermediate_inputs() const { return {}; }
  // Values written to the intermediates.
  virtual std::vector<OutputParam> intermediate_outputs() const { return {}; }
  virtual std::vector<ComponentSpec> expected_components() const { return {}; }

  // Assembly: the components the block will run with, once its pipeline
  // has bound them and checked them against expected_components(). A block
  // whose declarations depend on its components (the conditioning values a
  // denoiser takes are run inputs of the block that calls it) reads them
  // here; its signature is computed again afterwards. Call it through
  // BindComponents (below). Default: nothing to read.
  virtual absl::Status Bind(const Components& components);

  // Runs the block. Call it through RunBlock (below), which turns exceptions
  // into a Status naming the block.
  virtual absl::Status Run(const Components& components, PipelineState& state,
                           RunContext& context) const = 0;

  // ---- Provided by the framework. ----

  // inputs(), intermediate_inputs(), intermediate_outputs() and
  // expected_components(), computed on first use and cached: the run path
  // reads them every run.
  const BlockSignature& signature() const;

  // diffusers' get_block_state: a BlockState holding every declared input and
  // intermediate input, with defaults applied. INVALID_ARGUMENT when a
  // required one is missing ("Required input 'x' is missing") or a value does
  // not fit its type hint.
  absl::StatusOr<BlockState> GetBlockState(const PipelineState& state) const;

  // diffusers' set_block_state: writes every declared intermediate output
  // back to the state (INTERNAL naming it when the block state lacks one),
  // and every intermediate input the block replaced.
  absl::Status SetBlockState(PipelineState& state,
                             const BlockState& block_state) const;

  // The block's name in its parent ("block1"), and its path from the root
  // ("seed-loop/block1"). Both empty for an unnamed root.
  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }
  // Names a root block (a pipeline); paths below it follow. Assembly only.
  void SetName(std::string name) { AssignPath(std::move(name)); }

  // "block 'seed-loop/block1' (LoopBlock)": how errors name this block.
  std::string Label() const;

  // The named children; empty for a leaf.
  virtual std::span<const SubBlock> sub_blocks() const { return {}; }

  BlockDescription Describe() const;

 protected:
  Block() = default;

  // Sets path() and name(); composites also re-path their children.
  virtual void AssignPath(std::string path);

  friend absl::Status BindComponents(Block& root, const Components& components);
  // Computes signature() again: after Bind, during assembly only.
  void RecomputeSignature();

  // For CompositeBlock::SetSubBlocks: whether signature() was computed, and
  // so would go stale.
  bool signature_resolved() const { return signature_resolved_; }

 private:
  friend class CompositeBlock;

  std::string name_;
  std::string path_;
  mutable absl::once_flag signature_once_;
  mutable BlockSignature signature_;
  mutable bool signature_resolved_ = false;
};

// A loop block: run by a loop wrapper (LoopBlocks) once per iteration, on the
// BlockState all the loop's blocks share, as in diffusers' guide:
//
//   absl::Status RunStep(const Components&, BlockState& state,
//                        const LoopIndex&) const override {
//     c10::IValue& x = *state.Find("x");   // a declared input: present
//     x = x.toInt() + 1;
//     return absl::OkStatus();
//   }
//
// Its declared inputs and intermediate outputs feed the wrapper's: the
// wrapper's GetBlockState fetches them before the loop and its SetBlockState
// writes them back after.
class LoopStepBlock : public Block {
 public:
  virtual absl::Status RunStep(const Components& components, BlockState& state,
                               const LoopIndex& index) const = 0;

  // A loop block has no meaning outside a loop: FAILED_PRECONDITION.
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const final;
};

// Note [error attribution]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// Every error that ends a run names the block it arose in, once, as
// "block 'PATH' (TYPE): message", and carries the path as a status payload
// (AttributedBlockPath) for the service and metrics. Errors are attributed
// where they arise: GetBlockState and SetBlockState name their own block,
// and RunBlock / LoopBlocks::LoopStep attribute whatever a block returns or
// throws unless it is attributed already, so an error passing up through
// composites is not named again by each of them. A stop requested by the
// IterationObserver belongs to no block: LoopStep marks it attributed
// (AttributeToRun) so it leaves the run exactly as the observer said it.

// The status payload URL that carries the block path.
inline constexpr absl::string_view kBlockPathPayloadUrl =
    "type.loopserve.dev/block-path";

// An error of `code` named after `block`.
absl::Status BlockError(const Block& block, absl::StatusCode code,
                        absl::string_view message);

// `status`, named after `block` unless OK or attributed already.
inline absl::Status AttributeToBlock(const Block& block, absl::Status status);

// `status`, marked as attributed to no block.
absl::Status AttributeToRun(absl::Status status);

// The block path an error was attributed to ("" for the run itself), or
// nullopt when it was never attributed.
std::optional<std::string> AttributedBlockPath(const absl::Status& status);

// The Status for the exception being handled (call only inside a catch):
// c10 value, type and index errors and std::invalid_argument become
// INVALID_ARGUMENT, std::bad_alloc RESOURCE_EXHAUSTED, the rest INTERNAL; the
// message names `block`.
absl::Status StatusFromCurrentException(const Block& block);

// Calls `fn` (returning absl::Status) on behalf of `block`: exceptions become
// a Status, and errors are attributed to the block.
template <typename Fn>
absl::Status InvokeGuarded(const Block& block, Fn&& fn);

// Checks that `components` holds every component each block under `root`
// expects, each of the interface it declares (CheckComponent): how a
// pipeline's role bindings are checked before it serves. The error names
// the block; `role`, when given, receives the role at fault.
absl::Status CheckExpectedComponents(const Block& root,
                                     const Components& components,
                                     std::string* role = nullptr);

// Binds every block under `root` to `components` (Block::Bind, children
// first) and recomputes their signatures, so that composites aggregate what
// their children declare once bound: how a pipeline is assembled after
// CheckExpectedComponents. Errors are attributed to the block.
absl::Status BindComponents(Block& root, const Components& components);

// Runs `block` on `state`: the way a pipeline is started, and the way
// composites run their children.
absl::Status RunBlock(const Block& block, const Components& components,
                      PipelineState& state, RunContext& context);

// Implementation details below.

namespace internal {
absl::Status AttributeToBlockSlow(const Block& block, absl::Status status);
}  // namespace internal

inline absl::Status AttributeToBlock(const Block& block, absl::Status status) {
  if (ABSL_PREDICT_TRUE(status.ok())) return status;
  return internal::AttributeToBlockSlow(block, std::move(status));
}

template <typename Fn>
absl::Status InvokeGuarded(const Block& block, Fn&& fn) {
  absl::Status status;
  try {
    status = std::forward<Fn>(fn)();
  } catch (...) {
    return StatusFromCurrentException(block);
  }
  return AttributeToBlock(block, std::move(status));
}

}  // namespace loopserve
