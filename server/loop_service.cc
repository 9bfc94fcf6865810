#include "server/loop_service.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blocks/core/status_macros.h"
#include "server/grpc_status.h"
#include "server/run_event_wire.h"

namespace loopserve {

// One Run call: streams a RunStream's events (Note [finishing] in
// run_stream.h says why it outlives every call the stream makes into it).
class RunReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                         public RunEventWriter {
 public:
  RunReactor(LoopService& service, grpc::CallbackServerContext* context,
             const grpc::ByteBuffer& raw_request)
      : service_(service),
        context_(context),
        metrics_(&service.metrics_.For("")) {
    auto request = std::make_shared<v1::RunRequest>();
    grpc::ByteBuffer copy(raw_request);  // shares the slices
    if (!grpc::SerializationTraits<v1::RunRequest>::Deserialize(&copy,
                                                                request.get())
             .ok()) {
      Reject(absl::InvalidArgumentError("the RunRequest does not parse"));
      return;
    }
    metrics_ = &service_.metrics_.For(request->pipeline());
    absl::StatusOr<std::shared_ptr<RunStream>> stream =
        service_.StartRun(std::move(request), this, *metrics_);
    if (!stream.ok()) {
      Reject(stream.status());
      return;
    }
    stream_ = *std::move(stream);
  }

  void StartWrite(std::shared_ptr<const v1::RunEvent> event) override {
    SerializeRunEvent(event, &buffer_);
    ServerWriteReactor::StartWrite(&buffer_);
  }
  void Finish(const absl::Status& status) override {
    service_.metrics_.RunFinished(*metrics_, status.code());
    ServerWriteReactor::Finish(ToGrpcStatus(status));
  }

  void OnWriteDone(bool ok) override {
    buffer_.Clear();  // our references to the event's slices
    stream_->OnWriteDone(ok);
  }

  void OnCancel() override {
    if (stream_ == nullptr) return;
    if (context_->deadline() <= std::chrono::system_clock::now()) {
      stream_->Cancel(absl::DeadlineExceededError(
          "the deadline passed before the run finished"));
    } else {
      stream_->Cancel(absl::CancelledError("the client cancelled the run"));
    }
  }

  void OnDone() override {
    if (stream_ != nullptr) service_.Untrack(stream_);
    delete this;
  }

 private:
  // Refused before it was queued.
  void Reject(const absl::Status& status) {
    service_.metrics_.RunRejected(status.code());
    Finish(status);
  }

