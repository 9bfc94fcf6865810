// HttpFront: loopserve over HTTP/1.1 (--http_port), on cpp-httplib, over the
// same Engine as the gRPC services: the same validation, limits, metrics,
// logs, tokens and TLS.
//
//   GET  /v1/pipelines                  ListPipelinesResponse, as JSON
//   GET  /v1/pipelines/{name}           PipelineDescription, as JSON
//   POST /v1/pipelines/{name}:run       body: a RunRequest in JSON;
//        answer: text/event-stream, one event per RunEvent (`started`,
//        `iterations`, `result`: the message's JSON, tensors' bytes in
//        base64 beside their datatype and shape, previews as PNG data
//        URLs), then `end`, or `error` with the gRPC code and message.
//        Closing the connection cancels the run. A request refused before
//        it runs gets the HTTP status of its code and a JSON error instead.
//   GET  /healthz, /readyz              200, or 503 while loading/draining
//   GET  /                              the live preview page (server/web/)
//
// JSON is protobuf's JSON mapping with the proto's field names. Errors are
// {"code": "INVALID_ARGUMENT", "message": "..."} with the HTTP status of the
// code (400, 401, 404, 429, 503 ...).
//
// Thread-safety: Start and Stop from one thread; requests are served on
// the front's own threads, one per connection.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "server/auth.h"

namespace httplib {
class Server;
}

namespace loopserve {

class CertificateFiles;

struct HttpFrontOptions {
  // host:port; port 0 picks a free one (see port()).
  std::string address;
  // PEM files: HTTPS, as the gRPC port's TLS (the certificate and key are
  // re-read when they change: server/certificate_files.h). With a client
  // CA (read at start), clients must present a certificate it signed.
  std::string tls_cert_file{};
  std::string tls_key_file{};
  std::string tls_client_ca_file{};
  // Largest request body, in bytes.
  size_t max_request_bytes = 256 << 20;
  // Connections served at once; each open event stream holds one.
  int threads = 64;
};

class HttpFront {
 public:
  // Listens, and serves from its own threads. The engine, `auth` and
  // `ready` outlive the front.
  static absl::StatusOr<std::unique_ptr<HttpFront>> Start(
      Engine& engine, Authenticator& auth, const std::atomic<bool>& ready,
      const HttpFrontOptions& options);
  // Stops listening, and waits for the requests being served (end their
  // runs first: Engine::CancelAll).
  void Stop();
  ~HttpFront();

  int port() const { return port_; }

 private:
  class Routes;
  HttpFront();

  // Before server_: its TLS context points at it.
  std::unique_ptr<CertificateFiles> certificate_;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<Routes> routes_;
  std::thread thread_;
  std::atomic<bool> listening_ended_{false};
  int port_ = 0;
};

}  // namespace loopserve
