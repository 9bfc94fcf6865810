#include "blocks/core/block.h"

#include <c10/util/Exception.h>
#include <glog/logging.h>

#include <chrono>
#include <exception>
#include <new>
#include <stdexcept>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace loopserve {

absl::string_view BlockKindName(BlockKind kind) {
  switch (kind) {
    case BlockKind::kBlock:
      return "block";
    case BlockKind::kSequential:
      return "sequential";
    case BlockKind::kLoop:
      return "loop";
  }
  return "block";
}

const BlockSignature& Block::signature() const {
  absl::call_once(signature_once_, [this] {
    signature_.inputs = inputs();
    signature_.intermediate_inputs = intermediate_inputs();
    signature_.intermediate_outputs = intermediate_outputs();
    signature_.expected_components = expected_components();
    signature_resolved_ = true;
  });
  return signature_;
}

void Block::RecomputeSignature() {
  // Assembly is single-threaded: the once flag only has to be spent so that
  // signature() does not overwrite what is computed here.
  absl::call_once(signature_once_, [] {});
  signature_.inputs = inputs();
  signature_.intermediate_inputs = intermediate_inputs();
  signature_.intermediate_outputs = intermediate_outputs();
  signature_.expected_components = expected_components();
  signature_resolved_ = true;
}

absl::Status Block::Bind(const Components&) { return absl::OkStatus(); }

absl::Status BindComponents(Block& root, const Components& components) {
  for (const SubBlock& sub : root.sub_blocks()) {
    RETURN_IF_ERROR(BindComponents(*sub.block, components));
  }
  RETURN_IF_ERROR(InvokeGuarded(root, [&] { return root.Bind(components); }));
  root.RecomputeSignature();
  return absl::OkStatus();
}

