#include "server/oip_service.h"

#include <atomic>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/grpc_handoff.h"
#include "server/grpc_status.h"
#include "server/oip_codec.h"
#include "server/run_handle.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

// Note [raw OIP methods]
// ~~~~~~~~~~~~~~~~~~~~~~
// ModelInfer and ModelStreamInfer take their messages as bytes and parse
// them here: when gRPC parses, a message that does not parse ends a unary
// call with UNIMPLEMENTED and an empty message, and a stream with OK, its
// later requests dropped unsaid. Parsed here, the first is INVALID_ARGUMENT
// saying so, and the second an error response, then the stream's end with
// INVALID_ARGUMENT once its runs are done.

// `buffer` parsed as a ModelInferRequest; INVALID_ARGUMENT naming `what`.
absl::StatusOr<ModelInferRequest> ParseRequest(const grpc::ByteBuffer& buffer,
                                               absl::string_view what) {
  ModelInferRequest request;
  grpc::ByteBuffer copy(buffer);  // shares the slices; Deserialize takes it
  if (!grpc::SerializationTraits<ModelInferRequest>::Deserialize(&copy,
                                                                 &request)
           .ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " does not parse as an inference.ModelInferRequest"));
  }
  return request;
}

// A message's wire bytes.
template <typename Message>
grpc::ByteBuffer Serialized(const Message& message) {
  grpc::ByteBuffer buffer;
  bool own_buffer;
  (void)grpc::SerializationTraits<Message>::Serialize(message, &buffer,
                                                      &own_buffer);
  return buffer;
}

// The RunRequest of one OIP request; NOT_FOUND or INVALID_ARGUMENT.
absl::StatusOr<std::shared_ptr<v1::RunRequest>> Translate(
    const Engine& engine, const ModelInferRequest& request) {
  ASSIGN_OR_RETURN(
      const Pipeline* pipeline,
      FindModel(engine, request.model_name(), request.model_version()));
  absl::StatusOr<v1::RunRequest> run =
      ToRunRequest(request, pipeline->description_proto);
  if (!run.ok()) {
    // As the engine's own errors read.
    return absl::Status(run.status().code(),
                        absl::StrCat("pipeline '", pipeline->name,
                                     "': ", run.status().message()));
  }
  return std::make_shared<v1::RunRequest>(*std::move(run));
}

// ModelInfer: one run, answered with its final outputs. The run streams
// only its last iteration, which is dropped here.
class InferReactor final : public grpc::ServerUnaryReactor,
                           public RunEventWriter {
 public:
  InferReactor(Engine& engine, grpc::CallbackServerContext* context,
               const grpc::ByteBuffer& raw_request, grpc::ByteBuffer* response,
               const absl::StatusOr<std::string>& principal)
      : engine_(engine), context_(context), response_buffer_(response) {
    RunClient client{.peer = context->peer()};
    // Who asks first; then what (Note [raw OIP methods]).
    absl::StatusOr<ModelInferRequest> parsed =
        principal.ok() ? ParseRequest(raw_request, "the request")
                       : principal.status();
    const ModelInferRequest& request =
        parsed.ok() ? *parsed : ModelInferRequest::default_instance();
    absl::StatusOr<std::shared_ptr<v1::RunRequest>> run_request =
        parsed.ok() ? Translate(engine, request) : parsed.status();
    if (!run_request.ok()) {
      engine_.Refuse(run_request.status(), request.model_name(), request.id(),
                     client);
      ServerUnaryReactor::Finish(ToGrpcStatus(run_request.status()));
      return;
    }
    (*run_request)
        ->mutable_stream()
        ->set_every(std::numeric_limits<uint32_t>::max());
    response_.set_model_name(request.model_name());
    response_.set_model_version("1");
    response_.set_id(request.id());
    client.principal = *principal;
    absl::StatusOr<std::shared_ptr<Run>> run =
        engine_.StartRun(*std::move(run_request), this, std::move(client));
    if (!run.ok()) {
      ServerUnaryReactor::Finish(ToGrpcStatus(run.status()));
      return;
    }
    run_.Set(*std::move(run));
  }

  void StartWrite(std::shared_ptr<const v1::RunEvent> event) override {
    if (event->has_result()) {
      outputs_ = AppendResult(event->result(), response_);
      response_.mutable_parameters()->erase("triton_final_response");
    }
    run_.OnWriteDone(true);
  }
  void Finish(const absl::Status& status) override {
    finished_ = status.ok() ? outputs_ : status;
    if (finished_.ok()) *response_buffer_ = Serialized(response_);
    HandOffToGrpc(this);
    ServerUnaryReactor::Finish(ToGrpcStatus(finished_));
  }
  void OnCancel() override {
    TakeOverFromGrpc(this);
    run_.Cancel(CancelStatus(*context_, "before the run finished"));
  }
  void OnDone() override {
    TakeOverFromGrpc(this);
    if (std::shared_ptr<Run> run = run_.get(); run != nullptr) {
      engine_.Release(run, context_->IsCancelled() && finished_.ok()
                               ? CancelStatus(*context_, "at its end")
                               : finished_);
    }
    delete this;
  }

 private:
  Engine& engine_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const response_buffer_;
  ModelInferResponse response_;
  RunHandle run_;
  absl::Status outputs_;   // whether the result's outputs converted
  absl::Status finished_;  // what Finish sent
};

