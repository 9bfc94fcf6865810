// OipService: the Open Inference Protocol's gRPC service
// (inference.GRPCInferenceService, proto/inference/grpc_service.proto) on
// loopserve's main port, over the same Engine as LoopService: a Triton or
// KServe client runs a pipeline as a model. server/oip_codec.h maps the
// messages.
//
//   ServerLive, ServerReady    open, as probes are (ready: serving, not
//                              loading or draining)
//   ModelReady, ModelMetadata  a pipeline, version "" or "1"
//   ModelInfer                 one response: the final outputs
//   ModelStreamInfer           Triton's decoupled streaming: per request,
//                              one response per streamed iteration, then the
//                              final outputs with triton_final_response;
//                              many requests on one stream, told apart by
//                              `id`; a request's error comes back in
//                              error_message and the stream goes on;
//                              cancelling the call cancels its runs; a
//                              message that does not parse gets an error
//                              response and ends the stream with
//                              INVALID_ARGUMENT
//
// Every call but the probes is authenticated as LoopService's are
// (server/auth.h). Validation, limits, metrics and logs are the engine's.
//
// Thread-safety: all methods from any thread; the engine, the authenticator
// and `ready` outlive the service.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "engine/engine.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/auth.h"

namespace loopserve {

namespace oip_internal {
using Grpc = inference::GRPCInferenceService;
// CallbackService, with the two inference methods raw.
using Base = Grpc::WithCallbackMethod_ServerLive<
    Grpc::WithCallbackMethod_ServerReady<Grpc::WithCallbackMethod_ModelReady<
        Grpc::WithCallbackMethod_ServerMetadata<
            Grpc::WithCallbackMethod_ModelMetadata<
                Grpc::WithRawCallbackMethod_ModelInfer<
                    Grpc::WithRawCallbackMethod_ModelStreamInfer<
                        Grpc::Service>>>>>>>;
}  // namespace oip_internal

class OipService final : public oip_internal::Base {
 public:
  OipService(Engine& engine, Authenticator& auth,
             const std::atomic<bool>& ready)
      : engine_(engine), auth_(auth), ready_(ready) {}

  grpc::ServerUnaryReactor* ServerLive(
      grpc::CallbackServerContext* context,
      const inference::ServerLiveRequest* request,
      inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(
      grpc::CallbackServerContext* context,
      const inference::ServerReadyRequest* request,
      inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(
      grpc::CallbackServerContext* context,
      const inference::ModelReadyRequest* request,
      inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(
      grpc::CallbackServerContext* context,
      const inference::ServerMetadataRequest* request,
      inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(
      grpc::CallbackServerContext* context,
      const inference::ModelMetadataRequest* request,
      inference::ModelMetadataResponse* response) override;
  // Raw: their messages are parsed here (Note [raw OIP methods]).
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ModelStreamInfer(
      grpc::CallbackServerContext* context) override;

 private:
  Engine& engine_;
  Authenticator& auth_;
  const std::atomic<bool>& ready_;
};

// The pipeline a model name and version name; NOT_FOUND for any version
// but "" and "1" (a pipeline has one).
absl::StatusOr<const Pipeline*> FindModel(const Engine& engine,
                                          absl::string_view name,
                                          absl::string_view version);

}  // namespace loopserve
