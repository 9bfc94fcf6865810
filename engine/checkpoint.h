// Checkpoints: a run's state after an iteration, as bytes a client keeps and
// sends back (RunRequest.resume_from) to continue the run, bit for bit, on
// any replica with the same configuration and key, or to fork it.
//
//   // Making them (a run with StreamOptions.checkpoints):
//   CheckpointWriter writer(pipeline, key, run_id, inputs, device);
//   ASSIGN_OR_RETURN(std::string bytes, writer.Make(iteration, state));
//
//   // Resuming (Engine::StartRun, then the run's thread):
//   ASSIGN_OR_RETURN(v1::Checkpoint checkpoint,
//   key.Open(request.resume_from())); ASSIGN_OR_RETURN(ResumeSpec spec,
//                    PrepareResume(pipeline, std::move(checkpoint), request,
//                                  device));
//   ... DecodeInputs(request, spec.resolved, ...) → state
//   RETURN_IF_ERROR(RestoreCheckpoint(spec, pipeline, limits, state));
//   RunBlock(*pipeline.root, ...);   // continues after spec's iteration
//
// Note [checkpoint format]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// proto/loopserve/v1/checkpoint.proto: a SignedCheckpoint (format version,
// body, HMAC-SHA256 of the body under the server's key) around a Checkpoint:
// the pipeline's name and fingerprint, the device type, the loop and the
// iteration just done, the run's inputs (as the request gave and the server
// resolved them), the intermediates the blocks before the loop made, and the
// loop's carried values (its intermediate outputs). Every kind of value in a
// block state has a form: tensors (with whether they were on the run's
// device), scalars, strings, lists, dicts, CPU generators (their state),
// and components' RunStates (blocks/core/run_state.h), restored by the
// component bound where they came from. What the loop keeps in its state
// without declaring it is a cache and is left out (Note [resuming a loop]
// in blocks/core/loop.h).
//
// Reading one checks, in order: the version, the MAC (a flipped byte or
// another key: INVALID_ARGUMENT), the pipeline (FAILED_PRECONDITION), its
// fingerprint and device type (FAILED_PRECONDITION), then every value's
// structure, with the server's limits on tensors; only inputs must also be
// finite, since the state a server computed may hold an infinity (a
// solver's log-SNR at σ = 0).
//
// Thread-safety: CheckpointKey is immutable and safe from any thread; a
// CheckpointWriter belongs to one run.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blocks/core/run_context.h"
#include "blocks/core/state.h"
#include "engine/checkpoint_key.h"
#include "engine/pipeline_catalog.h"
#include "engine/tensor_codec.h"
#include "loopserve/v1/checkpoint.pb.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

// Makes a run's checkpoints.
class CheckpointWriter {
 public:
  // `inputs`: the run's, as the request gave them and the server resolved
  // them (both maps); `device`: the run's.
  CheckpointWriter(const Pipeline& pipeline, const CheckpointKey& key,
                   std::string run_id,
                   google::protobuf::Map<std::string, v1::Value> inputs,
                   c10::Device device);

  // The signed checkpoint after `iteration`, of the run whose state is
  // `state`. FAILED_PRECONDITION naming a value that has no checkpoint
  // form.
  absl::StatusOr<std::string> Make(const LoopIteration& iteration,
                                   const PipelineState& state);

 private:
  const CheckpointKey& key_;
  // Note [checkpoint encoding]: the serialized Checkpoint fields that stay
  // the same during one loop (the pipeline, the inputs, the intermediates
  // that are plain values): a checkpoint is these bytes followed by the
  // iteration's own fields (protobuf merges concatenated messages).
  v1::Checkpoint fixed_;
  std::string fixed_loop_;
  std::string fixed_bytes_;
};

// What a resumed run starts from: the checkpoint, and what its request adds.
struct ResumeSpec {
  v1::Checkpoint checkpoint;
  // The checkpoint's inputs the request does not replace: the run's
  // resolved inputs (RunStarted.resolved_inputs).
  google::protobuf::Map<std::string, v1::Value> resolved;
  // The inputs the request changes, and what the loop carries on
  // (PlanResume): LoopResume's.
  absl::flat_hash_set<std::string> changed;
  absl::flat_hash_set<std::string> carried_names;
};

// Checks `checkpoint` (opened) against `pipeline` and the server, and plans
// the resume `request` asks for: FAILED_PRECONDITION for another pipeline,
// another configuration of it or another device type; INVALID_ARGUMENT
// naming the inputs a fork may not change (PlanResume).
absl::StatusOr<ResumeSpec> PrepareResume(const Pipeline& pipeline,
                                         v1::Checkpoint checkpoint,
                                         const v1::RunRequest& request,
                                         c10::Device device);

// Puts the checkpoint's intermediates and carried values into `state` (whose
// inputs are decoded already) and marks where the loop continues.
// INVALID_ARGUMENT naming a value that does not decode.
absl::Status RestoreCheckpoint(const ResumeSpec& spec, const Pipeline& pipeline,
                               const DecodeLimits& limits, c10::Device device,
                               PipelineState& state);

}  // namespace loopserve
