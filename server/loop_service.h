// LoopService: the loopserve.v1.LoopPipelineService, on gRPC's callback
// API: the gRPC front of the run engine (engine/engine.h).
//
// ListPipelines and DescribePipeline answer from the engine's catalog. Run
// hands the request to Engine::StartRun and streams the run's events
// through a RunReactor (one ServerWriteReactor per call), which writes them
// with the zero-copy encoder (run_event_wire.h) and tells the run when the
// client cancels or its deadline passes. Until the engine serves, every
// call gets UNAVAILABLE. Nothing here blocks a gRPC thread, and no loop runs
// on one; validation, limits, metrics and logs are the engine's.
//
// Every call is first authenticated (server/auth.h): UNAUTHENTICATED, and
// counted, when it must not go on.
//
// Thread-safety: all methods may be called from any thread. The engine
// and the authenticator must outlive the service.
#pragma once

#include <grpcpp/grpcpp.h>

#include "engine/engine.h"
#include "loopserve/v1/loopserve.grpc.pb.h"
#include "server/auth.h"

namespace loopserve {

// Run is a raw method: its events go out as ByteBuffers that reference
// tensor bytes instead of copying them (Note [zero-copy tensors]).
class LoopService final
    : public v1::LoopPipelineService::WithRawCallbackMethod_Run<
          v1::LoopPipelineService::CallbackService> {
 public:
  LoopService(Engine& engine, Authenticator& auth)
      : engine_(engine), auth_(auth) {}

  grpc::ServerUnaryReactor* ListPipelines(
      grpc::CallbackServerContext* context,
      const v1::ListPipelinesRequest* request,
      v1::ListPipelinesResponse* response) override;
  grpc::ServerUnaryReactor* DescribePipeline(
      grpc::CallbackServerContext* context,
      const v1::DescribePipelineRequest* request,
      v1::PipelineDescription* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Run(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;

 private:
  // Whether a unary call may go on; if not, `reactor` is finished with
  // UNAUTHENTICATED.
  bool Admit(grpc::CallbackServerContext& context,
             grpc::ServerUnaryReactor& reactor);

  Engine& engine_;
  Authenticator& auth_;
};

}  // namespace loopserve
