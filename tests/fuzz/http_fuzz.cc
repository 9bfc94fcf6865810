// libFuzzer target: bytes sent to the HTTP front as a client would send
// them, on one connection, then the client's half-close: httplib's parser
// under loopserve's connection loop (Note [bounded connections]), the
// header screening that refuses before a body is read (Note [headers
// before bodies]), the run route's body reading under the request-bytes
// hold, and the runs that start. A crash or sanitizer report is a finding;
// so is a server that stops answering.
//
//   build-sanitize/tests/fuzz/http_fuzz -max_total_time=60 \
//       NEW_CORPUS tests/fuzz/corpus/http
#include <arpa/inet.h>
#include <google/protobuf/stubs/logging.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "app/default_pipelines.h"
#include "server/loop_server.h"

namespace loopserve {
namespace {

// One server for the whole session, with small bounds so that an input
// cannot legitimately ask for much.
LoopServer& Server() {
  static LoopServer* server = [] {
    LoopServerOptions options;
    options.address = "127.0.0.1:0";
    options.http_address = "127.0.0.1:0";
    options.max_receive_message_bytes = 1 << 16;
    options.engine.max_request_bytes_in_flight = 1 << 18;
    options.engine.limits.max_iterations = 8;
    options.engine.stream_idle_timeout = absl::Seconds(1);
    absl::StatusOr<PipelineCatalog> catalog = LoadDefaultPipelines(c10::kCPU);
    if (!catalog.ok()) std::abort();
    absl::StatusOr<std::unique_ptr<LoopServer>> started =
        LoopServer::Start(options, *std::move(catalog));
    if (!started.ok()) std::abort();
    return started->release();
  }();
  return *server;
}

// Sends `data`, half-closes, and reads the answer until the server closes
// (or 10 s pass: then the server hung on the input). Each connection comes
// from its own loopback address: the server closes first, and its
// TIME_WAITs would otherwise use up one address's ports within a minute
// of fuzzing (connect then fails: not a finding).
bool Exchange(const uint8_t* data, size_t size) {
  static uint32_t next_source = 0;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in source{};
  source.sin_family = AF_INET;
  source.sin_addr.s_addr = htonl((127u << 24) | (1 + next_source++ % 0xfffffe));
  (void)bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof(source));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(Server().http_port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
      0) {
    close(fd);
    return true;  // the client's trouble, not the server's
  }
  (void)send(fd, data, size, MSG_NOSIGNAL);
  shutdown(fd, SHUT_WR);
  char buffer[16 << 10];
  ssize_t n;
  bool answered = true;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) != 0) {
    if (n < 0) {
      answered = errno != EAGAIN && errno != EWOULDBLOCK;  // a reset is fine
      break;
    }
  }
  close(fd);
  return answered;
}

}  // namespace
}  // namespace loopserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)quiet;
  if (!loopserve::Exchange(data, size)) std::abort();
  return 0;
}
