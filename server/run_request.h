// PrepareRun: validates a RunRequest against its pipeline, before anything is
// queued, and turns it into the run's PipelineState and stream selection.
//
// Every error is INVALID_ARGUMENT with a message that names the pipeline and
// the field: an unknown input (a typo must not silently run on defaults), a
// missing required input, a value of the wrong kind, a bad tensor (unknown
// datatype, negative dimension, bytes that do not match the shape, above
// --max_tensor_bytes), an iteration count above --max_iterations, and
// stream.values or outputs naming something the pipeline does not produce.
//
// Thread-safety: a pure function of its arguments.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "blocks/core/state.h"
#include "loopserve/v1/loopserve.pb.h"
#include "server/pipeline_catalog.h"
#include "server/run_stream.h"
#include "server/tensor_codec.h"

namespace loopserve {

struct RunLimits {
  // Largest value of an input that counts iterations (num_steps).
  int64_t max_iterations = 1'000'000;
  DecodeLimits decode;
};

struct PreparedRun {
  // Inputs decoded onto the CPU; the executor moves tensors to the device.
  PipelineState state;
  StreamSelection selection;
};

absl::StatusOr<PreparedRun> PrepareRun(const Pipeline& pipeline,
                                       const v1::RunRequest& request,
                                       const RunLimits& limits);

}  // namespace loopserve