namespace {

// Puts `param`'s value into `block_state`: `value` when there is one, else
// the default, else None; a required param with neither is an error.
absl::Status AddParam(const Block& block, const InputParam& param,
                      const c10::IValue* value, absl::string_view what,
                      BlockState& block_state) {
  if (value == nullptr || value->isNone()) {
    if (!param.default_value.isNone()) {
      value = &param.default_value;
    } else if (param.required) {
      return BlockError(
          block, absl::StatusCode::kInvalidArgument,
          absl::StrCat("Required ", what, " '", param.name, "' is missing"));
    } else {
      // diffusers: a None never overrides a value already gathered.
      if (!block_state.Contains(param.name)) {
        block_state.Set(param.name, c10::IValue());
      }
      return absl::OkStatus();
    }
  }
  if (!param.type_hint.Accepts(*value)) {
    return BlockError(block, absl::StatusCode::kInvalidArgument,
                      absl::StrCat(what, " '", param.name, "' expects ",
                                   param.type_hint.ToString(), ", got ",
                                   KindName(KindOf(*value))));
  }
  block_state.Set(param.name, *value);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BlockState> Block::GetBlockState(
    const PipelineState& state) const {
  const BlockSignature& sig = signature();
  BlockState block_state;
  block_state.Reserve(sig.inputs.size() + sig.intermediate_inputs.size());
  for (const InputParam& param : sig.inputs) {
    // Note [input resolution]
    // ~~~~~~~~~~~~~~~~~~~~~~~
    // An input that an earlier block produced is read from the
    // intermediates, the user's value otherwise. This is what makes a
    // composite's aggregated inputs ("the sub-blocks' inputs minus those an
    // earlier sub-block produces") true at run time, and it is how diffusers
    // behaves now that its PipelineState keeps one dict in which later
    // values replace earlier ones. The user's inputs themselves are never
    // changed.
    const c10::IValue* value = state.GetIntermediate(param.name);
    if (value == nullptr) value = state.GetInput(param.name);
    if (absl::Status s = AddParam(*this, param, value, "input", block_state);
        !s.ok()) {
      return s;
    }
  }
  for (const InputParam& param : sig.intermediate_inputs) {
    if (absl::Status s =
            AddParam(*this, param, state.GetIntermediate(param.name),
                     "intermediate input", block_state);
        !s.ok()) {
      return s;
    }
  }
  return block_state;
}

absl::Status Block::SetBlockState(PipelineState& state,
                                  const BlockState& block_state) const {
  const BlockSignature& sig = signature();
  for (const OutputParam& param : sig.intermediate_outputs) {
    const c10::IValue* value = block_state.Find(param.name);
    if (value == nullptr) {
      return BlockError(*this, absl::StatusCode::kInternal,
                        absl::StrCat("Intermediate output '", param.name,
                                     "' is missing in block state"));
    }
    state.SetIntermediate(param.name, *value);
  }
  // diffusers also writes back intermediate inputs the block replaced.
  for (const InputParam& param : sig.intermediate_inputs) {
    const c10::IValue* value = block_state.Find(param.name);
    if (value == nullptr || value->isNone()) continue;
    const c10::IValue* current = state.GetIntermediate(param.name);
    if (current == nullptr || !current->isSameIdentity(*value)) {
      state.SetIntermediate(param.name, *value);
    }
  }
  return absl::OkStatus();
}

std::string Block::Label() const {
  if (path_.empty()) return absl::StrCat("block '", type_name(), "'");
  return absl::StrCat("block '", path_, "' (", type_name(), ")");
}

void Block::AssignPath(std::string path) {
  const size_t slash = path.rfind('/');
  name_ = slash == std::string::npos ? path : path.substr(slash + 1);
  path_ = std::move(path);
}

BlockDescription Block::Describe() const {
  BlockDescription description{
      .name = name_,
      .path = path_,
      .type = std::string(type_name()),
      .kind = kind(),
      .model_name = std::string(model_name()),
      .description = this->description(),
      .signature = signature(),
      .blocks = {},
  };
  for (const SubBlock& sub : sub_blocks()) {
    description.blocks.push_back(sub.block->Describe());
  }
  return description;
}

absl::Status LoopStepBlock::Run(const Components&, PipelineState&,
                                RunContext&) const {
  return BlockError(*this, absl::StatusCode::kFailedPrecondition,
                    "a loop block runs only inside a loop wrapper "
                    "(LoopBlocks)");
}

absl::Status BlockError(const Block& block, absl::StatusCode code,
                        absl::string_view message) {
  absl::Status status(code, absl::StrCat(block.Label(), ": ", message));
  status.SetPayload(kBlockPathPayloadUrl, absl::Cord(block.path()));
  return status;
}

namespace internal {

absl::Status AttributeToBlockSlow(const Block& block, absl::Status status) {
  if (status.GetPayload(kBlockPathPayloadUrl).has_value()) return status;
  absl::Status attributed = BlockError(block, status.code(), status.message());
  status.ForEachPayload(
      [&attributed](absl::string_view url, const absl::Cord& payload) {
        attributed.SetPayload(url, payload);
      });
  return attributed;
}

}  // namespace internal

absl::Status AttributeToRun(absl::Status status) {
  if (!status.ok() && !status.GetPayload(kBlockPathPayloadUrl).has_value()) {
    status.SetPayload(kBlockPathPayloadUrl, absl::Cord());
  }
  return status;
}

std::optional<std::string> AttributedBlockPath(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kBlockPathPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

namespace {

// A fault (not the client's): its text, which may quote a module's source
// or a path of the machine that built it, goes to the server log; the
// client hears which block failed.
absl::Status InternalBlockError(const Block& block, absl::string_view what) {
  LOG(ERROR) << "block '" << block.path() << "' (" << block.type_name()
             << ") threw: " << what;
  return BlockError(block, absl::StatusCode::kInternal,
                    "internal error (the server log has the details)");
}

// Note [out of device memory]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A run too large for the device's memory (after the caching allocator
// freed what it cached and retried) is the client's to shrink or retry
// later, not a fault: RESOURCE_EXHAUSTED, with the allocation that failed.
// Its tensors are released as its state unwinds, and other runs go on.
// libtorch throws c10::OutOfMemoryError; through a TorchScript module it
// may arrive as a plain c10::Error carrying CUDA's text.
absl::Status OutOfDeviceMemory(const Block& block, absl::string_view what) {
  LOG(WARNING) << "block '" << block.path() << "' (" << block.type_name()
               << ") ran out of device memory: " << what;
  // "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; ...": up to
  // the device's own figures.
  absl::string_view head = what.substr(0, what.find_first_of("(\n"));
  return BlockError(
      block, absl::StatusCode::kResourceExhausted,
      absl::StrCat("out of device memory: ", absl::StripAsciiWhitespace(head)));
}

bool IsOutOfMemory(absl::string_view what) {
  return absl::StrContains(what, "out of memory");
}

}  // namespace

absl::Status StatusFromCurrentException(const Block& block) {
  try {
    throw;
  } catch (const c10::IndexError& e) {
    return BlockError(block, absl::StatusCode::kInvalidArgument,
                      e.what_without_backtrace());
  } catch (const c10::ValueError& e) {
    return BlockError(block, absl::StatusCode::kInvalidArgument,
                      e.what_without_backtrace());
  } catch (const c10::TypeError& e) {
    return BlockError(block, absl::StatusCode::kInvalidArgument,
                      e.what_without_backtrace());
  } catch (const c10::OutOfMemoryError& e) {
    return OutOfDeviceMemory(block, e.what_without_backtrace());
  } catch (const c10::Error& e) {
    if (IsOutOfMemory(e.what_without_backtrace())) {
      return OutOfDeviceMemory(block, e.what_without_backtrace());
    }
    return InternalBlockError(block, e.what());
  } catch (const std::invalid_argument& e) {
    return BlockError(block, absl::StatusCode::kInvalidArgument, e.what());
  } catch (const std::bad_alloc& e) {
    return BlockError(block, absl::StatusCode::kResourceExhausted,
                      absl::StrCat("out of memory: ", e.what()));
  } catch (const std::exception& e) {
    return InternalBlockError(block, e.what());
  } catch (...) {
    return InternalBlockError(block, "unknown exception");
  }
}

absl::Status RunBlock(const Block& block, const Components& components,
                      PipelineState& state, RunContext& context) {
  auto run = [&] { return block.Run(components, state, context); };
  if (context.timer == nullptr || block.kind() != BlockKind::kBlock) {
    return InvokeGuarded(block, run);
  }
  // A leaf: composites are timed through their leaves and iterations.
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = InvokeGuarded(block, run);
  context.timer->OnBlockTimed(block, std::chrono::steady_clock::now() - start);
  return status;
}

absl::Status CheckExpectedComponents(const Block& root,
                                     const Components& components,
                                     std::string* role) {
  // Children first, so that an error names the leaf that Gets the component
  // rather than a composite that merely aggregates its declaration.
  for (const SubBlock& sub : root.sub_blocks()) {
    RETURN_IF_ERROR(CheckExpectedComponents(*sub.block, components, role));
  }
  for (const ComponentSpec& spec : root.signature().expected_components) {
    if (absl::Status s = CheckComponent(spec, components, root.Label());
        !s.ok()) {
      if (role != nullptr) *role = spec.role;
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace loopserve
