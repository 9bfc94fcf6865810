#include "blocks/examples/seed_blocks.h"

#include <ATen/ATen.h>

#include <limits>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

// The largest value of an integral scalar type.
int64_t MaxOf(at::ScalarType type) {
  switch (type) {
    case at::kByte:
      return std::numeric_limits<uint8_t>::max();
    case at::kChar:
      return std::numeric_limits<int8_t>::max();
    case at::kShort:
      return std::numeric_limits<int16_t>::max();
    case at::kInt:
      return std::numeric_limits<int32_t>::max();
    default:
      return std::numeric_limits<int64_t>::max();
  }
}

}  // namespace

std::vector<InputParam> LoopWrapper::loop_inputs() const {
  return {{.name = "num_steps",
           .type_hint = TypeHint::Int(),
           .required = true,
           .description = "Number of iterations to run",
           .iteration_count = true}};
}

absl::Status LoopWrapper::Run(const Components& components,
                              PipelineState& state, RunContext& context) const {
  ASSIGN_OR_RETURN(BlockState block_state, GetBlockState(state));
  ASSIGN_OR_RETURN(const int64_t num_steps,
                   block_state.Get<int64_t>("num_steps"));
  if (num_steps < 0) {
    return BlockError(
        *this, absl::StatusCode::kInvalidArgument,
        absl::StrCat("input 'num_steps' must be >= 0, got ", num_steps));
  }
  for (int64_t i = 0; i < num_steps; ++i) {
    RETURN_IF_ERROR(LoopStep(components, block_state,
                             {.i = i, .total = num_steps}, context));
  }
  return SetBlockState(state, block_state);
}

std::vector<InputParam> LoopBlock::inputs() const {
  return {
      {.name = "x",
       .type_hint = TypeHint::Int() | TypeHint::Double() | TypeHint::Tensor(),
       .required = true,
       .description = "The value to increment"}};
}

std::vector<OutputParam> LoopBlock::intermediate_outputs() const {
  return {
      {.name = "x",
       .type_hint = TypeHint::Int() | TypeHint::Double() | TypeHint::Tensor(),
       .description = "x + 1 after every iteration"}};
}

absl::Status LoopBlock::RunStep(const Components&, BlockState& state,
                                const LoopIndex&) const {
  c10::IValue* x = state.Find("x");
  if (x == nullptr) {
    return absl::FailedPreconditionError("block state has no value 'x'");
  }
  if (x->isInt()) {
    // Python's ints do not wrap; int64's would, silently.
    if (x->toInt() == std::numeric_limits<int64_t>::max()) {
      return absl::OutOfRangeError("x + 1 overflows int64");
    }
    *x = x->toInt() + 1;
  } else if (x->isDouble()) {
    *x = x->toDouble() + 1.0;
  } else if (x->isTensor()) {
    // Note [out-of-place x]
    // ~~~~~~~~~~~~~~~~~~~~~
    // Python's `x += 1` adds in place. Here a new tensor replaces x: the
    // first iteration's x is the user's input tensor, which blocks must not
    // change, and an observer may keep an earlier iteration's tensor for a
    // later copy off the device.
    const at::Tensor& t = x->toTensor();
    if (at::isIntegralType(t.scalar_type(), /*includeBool=*/false) &&
        t.numel() > 0 && t.max().item<int64_t>() == MaxOf(t.scalar_type())) {
      return absl::OutOfRangeError(
          absl::StrCat("x + 1 overflows ", c10::toString(t.scalar_type())));
    }
    *x = t.add(1);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "x must be an int, double or tensor, got ", KindName(KindOf(*x))));
  }
  return absl::OkStatus();
}

absl::Status RegisterSeedBlocks(BlockRegistry& registry) {
  RETURN_IF_ERROR(registry.Register<LoopWrapper>());
  return registry.Register<LoopBlock>();
}

absl::StatusOr<std::unique_ptr<Block>> MakeSeedLoop(
    const BlockRegistry& registry) {
  ASSIGN_OR_RETURN(
      std::unique_ptr<LoopWrapper> loop,
      FromBlocks<LoopWrapper>(registry, {{"block1", "LoopBlock"}}));
  loop->SetName(std::string(kSeedLoopName));
  return loop;
}

absl::StatusOr<std::unique_ptr<Block>> MakeSeedLoop2(
    const BlockRegistry& registry) {
  ASSIGN_OR_RETURN(std::unique_ptr<LoopWrapper> loop,
                   FromBlocks<LoopWrapper>(
                       registry, {{"block1", std::make_unique<LoopBlock>()},
                                  {"block2", "LoopBlock"}}));
  loop->SetName(std::string(kSeedLoop2Name));
  return loop;
}

}  // namespace loopserve
