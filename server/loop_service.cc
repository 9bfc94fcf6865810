#include "server/loop_service.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/grpc_handoff.h"
#include "server/grpc_status.h"
#include "server/run_event_wire.h"

namespace loopserve {
namespace {

// One Run call: the run's RunEventWriter. Note [finishing] in
// engine/run_stream.h says why it outlives every call the run makes into
// it; the engine counts and logs the call's outcome before Finish.
class RunReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                         public RunEventWriter {
 public:
  // `principal`: who the call authenticated as (empty when the server
  // authenticates no one), or why it is refused.
  RunReactor(Engine& engine, grpc::CallbackServerContext* context,
             const grpc::ByteBuffer& raw_request,
             const absl::StatusOr<std::string>& principal)
      : engine_(engine), context_(context) {
    RunClient client{.peer = context->peer()};
    if (!principal.ok()) {
      engine_.Refuse(principal.status(), "", "", client);
      Finish(principal.status());
      return;
    }
    if (!raw_request.Valid()) {
      // The stream ended before its one request message: the client gave
      // up (gRPC's clients send the message with the call, so only a
      // cancel or a passed deadline ends the stream before it).
      const absl::Status status = CancelStatus("before its request arrived");
      engine_.Refuse(status, "", "", client);
      Finish(status);
      return;
    }
    auto request = std::make_shared<v1::RunRequest>();
    grpc::ByteBuffer copy(raw_request);  // shares the slices
    if (!grpc::SerializationTraits<v1::RunRequest>::Deserialize(&copy,
                                                                request.get())
             .ok()) {
      const absl::Status status =
          absl::InvalidArgumentError("the RunRequest does not parse");
      engine_.Refuse(status, "", "", client);
      Finish(status);
      return;
    }
    client.principal = *principal;
    absl::StatusOr<std::shared_ptr<loopserve::Run>> run =
        engine_.StartRun(std::move(request), this, std::move(client));
    if (!run.ok()) {
      Finish(run.status());
      return;
    }
    run_ = *std::move(run);
  }

  void StartWrite(std::shared_ptr<const v1::RunEvent> event) override {
    SerializeRunEvent(event, &buffer_);
    HandOffToGrpc(this);
    ServerWriteReactor::StartWrite(&buffer_);
  }
  void Finish(const absl::Status& status) override {
    finished_ = status;
    HandOffToGrpc(this);
    ServerWriteReactor::Finish(ToGrpcStatus(status));
  }
  // Note [stalled readers]: the write in flight then fails, and the run,
  // cancelled already, finishes.
  void Abort() override { context_->TryCancel(); }

  void OnWriteDone(bool ok) override {
    TakeOverFromGrpc(this);
    buffer_.Clear();  // our references to the event's slices
    // A failed write: the call is gone, often before OnCancel says why.
    if (!ok) run_->Cancel(CancelStatus("before the run finished"));
    run_->OnWriteDone(ok);
  }

  void OnCancel() override {
    TakeOverFromGrpc(this);
    if (run_ != nullptr) run_->Cancel(CancelStatus("before the run finished"));
  }

  void OnDone() override {
    TakeOverFromGrpc(this);
    if (run_ != nullptr) engine_.Release(run_, WhatTheClientSaw());
    delete this;
  }

 private:
  absl::Status CancelStatus(absl::string_view when) const {
    return loopserve::CancelStatus(*context_, when);
  }

  // Our status, unless the call was cancelled before it reached the client:
  // then the client's own code (a run that ends at the instant its client
  // gives up finishes OK here, yet its client saw CANCELLED).
  absl::Status WhatTheClientSaw() const {
    const bool ours_is_a_cancel =
        finished_.code() == absl::StatusCode::kCancelled ||
        finished_.code() == absl::StatusCode::kDeadlineExceeded;
    return context_->IsCancelled() && !ours_is_a_cancel
               ? CancelStatus("before the run's status reached it")
               : finished_;
  }

  Engine& engine_;
  grpc::CallbackServerContext* const context_;
  std::shared_ptr<loopserve::Run> run_;
  // The event being written; valid until OnWriteDone.
  grpc::ByteBuffer buffer_;
  // What Finish sent.
  absl::Status finished_;
};

}  // namespace

bool LoopService::Admit(grpc::CallbackServerContext& context,
                        grpc::ServerUnaryReactor& reactor) {
  const absl::StatusOr<std::string> principal = auth_.Authenticate(context);
  if (!principal.ok()) reactor.Finish(ToGrpcStatus(principal.status()));
  return principal.ok();
}

grpc::ServerUnaryReactor* LoopService::ListPipelines(
    grpc::CallbackServerContext* context, const v1::ListPipelinesRequest*,
    v1::ListPipelinesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!Admit(*context, *reactor)) return reactor;
  absl::StatusOr<v1::ListPipelinesResponse> pipelines = engine_.ListPipelines();
  if (pipelines.ok()) *response = *std::move(pipelines);
  reactor->Finish(ToGrpcStatus(pipelines.status()));
  return reactor;
}

grpc::ServerUnaryReactor* LoopService::DescribePipeline(
    grpc::CallbackServerContext* context,
    const v1::DescribePipelineRequest* request,
    v1::PipelineDescription* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!Admit(*context, *reactor)) return reactor;
  const absl::StatusOr<const Pipeline*> pipeline =
      engine_.FindPipeline(request->name());
  if (!pipeline.ok()) {
    reactor->Finish(ToGrpcStatus(pipeline.status()));
    return reactor;
  }
  *response = (*pipeline)->description_proto;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* LoopService::Run(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  auto* reactor =
      new RunReactor(engine_, context, *request, auth_.Authenticate(*context));
  HandOffToGrpc(reactor);
  return reactor;
}

}  // namespace loopserve
