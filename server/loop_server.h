// LoopServer: a running loopserve: the gRPC server with the
// LoopPipelineService, health and reflection, its RunExecutor, and the
// pipelines (with their components) it serves. main() runs one; the integration
// tests run one in-process on port 0.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<LoopServer> server,
//                    LoopServer::Start(options, std::move(catalog)));
//   ... server->port() ...
//   server->Shutdown(absl::Seconds(30));
//
// Health (grpc.health.v1.Health): SERVING for "" and
// "loopserve.v1.LoopPipelineService" once started; NOT_SERVING from the
// start of Shutdown.
//
// Thread-safety: port() from any thread; Shutdown once, from one thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "blocks/core/components.h"
#include "server/loop_service.h"
#include "server/pipeline_catalog.h"
#include "server/run_executor.h"

namespace loopserve {

struct LoopServerOptions {
  // host:port; port 0 picks a free one (see port()).
  std::string address = "0.0.0.0:50051";
  RunExecutorOptions executor;
  LoopServiceOptions service;
  // Largest request accepted, in bytes.
  int max_receive_message_bytes = 256 << 20;
};

inline constexpr char kServiceName[] = "loopserve.v1.LoopPipelineService";

class LoopServer {
 public:
  static absl::StatusOr<std::unique_ptr<LoopServer>> Start(
      const LoopServerOptions& options, PipelineCatalog catalog);

  // Drains: health NOT_SERVING, new runs UNAVAILABLE, runs in flight get
  // `grace` to finish and are then cancelled; then stops the server.
  void Shutdown(absl::Duration grace);
  ~LoopServer();

  int port() const { return port_; }
  LoopService& service() { return *service_; }
  const RunExecutor& executor() const { return executor_; }

 private:
  LoopServer(PipelineCatalog catalog,
             const LoopServerOptions& options);

  PipelineCatalog catalog_;
  RunExecutor executor_;
  std::unique_ptr<LoopService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace loopserve
