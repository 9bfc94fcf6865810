// BatchedDenoiser: one denoiser forward for the model calls of many runs.
//
//   // A denoiser factory (RegisterModels) wraps what it made:
//   return BatchAcrossRuns(std::move(denoiser), context);
//   // A block calls it as any Denoiser; nothing else changes:
//   ASSIGN_OR_RETURN(at::Tensor eps, denoiser->Predict(x, t, conditioning));
//
// Note [step batching]
// ~~~~~~~~~~~~~~~~~~~~
// Each run owns its loop (a worker thread executes it), and a denoising
// loop calls its model once per step. Calls from different runs that are
// compatible — the same denoiser, the same sample shape after the batch
// dimension and dtype, conditioning of the same dtypes and shapes after the
// batch dimension, and the very same tensors for shared (unbatched)
// arguments — join one forward: samples, timesteps ([B], each run's own:
// runs at different steps and with different samplers share a batch) and
// batched conditioning are concatenated along dimension 0, and each run
// gets its rows of the result back and goes on with its own sampler,
// schedule, guidance scale and generator. A guided run's call already holds
// its two halves.
//
// When a batch launches: up to `lanes` batches of one denoiser run at once
// (Triton's model instances: a CPU runs small forwards side by side on its
// cores, a GPU is best fed one large batch at a time). A call waits (on a
// condition variable, holding no CPU) for a free lane. With more than one
// lane free it launches at once: waiting would leave a lane idle. On the
// last free lane it waits until every run that made a compatible call
// before (a member, known through the thread's RunScope) and is not in a
// running batch has arrived with its next call, or its rows reach
// max_batch_size, or `window` has passed since the oldest waiting call
// arrived. The thread that sees it launches the batch for everyone, taking
// waiting calls oldest first up to max_batch_size rows; calls that arrive
// meanwhile gather for the next lane to free. A run leaves when it ends
// (its RunScope ends): nobody waits for a finished or cancelled run. A call
// of max_batch_size rows or more runs alone.
//
// When a batched forward fails, each call is retried alone, so one run's
// bad input fails that run only.
//
// Exactness: each row of a batch is what the unbatched call computes, up
// to the reassociation a model's kernels do at another batch size (none for
// the elementwise Gaussian-mixture denoiser: bit for bit). Timesteps of
// different dtypes (DDIM's int64, Euler's float) are promoted to one.
//
// Thread-safety: Predict is safe from any number of threads, as every
// Denoiser's.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/component_registry.h"
#include "blocks/core/run_scope.h"
#include "blocks/diffusion/denoisers.h"

namespace loopserve {

class BatchedDenoiser final : public Denoiser {
 public:
  // Batches `inner`'s calls under `options` (max_batch_size > 1); `name`:
  // the component's, for metrics.
  BatchedDenoiser(std::shared_ptr<const Denoiser> inner,
                  BatchingOptions options, std::string name);
  ~BatchedDenoiser() override;

  absl::string_view type_name() const override { return inner_->type_name(); }
  std::span<const ModelArgument> conditioning() const override {
    return inner_->conditioning();
  }
  std::span<const int64_t> sample_shape() const override {
    return inner_->sample_shape();
  }
  // Waits for its batch, as Note [step batching] says; the inner model's
  // result for this call's rows, or its error.
  absl::StatusOr<at::Tensor> Predict(
      const at::Tensor& sample, const at::Tensor& timestep,
      std::span<const at::Tensor> conditioning) const override;

 private:
  class Batcher;
  std::shared_ptr<const Denoiser> inner_;
  std::shared_ptr<Batcher> batcher_;
};

// `denoiser` batched under `context.batching`, named `context.name`; itself
// when max_batch_size is 1 or less.
std::shared_ptr<const Denoiser> BatchAcrossRuns(
    std::shared_ptr<const Denoiser> denoiser, const ComponentContext& context);

}  // namespace loopserve
