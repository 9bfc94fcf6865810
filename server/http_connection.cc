#include "server/http_connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>

namespace loopserve {
namespace {

thread_local HttpConnection* current_connection = nullptr;

int Milliseconds(time_t sec, time_t usec) {
  return static_cast<int>(sec * 1000 + usec / 1000);
}

bool Poll(int fd, short events, int timeout_ms) {
  pollfd entry{.fd = fd, .events = events, .revents = 0};
  int ready;
  do {
    ready = poll(&entry, 1, timeout_ms);
  } while (ready < 0 && errno == EINTR);
  return ready > 0;
}

void AddressOf(const sockaddr_storage& address, std::string& ip, int& port) {
  char text[INET6_ADDRSTRLEN] = "";
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text));
    port = ntohs(v4.sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text));
    port = ntohs(v6.sin6_port);
  }
  ip = text;
}

// One connection: a socket, perhaps under TLS, read within the header
// budget until the headers are judged (Note [bounded connections]).
class Connection final : public httplib::Stream, public HttpConnection {
 public:
  Connection(int fd, SSL* ssl, int read_timeout_ms, int write_timeout_ms,
             size_t max_header_bytes)
      : fd_(fd),
        ssl_(ssl),
        read_timeout_ms_(read_timeout_ms),
        write_timeout_ms_(write_timeout_ms),
        max_header_bytes_(max_header_bytes) {}

  // Before each request.
  void NextRequest() {
    headers_judged_ = false;
    header_bytes_ = 0;
  }
  bool closing() const { return close_; }

  bool is_readable() const override {
    return (ssl_ != nullptr && SSL_pending(ssl_) > 0) ||
           Poll(fd_, POLLIN, read_timeout_ms_);
  }
  bool is_writable() const override {
    return Poll(fd_, POLLOUT, write_timeout_ms_);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (!headers_judged_) {
      if (header_bytes_ >= max_header_bytes_) {
        close_ = true;
        return -1;
      }
      size = std::min(size, max_header_bytes_ - header_bytes_);
    }
    if (!is_readable()) return -1;
    ssize_t n;
    if (ssl_ != nullptr) {
      n = SSL_read(ssl_, ptr,
                   static_cast<int>(std::min<size_t>(size, 1 << 30)));
    } else {
      do {
        n = recv(fd_, ptr, size, 0);
      } while (n < 0 && errno == EINTR);
    }
    if (n > 0 && !headers_judged_) header_bytes_ += static_cast<size_t>(n);
    return n;
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    if (ssl_ != nullptr) {
      return SSL_write(ssl_, ptr,
                       static_cast<int>(std::min<size_t>(size, 1 << 30)));
    }
    ssize_t n;
    do {
      n = send(fd_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    if (getpeername(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      AddressOf(address, ip, port);
    }
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      AddressOf(address, ip, port);
    }
  }
  socket_t socket() const override { return fd_; }

  // After a response whose request was not read whole: stop sending, and
  // read (dropping it) what the client is still sending for a moment, so
  // that the close does not reset the connection under the response.
  void Linger() {
    if (ssl_ != nullptr) SSL_shutdown(ssl_);
    shutdown(fd_, SHUT_WR);
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    char sink[16 << 10];
    size_t drained = 0;
    while (drained < (4 << 20) && std::chrono::steady_clock::now() < until &&
           Poll(fd_, POLLIN, 100)) {
      const ssize_t n = recv(fd_, sink, sizeof(sink), 0);
      if (n <= 0) break;
      drained += static_cast<size_t>(n);
    }
  }

 private:
  const int fd_;
  SSL* const ssl_;
  const int read_timeout_ms_;
  const int write_timeout_ms_;
  const size_t max_header_bytes_;
  size_t header_bytes_ = 0;
};

}  // namespace

HttpConnection* HttpConnection::Current() { return current_connection; }

template <typename Base>
bool BoundedHttpServer<Base>::process_and_close_socket(socket_t sock) {
  SSL* ssl = nullptr;
  if constexpr (std::is_same_v<Base, httplib::SSLServer>) {
    // The handshake gets the read timeout.
    const timeval timeout{.tv_sec = this->read_timeout_sec_,
                          .tv_usec = this->read_timeout_usec_};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ssl = SSL_new(this->ssl_context());
    if (ssl == nullptr || SSL_set_fd(ssl, sock) != 1 || SSL_accept(ssl) != 1) {
      if (ssl != nullptr) SSL_free(ssl);
      shutdown(sock, SHUT_RDWR);
      close(sock);
      return false;
    }
  }
  Connection connection(
      sock, ssl,
      Milliseconds(this->read_timeout_sec_, this->read_timeout_usec_),
      Milliseconds(this->write_timeout_sec_, this->write_timeout_usec_),
      limits_.max_header_bytes);
  current_connection = &connection;
  const auto setup = [ssl](httplib::Request& req) {
    if (ssl != nullptr) req.ssl = ssl;
  };
  bool ok = false;
  for (size_t count = this->keep_alive_max_count_; count > 0; --count) {
    // Waits for the next request while the server runs.
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::seconds(this->keep_alive_timeout_sec_);
    bool readable = ssl != nullptr && SSL_pending(ssl) > 0;
    while (!readable && this->is_running() &&
           std::chrono::steady_clock::now() < until) {
      readable = Poll(sock, POLLIN, 100);
    }
    if (!readable || !this->is_running()) break;
    connection.NextRequest();
    bool connection_closed = false;
    ok =
        this->process_request(connection, count == 1, connection_closed, setup);
    if (connection.closing()) {
      connection.Linger();
      break;
    }
    if (!ok || connection_closed) break;
  }
  current_connection = nullptr;
  if (ssl != nullptr) {
    SSL_shutdown(ssl);
    SSL_free(ssl);
  }
  shutdown(sock, SHUT_RDWR);
  close(sock);
  return ok;
}

template class BoundedHttpServer<httplib::Server>;
template class BoundedHttpServer<httplib::SSLServer>;

}  // namespace loopserve
