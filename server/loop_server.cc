#include "server/loop_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <exception>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace loopserve {

LoopServer::LoopServer(const LoopServerOptions& options)
    : engine_(options.engine) {}

namespace {

absl::Status CheckReadable(absl::string_view flag, const std::string& path) {
  if (std::ifstream(path).good()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": cannot read '", path, "'"));
}

// The main port's credentials: TLS (mTLS with a client CA) from files gRPC
// watches, or plaintext.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const TlsFiles& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file go together");
  }
  if (tls.cert_file.empty()) {
    if (!tls.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
    }
    return grpc::InsecureServerCredentials();
  }
  // gRPC reads the files on its own thread and reports nothing when it
  // cannot: a missing file is named here instead.
  RETURN_IF_ERROR(CheckReadable("--tls_cert_file", tls.cert_file));
  RETURN_IF_ERROR(CheckReadable("--tls_key_file", tls.key_file));
  if (!tls.client_ca_file.empty()) {
    RETURN_IF_ERROR(CheckReadable("--tls_client_ca_file", tls.client_ca_file));
  }
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          tls.key_file, tls.cert_file, tls.client_ca_file,
          tls.refresh_interval_s);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (tls.client_ca_file.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<LoopServer>> LoopServer::Start(
    const LoopServerOptions& options, PipelineCatalog catalog) {
  absl::StatusOr<std::unique_ptr<LoopServer>> server = Start(options);
  if (server.ok()) (*server)->Serve(std::move(catalog));
  return server;
}

absl::StatusOr<std::unique_ptr<LoopServer>> LoopServer::Start(
    const LoopServerOptions& options) {
  std::unique_ptr<LoopServer> server(new LoopServer(options));
  ASSIGN_OR_RETURN(const std::shared_ptr<grpc::ServerCredentials> credentials,
                   Credentials(options.tls));
  ASSIGN_OR_RETURN(
      server->auth_,
      Authenticator::Create({.tokens_file = options.auth_tokens_file,
                             .require_tls = !options.tls.cert_file.empty()},
                            &server->metrics()));
  if (!options.tls.cert_file.empty()) {
    credentials->SetAuthMetadataProcessor(
        std::make_shared<AuthProcessor>(*server->auth_));
  }
  server->service_ =
      std::make_unique<LoopService>(server->engine_, *server->auth_);
  server->oip_service_ = std::make_unique<OipService>(
      server->engine_, *server->auth_, server->ready_);
  if (!options.metrics_address.empty()) {
    try {
      server->exposer_ =
          std::make_unique<prometheus::Exposer>(options.metrics_address);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat(
          "cannot serve metrics on ", options.metrics_address, ": ", e.what()));
    }
    server->exposer_->RegisterCollectable(server->metrics().registry());
    server->exposer_->RegisterCollectable(server->metrics().process());
    const std::vector<int> ports = server->exposer_->GetListeningPorts();
    server->metrics_port_ = ports.empty() ? 0 : ports.front();
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, credentials, &server->port_);
  if (!options.health_address.empty()) {
    builder.AddListeningPort(options.health_address,
                             grpc::InsecureServerCredentials(),
                             &server->health_port_);
  }
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
  builder.RegisterService(server->oip_service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0 ||
      (!options.health_address.empty() && server->health_port_ == 0)) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.address));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(kLivenessService,
                                                             true);
  server->SetReady(false);
  if (!options.http_address.empty()) {
    const RunExecutorOptions& executor = options.engine.executor;
    ASSIGN_OR_RETURN(
        server->http_,
        HttpFront::Start(
            server->engine_, *server->auth_, server->ready_,
            {.address = options.http_address,
             .tls_cert_file = options.tls.cert_file,
             .tls_key_file = options.tls.key_file,
             .tls_client_ca_file = options.tls.client_ca_file,
             .max_request_bytes =
                 static_cast<size_t>(options.max_receive_message_bytes),
             // Every run the engine may hold, and a few for the rest.
             .threads =
                 executor.max_concurrent_runs + executor.max_queued_runs + 8}));
  }
  return server;
}

void LoopServer::SetReady(bool ready) {
  ready_ = ready;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus("", ready);
  health->SetServingStatus(kServiceName, ready);
}

void LoopServer::Serve(PipelineCatalog catalog) {
  if (shut_down_) return;
  engine_.Serve(std::move(catalog));
  SetReady(true);
}

void LoopServer::Shutdown(absl::Duration grace) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  SetReady(false);
  engine_.StartDraining();
  if (!engine_.WaitForIdle(grace)) {
    engine_.CancelAll(
        absl::UnavailableError("the server shut down before the run finished"));
    // Runs stop at their next iteration boundary and finish their streams;
    // a stream whose client stopped reading is cut off below.
    engine_.WaitForIdle(absl::Seconds(5));
  }
  // Every run is done. What is left, chiefly round_robin clients' health
  // watches (which never end by themselves), is cancelled now rather than
  // holding the exit up.
  server_->Shutdown(std::chrono::system_clock::now());
  if (http_ != nullptr) http_->Stop();
  engine_.Shutdown();
}

LoopServer::~LoopServer() { Shutdown(absl::ZeroDuration()); }

}  // namespace loopserve