// ModelStreamInfer: any number of runs on one bidirectional stream. Their
// responses share one write queue; each run has at most one event in it
// (the engine's one write in flight), told it was written when the last
// response made from the event is. The stream ends when the client has
// half-closed and every run is done.
//
// Note [who owns a stream]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// The reactor is called from gRPC's threads (its
// reactions) and from the runs' threads (their writers), and is freed only
// when both are done with it: it counts holds, one for gRPC (dropped in
// OnDone) and one for each run it started (dropped at the very end of that
// run's Release, after any Finish). A run's StreamRun is shared: runs_
// holds it until Release, and OnCancel holds what it cancels, so a run
// that finishes on its own thread while the cancel walks the runs frees
// nothing the cancel still uses. (Once OnCancel took raw pointers and a
// run released meanwhile was used after it was freed; the cancel storm in
// tests/server/fronts_test.cc.)
class StreamInferReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StreamInferReactor(Engine& engine, grpc::CallbackServerContext* context,
                     absl::StatusOr<std::string> principal)
      : engine_(engine), context_(context) {
    if (!principal.ok()) {
      engine_.Refuse(principal.status(), "", "", {.peer = context->peer()});
      Finish(ToGrpcStatus(principal.status()));
      return;
    }
    principal_ = *std::move(principal);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    TakeOverFromGrpc(this);
    if (!ok) {
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
      }
      MaybeFinish();
      return;
    }
    ++messages_;
    absl::StatusOr<ModelInferRequest> request = ParseRequest(
        request_, absl::StrCat("message ", messages_, " of the stream"));
    request_.Clear();
    if (!request.ok()) {
      // Nothing after it can be trusted: no more reads; the stream ends
      // with the error once its runs are done.
      engine_.Refuse(request.status(), "", "",
                     {.principal = principal_, .peer = context_->peer()});
      SendError("", "", request.status());
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
        end_ = ToGrpcStatus(request.status());
      }
      MaybeFinish();
      return;
    }
    // Begin first: the next read's OnReadDone may run at once on another
    // thread, and must find this request's run in runs_ (or the stream could
    // end under it).
    Begin(*request);
    HandOffToGrpc(this);
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    TakeOverFromGrpc(this);
    StreamRun* run;
    {
      absl::MutexLock lock(&mu_);
      run = writing_->run;
      writing_.reset();
    }
    if (run != nullptr) {
      // A failed write: the call is gone.
      if (!ok) run->handle.Cancel(CancelStatus(*context_, "mid-stream"));
      run->handle.OnWriteDone(ok);
    }
    {
      absl::MutexLock lock(&mu_);
      StartNextWriteLocked();
    }
    MaybeFinish();
  }

  void OnCancel() override {
    TakeOverFromGrpc(this);
    std::vector<std::shared_ptr<StreamRun>> runs;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [key, run] : runs_) runs.push_back(run);
    }
    // Outside the lock: a queued run finishes inside Cancel.
    for (const std::shared_ptr<StreamRun>& run : runs) {
      run->handle.Cancel(CancelStatus(*context_, "before the run finished"));
    }
  }

  void OnDone() override {
    TakeOverFromGrpc(this);
    Unhold();
  }

 private:
  // One request's run: its writer, which the engine calls.
  struct StreamRun final : RunEventWriter {
    StreamInferReactor* stream;
    std::string model;
    std::string id;
    RunHandle handle;
    // Under the stream's mu_: whether Begin has set `handle`, and how the
    // run finished if it did before that (Begin then releases it).
    bool started = false;
    std::optional<absl::Status> finished;

    void StartWrite(std::shared_ptr<const v1::RunEvent> event) override {
      stream->Enqueue(*this, *event);
    }
    void Finish(const absl::Status& status) override {
      stream->RunFinished(*this, status);
    }
    // A stalled reader: the stream as a whole stops.
    void Abort() override { stream->context_->TryCancel(); }
  };

  struct Written {
    grpc::ByteBuffer response;
    // The run whose event this response ends, told when it is written. A
    // run is not released with a write in flight, so this stays valid.
    StreamRun* run = nullptr;
  };

  void Begin(const ModelInferRequest& request) {
    RunClient client{.principal = principal_, .peer = context_->peer()};
    absl::StatusOr<std::shared_ptr<v1::RunRequest>> run_request =
        Translate(engine_, request);
    if (!run_request.ok()) {
      engine_.Refuse(run_request.status(), request.model_name(), request.id(),
                     client);
      SendError(request.model_name(), request.id(), run_request.status());
      return;
    }
    auto owned = std::make_shared<StreamRun>();
    StreamRun* writer = owned.get();
    writer->stream = this;
    writer->model = request.model_name();
    writer->id = request.id();
    holds_.fetch_add(1, std::memory_order_relaxed);  // the run's
    {
      absl::MutexLock lock(&mu_);
      runs_[writer] = std::move(owned);
    }
    absl::StatusOr<std::shared_ptr<Run>> run =
        engine_.StartRun(*std::move(run_request), writer, std::move(client));
    if (!run.ok()) {
      {
        absl::MutexLock lock(&mu_);
        runs_.erase(writer);
      }
      Unhold();  // gRPC's hold remains: this is a reaction
      SendError(request.model_name(), request.id(), run.status());
      return;
    }
    // OnCancel may have run before the run was in runs_.
    if (context_->IsCancelled()) {
      writer->handle.Cancel(CancelStatus(*context_, "before the run started"));
    }
    // A cancel that came first may finish the run inside Set.
    writer->handle.Set(*run);
    std::optional<absl::Status> finished;
    {
      absl::MutexLock lock(&mu_);
      writer->started = true;
      finished = writer->finished;
    }
    if (finished.has_value()) Release(*writer, *finished);
  }

  ModelInferResponse ResponseOf(const StreamRun& run) const {
    ModelInferResponse response;
    response.set_model_name(run.model);
    response.set_model_version("1");
    response.set_id(run.id);
    return response;
  }

  // The responses of one of `run`'s events: one per iteration, one for the
  // result, none for the start.
  void Enqueue(StreamRun& run, const v1::RunEvent& event) {
    std::vector<Written> responses;
    absl::Status status;
    ModelStreamInferResponse response;
    if (event.has_iterations()) {
      for (const v1::Iteration& iteration : event.iterations().items()) {
        *response.mutable_infer_response() = ResponseOf(run);
        status.Update(
            AppendIteration(iteration, *response.mutable_infer_response()));
        responses.push_back({.response = Serialized(response)});
      }
    } else if (event.has_result()) {
      *response.mutable_infer_response() = ResponseOf(run);
      status = AppendResult(event.result(), *response.mutable_infer_response());
      responses.push_back({.response = Serialized(response)});
    }
    if (!status.ok()) {
      // The run cannot be sent in this protocol: it ends with why.
      responses.clear();
      run.handle.Cancel(status);
    }
    if (responses.empty()) {
      run.handle.OnWriteDone(true);
      return;
    }
    responses.back().run = &run;
    absl::MutexLock lock(&mu_);
    for (Written& written : responses) queue_.push_back(std::move(written));
    StartNextWriteLocked();
  }

  void RunFinished(StreamRun& run, const absl::Status& status) {
    if (!status.ok()) SendError(run.model, run.id, status);
    {
      absl::MutexLock lock(&mu_);
      if (!run.started) {
        run.finished = status;  // Begin releases it
        return;
      }
    }
    Release(run, status);
  }

  void Release(StreamRun& run, const absl::Status& status) {
    engine_.Release(run.handle.get(),
                    context_->IsCancelled() && status.ok()
                        ? CancelStatus(*context_, "at its end")
                        : status);
    {
      absl::MutexLock lock(&mu_);
      runs_.erase(&run);  // `run` may be freed from here on
    }
    MaybeFinish();
    Unhold();  // the run's; last (Note [who owns a stream])
  }

  // Drops one hold; the last frees the reactor.
  void Unhold() {
    if (holds_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // An error for one request: the stream goes on.
  void SendError(const std::string& model, const std::string& id,
                 const absl::Status& status) {
    ModelStreamInferResponse response;
    response.set_error_message(status.ToString());
    response.mutable_infer_response()->set_model_name(model);
    response.mutable_infer_response()->set_id(id);
    Written written{.response = Serialized(response)};
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(written));
    StartNextWriteLocked();
  }

  void StartNextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_.has_value() || queue_.empty()) return;
    writing_ = std::move(queue_.front());
    queue_.pop_front();
    HandOffToGrpc(this);
    StartWrite(&writing_->response);
  }

  // Ends the stream once the client half-closed and nothing is left. From
  // a reaction or a run's Release: either holds the reactor meanwhile.
  void MaybeFinish() ABSL_LOCKS_EXCLUDED(mu_) {
    std::optional<grpc::Status> end;
    {
      absl::MutexLock lock(&mu_);
      end = TakeEndLocked();
    }
    if (end.has_value()) {
      HandOffToGrpc(this);
      Finish(*end);
    }
  }

  // The status to end the stream with now, if it may end (then it is
  // marked finished, so that only one caller ends it).
  std::optional<grpc::Status> TakeEndLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!reads_done_ || finished_ || !runs_.empty() || !queue_.empty() ||
        writing_.has_value()) {
      return std::nullopt;
    }
    finished_ = true;
    return end_;
  }

  Engine& engine_;
  grpc::CallbackServerContext* const context_;
  std::string principal_;
  grpc::ByteBuffer request_;  // the read in flight
  int64_t messages_ = 0;      // read so far; on gRPC's reactions only

  absl::Mutex mu_;
  std::deque<Written> queue_ ABSL_GUARDED_BY(mu_);
  // The response being written; valid until OnWriteDone.
  std::optional<Written> writing_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<StreamRun*, std::shared_ptr<StreamRun>> runs_
      ABSL_GUARDED_BY(mu_);
  // gRPC's, until OnDone, and one for each run until its Release ends.
  std::atomic<int> holds_{1};
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // What the stream ends with: OK, or why it stopped reading.
  grpc::Status end_ ABSL_GUARDED_BY(mu_);
};

