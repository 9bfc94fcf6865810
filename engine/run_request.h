// ValidateRun: checks a RunRequest against its pipeline before anything is
// queued; DecodeInputs: turns its inputs into the run's PipelineState, on the
// executor thread.
//
// ValidateRun works on the wire form and copies nothing, so a gRPC thread
// spends no time on tensor bytes; DecodeInputs makes the one copy of each
// input later. Every error is INVALID_ARGUMENT with a message that names the
// pipeline and the field: an unknown input (a typo must not silently run on
// defaults), a missing required input, a value of the wrong kind, a bad
// tensor (unknown datatype, more dimensions than --max_tensor_rank, a
// negative dimension, bytes that do not match the shape, above
// --max_tensor_elements or --max_tensor_bytes), a string above
// --max_string_bytes, a non-finite double, a request_id above 128 bytes, an
// input given beside one that decides it (InputParam::excluded_by), an
// iteration count outside [0, --max_iterations], and stream.values or
// outputs naming something the pipeline does not produce. A client's text
// in a message is quoted and cut short (QuoteUserText). DecodeInputs adds
// the checks that read the bytes: NaN or Inf, BOOL bytes other than 0/1.
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "blocks/core/state.h"
#include "engine/pipeline_catalog.h"
#include "engine/run_stream.h"
#include "engine/tensor_codec.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

struct RunLimits {
  // Largest value of an input that counts iterations (num_steps).
  int64_t max_iterations = 1'000'000;
  // Longest request_id accepted, in bytes.
  int64_t max_request_id_bytes = 128;
  DecodeLimits decode;
};

// What the client asked to receive, or the error that refuses the request.
absl::StatusOr<StreamSelection> ValidateRun(const Pipeline& pipeline,
                                            const v1::RunRequest& request,
                                            const RunLimits& limits);

// The inputs `request` leaves out that the server fills: each input's
// default, and a random value for one drawn when absent (a seed, in
// [0, 2^32)). What RunStarted.resolved_inputs reports.
google::protobuf::Map<std::string, v1::Value> ResolveInputs(
    const Pipeline& pipeline, const v1::RunRequest& request);

// The request's inputs and `resolved` (ResolveInputs), decoded (one copy
// each) onto `device`. Call only for a request ValidateRun accepted.
absl::StatusOr<PipelineState> DecodeInputs(
    const v1::RunRequest& request,
    const google::protobuf::Map<std::string, v1::Value>& resolved,
    const DecodeLimits& limits, c10::Device device);

}  // namespace loopserve
