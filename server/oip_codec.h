// OipCodec: loopserve's messages in the Open Inference Protocol's terms
// (proto/inference/grpc_service.proto), for the OIP front
// (server/oip_service.h). Pure functions over protos: no gRPC, no torch.
//
// A pipeline is a model. Its inputs are OIP input tensors; a scalar input
// (int, double, bool, string) is a [1]-shaped tensor (INT64, FP64, BOOL,
// BYTES) and a tensor input has the datatype the client gives. Its outputs
// are its iteration values (streamed, ModelStreamInfer) and its final
// values, each a tensor; scalars are [1]-shaped, strings BYTES (Triton's
// 4-byte little-endian length before each element).
//
// Request parameters carry loopserve's stream options:
//   every (int64), values (string, comma-separated iteration values),
//   backpressure ("block" or "latest"), preview (bool).
// Other parameters are ignored, as Triton ignores those its backends do not
// read (tritonclient sends some of its own). The request's `outputs` choose
// the final outputs and, unless `values` is given, the streamed values.
// Responses carry parameters: run_id (string); for an iteration, iteration
// and total (int64), loop (string) and dropped_before (int64); for the
// result, triton_final_response (bool, true), iterations (int64) and
// queue_ms, run_ms (double).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "inference/grpc_service.pb.h"
#include "loopserve/v1/loopserve.pb.h"

namespace loopserve {

// The RunRequest that `request` asks for, against the pipeline `pipeline`
// describes; INVALID_ARGUMENT naming the input or parameter at fault.
absl::StatusOr<v1::RunRequest> ToRunRequest(
    const inference::ModelInferRequest& request,
    const v1::PipelineDescription& pipeline);

// Appends `value` to `response` as an output named `name`, its contents in
// raw_output_contents.
absl::Status AppendOutput(const std::string& name, const v1::Value& value,
                          inference::ModelInferResponse& response);

// The model metadata of the pipeline `pipeline` describes.
inference::ModelMetadataResponse ToModelMetadata(
    const v1::PipelineDescription& pipeline);

// Appends `iteration`'s values (and its preview, as the BYTES output
// "preview_png") and its place in the loop to `response`.
absl::Status AppendIteration(const v1::Iteration& iteration,
                             inference::ModelInferResponse& response);

// Appends `result`'s outputs and stats to `response`, and marks it final.
absl::Status AppendResult(const v1::RunResult& result,
                          inference::ModelInferResponse& response);

// The OIP tensor type of a loopserve param type ("int", "int | double",
// "tensor", ...): datatype and shape.
inference::ModelMetadataResponse::TensorMetadata ToTensorMetadata(
    const v1::ParamSpec& param);

}  // namespace loopserve
