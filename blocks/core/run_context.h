// What a run carries besides its state: the observer that watches every loop
// iteration (and may stop the loop), and the loop index handed to loop blocks.
//
// Blocks know nothing of gRPC. The streaming service plugs in through
// IterationObserver: after each LoopStep the loop wrapper calls OnIteration
// with the shared BlockState; the observer copies what its client asked for
// and returns OK, or returns a non-OK status (CANCELLED, DEADLINE_EXCEEDED,
// ...) to end the loop at that step boundary with that status.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>

#include "absl/status/status.h"

namespace loopserve {

class Block;
class BlockState;
class LoopBlocks;

// What a loop wrapper passes to its loop blocks each iteration, diffusers'
// `loop_step(components, block_state, i=i, t=t)`.
struct LoopIndex {
  // 0-based iteration number.
  int64_t i = 0;
  // Iterations this loop will run; 0 when unknown.
  int64_t total = 0;
  // The loop variable, e.g. the timestep of a denoising loop; undefined when
  // the loop has none.
  at::Tensor t{};
};

// One finished iteration, as the observer sees it. Every reference is valid
// only during the OnIteration call.
struct LoopIteration {
  // The loop wrapper that ran it: its path() names the loop, its
  // signature().intermediate_outputs lists what `state` may be read for.
  const LoopBlocks& loop;
  const LoopIndex& index;
  // The BlockState shared by the loop's blocks, after this iteration.
  const BlockState& state;
};

// Watches loop iterations. Called on the thread that runs the pipeline,
// synchronously, once per iteration of every loop; keep it short, since the
// loop waits for it.
class IterationObserver {
 public:
  virtual ~IterationObserver() = default;

  // Return OK to continue, anything else to end the loop now. The status is
  // returned from the run unchanged.
  virtual absl::Status OnIteration(const LoopIteration& iteration) = 0;
};

// Times a run's blocks and iterations: how the server's metrics see inside a
// run. Called on the run's thread, synchronously, so keep it cheap: the
// server's RunRecorder adds each duration to a per-run histogram and
// publishes now and then (Note [metrics off the loop] in engine/metrics.h).
class BlockTimer {
 public:
  using Duration = std::chrono::steady_clock::duration;
  virtual ~BlockTimer() = default;

  // Whether to time the iteration of `loop` about to run (its loop blocks
  // and then the iteration). A timer may sample fast loops rather than read
  // the clock around every nanosecond-scale block.
  virtual bool TimeIteration(const LoopBlocks& loop) = 0;
  // A leaf block finished: a plain block run by RunBlock, or one loop
  // block's step of a timed iteration.
  virtual void OnBlockTimed(const Block& block, Duration elapsed) = 0;
  // A timed iteration of `loop` finished: its loop blocks and its observer.
  virtual void OnIterationTimed(const LoopBlocks& loop, Duration elapsed) = 0;
};

// Per-run context threaded through Block::Run. Owned by the caller of the
// run; outlives it.
struct RunContext {
  // Not owned; may be null.
  IterationObserver* observer = nullptr;
  // Where the run's tensors live: the server's --device. Blocks that create
  // tensors (noise, latents) create them here.
  c10::Device device = c10::kCPU;
  // Not owned; may be null (nothing is timed then).
  BlockTimer* timer = nullptr;
};

}  // namespace loopserve
