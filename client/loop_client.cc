#include "client/loop_client.h"

#include <google/protobuf/arena.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace loopserve {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

void RunCancellation::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

bool RunCancellation::cancelled() {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

void RunCancellation::Attach(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  context_ = context;
  if (cancelled_) context_->TryCancel();
}

void RunCancellation::Detach() {
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
}

LoopClient::LoopClient(std::shared_ptr<grpc::Channel> channel,
                       std::string token)
    : channel_(std::move(channel)),
      token_(std::move(token)),
      stub_(v1::LoopPipelineService::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

namespace {

absl::StatusOr<std::string> ReadFile(absl::string_view what,
                                     const std::string& path) {
  std::optional<std::string> text = ReadWholeFile(path);
  if (!text) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": cannot read '", path, "'"));
  }
  return *std::move(text);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(
    const ConnectOptions& options) {
  if (options.tls_ca_file.empty()) {
    if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
      return absl::InvalidArgumentError(
          "a client certificate needs the server's CA (tls_ca_file)");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert_file and tls_key_file go together");
  }
  grpc::SslCredentialsOptions ssl;
  ASSIGN_OR_RETURN(ssl.pem_root_certs,
                   ReadFile("tls_ca_file", options.tls_ca_file));
  if (!options.tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                     ReadFile("tls_cert_file", options.tls_cert_file));
    ASSIGN_OR_RETURN(ssl.pem_private_key,
                     ReadFile("tls_key_file", options.tls_key_file));
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace

void LoopClient::Prepare(grpc::ClientContext& context) const {
  if (!token_.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", token_));
  }
}

absl::StatusOr<std::unique_ptr<LoopClient>> LoopClient::Connect(
    const std::string& target, const ConnectOptions& options) {
  grpc::ChannelArguments args;
  if (options.lb_policy == "round_robin") {
    // Client-side health checking: a replica that is loading or draining
    // drops out of the rotation before it refuses anything.
    args.SetServiceConfigJSON(
        R"({"loadBalancingConfig": [{"round_robin": {}}],)"
        R"( "healthCheckConfig": {"serviceName": ")" +
        std::string(v1::LoopPipelineService::service_full_name()) + R"("}})");
  } else if (!options.lb_policy.empty() && options.lb_policy != "pick_first") {
    return absl::InvalidArgumentError(
        "lb_policy: '" + options.lb_policy +
        "' is not a load-balancing policy; expected pick_first or round_robin");
  }
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Note [large frames]: the server streams batches of up to a MiB or so.
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                   Credentials(options));
  return std::make_unique<LoopClient>(
      grpc::CreateCustomChannel(target, credentials, args), options.token);
}

absl::StatusOr<std::vector<v1::PipelineSummary>> LoopClient::ListPipelines() {
  grpc::ClientContext context;
  Prepare(context);
  v1::ListPipelinesResponse response;
  grpc::Status status =
      stub_->ListPipelines(&context, v1::ListPipelinesRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return std::vector<v1::PipelineSummary>(response.pipelines().begin(),
                                          response.pipelines().end());
}

absl::StatusOr<v1::PipelineDescription> LoopClient::DescribePipeline(
    const std::string& name) {
  grpc::ClientContext context;
  Prepare(context);
  v1::DescribePipelineRequest request;
  request.set_name(name);
  v1::PipelineDescription response;
  grpc::Status status = stub_->DescribePipeline(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::RunResult> LoopClient::Run(const v1::RunRequest& request,
                                              const RunCallbacks& callbacks,
                                              const RunCallOptions& options) {
  grpc::ClientContext context;
  Prepare(context);
  if (options.timeout.has_value()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + *options.timeout));
  }
  if (options.cancellation != nullptr) options.cancellation->Attach(&context);
  std::unique_ptr<grpc::ClientReader<v1::RunEvent>> reader =
      stub_->Run(&context, request);
  std::optional<v1::RunResult> result;
  // Each event is parsed into an arena that is reset before the next: a
  // batch of thousands of iterations costs a few block allocations instead
  // of several per iteration.
  google::protobuf::Arena arena;
  while (true) {
    arena.Reset();
    auto* event = google::protobuf::Arena::CreateMessage<v1::RunEvent>(&arena);
    if (!reader->Read(event)) break;
    switch (event->event_case()) {
      case v1::RunEvent::kStarted:
        if (callbacks.on_started) callbacks.on_started(event->started());
        break;
      case v1::RunEvent::kIterations:
        if (callbacks.on_batch) callbacks.on_batch(event->iterations());
        if (callbacks.on_iteration) {
          for (const v1::Iteration& item : event->iterations().items()) {
            callbacks.on_iteration(item);
          }
        }
        break;
      case v1::RunEvent::kResult:
        result.emplace(event->result());  // a copy: the arena is reused
        break;
      case v1::RunEvent::EVENT_NOT_SET:
        break;
    }
  }
  grpc::Status status = reader->Finish();
  if (options.cancellation != nullptr) options.cancellation->Detach();
  if (!status.ok()) return FromGrpcStatus(status);
  if (!result.has_value()) {
    return absl::InternalError("the stream ended OK without a result");
  }
  return *std::move(result);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus>
LoopClient::Health(const std::string& service) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health_->Check(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response.status();
}

}  // namespace loopserve
