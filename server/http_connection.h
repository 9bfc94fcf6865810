// The HTTP front's connections: httplib's servers (plaintext and TLS) with
// loopserve's own connection loop, which bounds what a client can make the
// server hold before its request is judged.
//
// Note [bounded connections]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~
// httplib (Debian 12's 0.11.4) reads a request line with no end, holding
// every byte: one client sending 300 MB without a newline took the process
// to 519 MB. And a request refused from its headers (no token, a body too
// large) leaves its body unread, which httplib's keep-alive loop then reads
// as the next request line, the same way. So each connection here runs
// through a Stream of ours that:
//   - takes at most max_header_bytes before the request's headers are
//     judged (the pre-routing handler calls HeadersJudged()): past that
//     the read fails and the connection closes;
//   - closes the connection after a response whose body was not read
//     (CloseAfterResponse()), after a moment's lingering so that the
//     client reads the response rather than a reset.
// Everything else (parsing, routing, keep-alive counts and timeouts) is
// httplib's own.
//
// Thread-safety: a connection is served on one thread; Current() is that
// thread's.
#pragma once

#include <httplib.h>

#include <cstddef>

namespace loopserve {

class HttpConnection {
 public:
  // The connection the calling thread serves; null outside a handler.
  static HttpConnection* Current();

  // The request's headers were judged acceptable: its body may be read.
  void HeadersJudged() { headers_judged_ = true; }
  // The request's body will not be read: close once the response is out.
  void CloseAfterResponse() { close_ = true; }
  // The connection's socket (to shut down under a stalled write).
  virtual int socket() const = 0;

 protected:
  ~HttpConnection() = default;
  bool headers_judged_ = false;
  bool close_ = false;
};

struct HttpConnectionLimits {
  // Request line and headers, in bytes.
  size_t max_header_bytes = 64 << 10;
};

// httplib::Server (plaintext) or httplib::SSLServer (TLS, with the
// SSLServer's constructor arguments) serving bounded connections.
template <typename Base>
class BoundedHttpServer final : public Base {
 public:
  template <typename... Args>
  explicit BoundedHttpServer(HttpConnectionLimits limits, Args&&... args)
      : Base(std::forward<Args>(args)...), limits_(limits) {}

 private:
  bool process_and_close_socket(socket_t sock) override;

  const HttpConnectionLimits limits_;
};

extern template class BoundedHttpServer<httplib::Server>;
extern template class BoundedHttpServer<httplib::SSLServer>;

}  // namespace loopserve