  LoopService& service_;
  grpc::CallbackServerContext* const context_;
  // The run's pipeline's series ("unknown" until the request parses).
  PipelineMetrics* metrics_;
  std::shared_ptr<RunStream> stream_;
  // The event being written; valid until OnWriteDone.
  grpc::ByteBuffer buffer_;
};

LoopService::LoopService(RunExecutor& executor, Metrics& metrics,
                         LoopServiceOptions options)
    : executor_(executor), metrics_(metrics), options_(std::move(options)) {}

void LoopService::Serve(const PipelineCatalog& catalog) {
  catalog_.store(&catalog, std::memory_order_release);
}

absl::StatusOr<const PipelineCatalog*> LoopService::Catalog() const {
  const PipelineCatalog* catalog = catalog_.load(std::memory_order_acquire);
  if (catalog == nullptr) {
    return absl::UnavailableError(
        "the server is still loading its pipelines");
  }
  return catalog;
}

grpc::ServerUnaryReactor* LoopService::ListPipelines(
    grpc::CallbackServerContext* context, const v1::ListPipelinesRequest*,
    v1::ListPipelinesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<const PipelineCatalog*> catalog = Catalog();
  if (!catalog.ok()) {
    reactor->Finish(ToGrpcStatus(catalog.status()));
    return reactor;
  }
  for (const auto& pipeline : (*catalog)->pipelines()) {
    v1::PipelineSummary* summary = response->add_pipelines();
    summary->set_name(pipeline->name);
    summary->set_description(pipeline->description);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

namespace {

absl::Status PipelineNotFound(const PipelineCatalog& catalog,
                              absl::string_view name) {
  std::vector<std::string> names;
  for (const auto& pipeline : catalog.pipelines()) {
    names.push_back(pipeline->name);
  }
  return absl::NotFoundError(
      absl::StrCat("pipeline '", name,
                   "' is not served; available: ", absl::StrJoin(names, ", ")));
}

}  // namespace

grpc::ServerUnaryReactor* LoopService::DescribePipeline(
    grpc::CallbackServerContext* context,
    const v1::DescribePipelineRequest* request,
    v1::PipelineDescription* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<const PipelineCatalog*> catalog = Catalog();
  if (!catalog.ok()) {
    reactor->Finish(ToGrpcStatus(catalog.status()));
    return reactor;
  }
  const Pipeline* pipeline = (*catalog)->Find(request->name());
  if (pipeline == nullptr) {
    reactor->Finish(ToGrpcStatus(PipelineNotFound(**catalog, request->name())));
    return reactor;
  }
  *response = pipeline->description_proto;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* LoopService::Run(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return new RunReactor(*this, context, *request);
}

absl::StatusOr<std::shared_ptr<RunStream>> LoopService::StartRun(
    std::shared_ptr<const v1::RunRequest> request, RunEventWriter* writer,
    PipelineMetrics& metrics) {
  const RunRecorder::Clock::time_point accepted = RunRecorder::Clock::now();
  ASSIGN_OR_RETURN(const PipelineCatalog* catalog, Catalog());
  const Pipeline* pipeline = catalog->Find(request->pipeline());
  if (pipeline == nullptr) {
    return PipelineNotFound(*catalog, request->pipeline());
  }
  ASSIGN_OR_RETURN(StreamSelection selection,
                   ValidateRun(*pipeline, *request, options_.limits));

  uint64_t run_number;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) {
      return absl::UnavailableError(
          "the server is shutting down and takes no new runs");
    }
    run_number = ++next_run_;
  }
  auto stream = std::make_shared<RunStream>(
      absl::StrCat("run-", run_number), request->request_id(),
      std::move(selection), options_.stream, writer, &metrics);
  Track(stream);

  // The inputs' one copy happens here, on the executor thread.
  auto task = [this, stream, pipeline, request = std::move(request), accepted,
               metrics = &metrics] {
    metrics_.queued_runs().Decrement();
    if (!stream->Begin()) return;  // cancelled while queued
    const RunRecorder::Clock::time_point started = RunRecorder::Clock::now();
    metrics->queue_duration->Observe(
        std::chrono::duration<double>(started - accepted).count());
    metrics->active_runs->Increment();
    absl::StatusOr<PipelineState> state =
        DecodeInputs(*request, options_.limits.decode, options_.device);
    absl::Status status = state.status();
    if (state.ok()) {
      RunRecorder recorder(*metrics, accepted);
      RunContext context{.observer = stream.get(),
                         .device = options_.device,
                         .timer = &recorder};
      status = RunBlock(*pipeline->root, pipeline->components, *state, context);
    }
    // Metrics first, so that they hold the run once its client has heard.
    metrics->run_duration->Observe(std::chrono::duration<double>(
                                       RunRecorder::Clock::now() - started)
                                       .count());
    metrics->active_runs->Decrement();
    if (state.ok()) {
      stream->End(status, *state);
    } else {
      stream->End(status, PipelineState());
    }
  };
  metrics_.queued_runs().Increment();
  if (absl::Status status = executor_.Submit(std::move(task)); !status.ok()) {
    metrics_.queued_runs().Decrement();
    Untrack(stream);
    return status;
  }
  return stream;
}

void LoopService::Track(const std::shared_ptr<RunStream>& stream) {
  absl::MutexLock lock(&mu_);
  active_.insert(stream);
}

void LoopService::Untrack(const std::shared_ptr<RunStream>& stream) {
  absl::MutexLock lock(&mu_);
  active_.erase(stream);
}

void LoopService::StartDraining() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool LoopService::WaitForIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(
      absl::Condition(
          +[](absl::flat_hash_set<std::shared_ptr<RunStream>>* active) {
            return active->empty();
          },
          &active_),
      timeout);
}

void LoopService::CancelAll(const absl::Status& status) {
  std::vector<std::shared_ptr<RunStream>> streams;
  {
    absl::MutexLock lock(&mu_);
    streams.assign(active_.begin(), active_.end());
  }
  for (const auto& stream : streams) stream->Cancel(status);
}

}  // namespace loopserve
