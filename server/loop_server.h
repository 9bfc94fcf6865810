// LoopServer: a running loopserve: the run engine (engine/engine.h, which
// holds the pipelines, the executor and the metrics), and its fronts: the
// gRPC server with the LoopPipelineService, health and reflection, and the
// metrics' HTTP endpoint; the Open Inference Protocol's gRPC service beside
// loopserve's own (server/oip_service.h); and the HTTP front
// (server/http_front.h). main() runs one; the integration tests run one
// in-process on port 0.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<LoopServer> server,
//                    LoopServer::Start(options));   // listening, not ready
//   server->Serve(std::move(catalog));              // ready
//   ... server->port() ...
//   server->Shutdown(absl::Seconds(30));
//
// Security (docs/operations.md, "Security and limits"): TLS or mTLS on the
// main port from PEM files that may rotate, bearer tokens from a file that
// may change (server/auth.h), and a plaintext health port for probes that
// cannot speak TLS.
//
// Health (grpc.health.v1.Health), what Kubernetes' probes ask:
//   "liveness": SERVING from Start to the end: the process answers RPCs.
//   "" and "loopserve.v1.LoopPipelineService" (readiness): NOT_SERVING while
//     the pipelines load (Start to Serve), SERVING while serving, and
//     NOT_SERVING again from the start of Shutdown (draining).
//
// Thread-safety: port() from any thread; Serve and Shutdown once each, from
// one thread.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/exposer.h>

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/pipeline_catalog.h"
#include "server/http_front.h"
#include "server/loop_service.h"
#include "server/oip_service.h"

namespace loopserve {

// The server's TLS material, as PEM files (--tls_cert_file, --tls_key_file,
// --tls_client_ca_file). gRPC re-reads them every refresh interval, so a
// renewed certificate is served without a restart.
struct TlsFiles {
  // Empty: plaintext.
  std::string cert_file{};
  std::string key_file{};
  // Set: clients must present a certificate this CA signed (mTLS), and its
  // common name is their principal unless tokens say otherwise.
  std::string client_ca_file{};
  unsigned refresh_interval_s = 60;
};

struct LoopServerOptions {
  // host:port; port 0 picks a free one (see port()).
  std::string address = "0.0.0.0:50051";
  TlsFiles tls{};
  // host:port of a plaintext listener for probes (--health_port) when the
  // main port speaks TLS: there the loopserve API answers UNAUTHENTICATED
  // and health answers. Empty: none. Port 0 picks one (health_port()).
  std::string health_address{};
  // --auth_tokens_file (server/auth.h); empty: no tokens asked for.
  std::string auth_tokens_file{};
  EngineOptions engine{};
  // Largest request accepted (a gRPC message, an HTTP body), in bytes.
  int max_receive_message_bytes = 64 << 20;
  // host:port of the Prometheus endpoint (/metrics); empty: none. Port 0
  // picks a free one (see metrics_port()).
  std::string metrics_address{};
  // host:port of the HTTP front (server/http_front.h: JSON, server-sent
  // events and the preview page), with the main port's TLS and tokens;
  // empty: none. Port 0 picks a free one (see http_port()).
  std::string http_address{};
};

inline constexpr char kServiceName[] = "loopserve.v1.LoopPipelineService";
// The health service name that stays SERVING while the process lives.
inline constexpr char kLivenessService[] = "liveness";

class LoopServer {
 public:
  // Listens, with readiness NOT_SERVING until Serve.
  static absl::StatusOr<std::unique_ptr<LoopServer>> Start(
      const LoopServerOptions& options);
  // Start, then Serve(catalog).
  static absl::StatusOr<std::unique_ptr<LoopServer>> Start(
      const LoopServerOptions& options, PipelineCatalog catalog);

  // Serves `catalog`: its metrics series are created, then readiness turns
  // SERVING. Once, before Shutdown.
  void Serve(PipelineCatalog catalog);

  // Drains: health NOT_SERVING, new runs UNAVAILABLE, runs in flight get
  // `grace` to finish and are then cancelled; then stops the server.
  void Shutdown(absl::Duration grace);
  ~LoopServer();

  int port() const { return port_; }
  // The metrics endpoint's port; 0 when there is none.
  int metrics_port() const { return metrics_port_; }
  // The plaintext health listener's port; 0 when there is none.
  int health_port() const { return health_port_; }
  // The HTTP front's port; 0 when there is none.
  int http_port() const { return http_ == nullptr ? 0 : http_->port(); }
  Engine& engine() { return engine_; }
  const RunExecutor& executor() const { return engine_.executor(); }
  Metrics& metrics() { return engine_.metrics(); }

 private:
  explicit LoopServer(const LoopServerOptions& options);
  void SetReady(bool ready);

  Engine engine_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<LoopService> service_;
  std::unique_ptr<OipService> oip_service_;
  std::unique_ptr<HttpFront> http_;
  // Serving: readiness as the OIP and HTTP probes report it.
  std::atomic<bool> ready_{false};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  int metrics_port_ = 0;
  int health_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace loopserve
