#include "server/loop_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"

namespace loopserve {

LoopServer::LoopServer(PipelineCatalog catalog,
                       const LoopServerOptions& options)
    : catalog_(std::move(catalog)),
      executor_(options.executor),
      service_(std::make_unique<LoopService>(catalog_, executor_,
                                             options.service)) {}

absl::StatusOr<std::unique_ptr<LoopServer>> LoopServer::Start(
    const LoopServerOptions& options, PipelineCatalog catalog) {
  std::unique_ptr<LoopServer> server(
      new LoopServer(std::move(catalog), options));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  // Note [large frames]
  // ~~~~~~~~~~~~~~~~~~~
  // Streams carry batches of up to --max_batch_bytes. HTTP/2's default
  // 16 KiB frames and gRPC's small initial TCP reads turn each batch into
  // many frames and syscalls; on a virtual machine the syscalls cost more
  // than the copies. 1 MiB frames and reads took stream_bench's tensor
  // stream from 0.8-1.4 to 1.55-1.63 GB/s. LoopClient asks for the same.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 1 << 20);
  builder.AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  builder.AddChannelArgument(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  builder.AddChannelArgument(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.address));
  }
  grpc::HealthCheckServiceInterface* health =
      server->server_->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(kServiceName, true);
  return server;
}

void LoopServer::Shutdown(absl::Duration grace) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  server_->GetHealthCheckService()->SetServingStatus(false);
  service_->StartDraining();
  if (!service_->WaitForIdle(grace)) {
    service_->CancelAll(
        absl::UnavailableError("the server shut down before the run finished"));
  }
  // Runs stop at their next iteration boundary; give their streams a moment
  // to finish before gRPC cancels what is left.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  executor_.Shutdown();
}

LoopServer::~LoopServer() { Shutdown(absl::ZeroDuration()); }

}  // namespace loopserve