// Whether a unary call may go on; if not, `reactor` is finished with
// UNAUTHENTICATED.
bool Admit(Authenticator& auth, grpc::CallbackServerContext& context,
           grpc::ServerUnaryReactor& reactor) {
  const absl::StatusOr<std::string> principal = auth.Authenticate(context);
  if (!principal.ok()) reactor.Finish(ToGrpcStatus(principal.status()));
  return principal.ok();
}

}  // namespace

absl::StatusOr<const Pipeline*> FindModel(const Engine& engine,
                                          absl::string_view name,
                                          absl::string_view version) {
  if (!version.empty() && version != "1") {
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' has no version '", version,
                     "' (a pipeline has one version, \"1\")"));
  }
  return engine.FindPipeline(name);
}

grpc::ServerUnaryReactor* OipService::ServerLive(
    grpc::CallbackServerContext* context, const inference::ServerLiveRequest*,
    inference::ServerLiveResponse* response) {
  response->set_live(true);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* OipService::ServerReady(
    grpc::CallbackServerContext* context, const inference::ServerReadyRequest*,
    inference::ServerReadyResponse* response) {
  response->set_ready(ready_.load());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* OipService::ModelReady(
    grpc::CallbackServerContext* context,
    const inference::ModelReadyRequest* request,
    inference::ModelReadyResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!Admit(auth_, *context, *reactor)) return reactor;
  response->set_ready(
      ready_.load() &&
      FindModel(engine_, request->name(), request->version()).ok());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* OipService::ServerMetadata(
    grpc::CallbackServerContext* context,
    const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!Admit(auth_, *context, *reactor)) return reactor;
  response->set_name("loopserve");
  response->set_version(LOOPSERVE_VERSION);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* OipService::ModelMetadata(
    grpc::CallbackServerContext* context,
    const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!Admit(auth_, *context, *reactor)) return reactor;
  const absl::StatusOr<const Pipeline*> pipeline =
      FindModel(engine_, request->name(), request->version());
  if (!pipeline.ok()) {
    reactor->Finish(ToGrpcStatus(pipeline.status()));
    return reactor;
  }
  *response = ToModelMetadata((*pipeline)->description_proto);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* OipService::ModelInfer(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  auto* reactor = new InferReactor(engine_, context, *request, response,
                                   auth_.Authenticate(*context));
  HandOffToGrpc(reactor);
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
OipService::ModelStreamInfer(grpc::CallbackServerContext* context) {
  auto* reactor =
      new StreamInferReactor(engine_, context, auth_.Authenticate(*context));
  HandOffToGrpc(reactor);
  return reactor;
}

}  // namespace loopserve
