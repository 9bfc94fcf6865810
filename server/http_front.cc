#include "server/http_front.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <httplib.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "server/certificate_files.h"
#include "server/http_connection.h"
#include "server/run_handle.h"
#include "server/web_assets.h"
#include "util/status_macros.h"

namespace loopserve {
namespace {

namespace json = google::protobuf::util;

constexpr char kJson[] = "application/json";

std::string ToJson(const google::protobuf::Message& message) {
  json::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  // Only a message with unknown Any types can fail to print; ours have none.
  (void)json::MessageToJsonString(message, &out, options);
  return out;
}

// The HTTP status of a gRPC code, as Google's APIs map them.
int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

// {"code": "INVALID_ARGUMENT", "message": "..."}
std::string ErrorJson(const absl::Status& status) {
  google::protobuf::Struct error;
  (*error.mutable_fields())["code"].set_string_value(
      absl::StatusCodeToString(status.code()));
  (*error.mutable_fields())["message"].set_string_value(
      std::string(status.message()));
  return ToJson(error);
}

void SendError(const absl::Status& status, httplib::Response& res) {
  res.status = HttpStatusOf(status.code());
  res.set_content(ErrorJson(status), kJson);
}

// An IterationBatch's JSON, with each preview as a PNG data URL: the
// mapping prints preview_png's bytes as base64, so the URL's prefix goes
// in front of each. The key followed by a quote is only ever that field:
// the same characters inside a string are escaped (\"), and a value named
// preview_png is an object.
std::string IterationsJson(const v1::IterationBatch& batch) {
  constexpr absl::string_view kKey = "\"preview_png\":\"";
  return absl::StrReplaceAll(
      ToJson(batch), {{kKey, absl::StrCat(kKey, "data:image/png;base64,")}});
}

std::string SseEvent(absl::string_view name, absl::string_view data) {
  return absl::StrCat("event: ", name, "\ndata: ", data, "\n\n");
}

// One event of the run's stream.
std::string ToSse(const v1::RunEvent& event) {
  switch (event.event_case()) {
    case v1::RunEvent::kStarted:
      return SseEvent("started", ToJson(event.started()));
    case v1::RunEvent::kIterations:
      return SseEvent("iterations", IterationsJson(event.iterations()));
    case v1::RunEvent::kResult:
      return SseEvent("result", ToJson(event.result()));
    default:
      return "";
  }
}

// How gRPC names a peer: ipv4:10.0.0.7:51234, ipv6:[::1]:51234.
std::string PeerOf(const httplib::Request& req) {
  if (absl::StrContains(req.remote_addr, ':')) {
    return absl::StrCat("ipv6:[", req.remote_addr, "]:", req.remote_port);
  }
  return absl::StrCat("ipv4:", req.remote_addr, ":", req.remote_port);
}

// The verified client certificate's common name (mTLS), else "".
std::string CommonNameOf(const httplib::Request& req) {
  if (req.ssl == nullptr) return "";
  X509* cert = SSL_get_peer_certificate(req.ssl);
  if (cert == nullptr) return "";
  std::string name(256, '\0');
  const int length =
      X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
                                name.data(), static_cast<int>(name.size()));
  X509_free(cert);
  name.resize(length > 0 ? length : 0);
  return name;
}

// One run streamed as server-sent events: the run's writer, drained by the
// connection's thread (Serve). One write in flight, as the engine expects:
// an event is taken, written to the socket, then the run is told.
class SseRun final : public RunEventWriter {
 public:
  explicit SseRun(Engine& engine) : engine_(engine) {}

  void StartWrite(std::shared_ptr<const v1::RunEvent> event) override {
    absl::MutexLock lock(&mu_);
    pending_.push_back(std::move(event));
  }
  void Finish(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    finished_ = status;
  }
  // Note [stalled readers]: the write in flight blocks in the socket; the
  // connection is shut down under it, so that it fails now rather than at
  // the write timeout, and the run's slot is freed.
  void Abort() override {
    if (socket_ >= 0) shutdown(socket_, SHUT_RDWR);
  }

  RunHandle& handle() { return handle_; }
  // The connection's socket, for Abort; from the connection's thread,
  // before the run can write.
  void set_socket(int socket) { socket_ = socket; }

  // Writes the run's events to `sink` until it finishes, then `end` or
  // `error`, and releases the run. A comment line every second while the
  // loop is busy finds a closed connection: the run is then cancelled, and
  // its remaining events are dropped until it finishes. No sink: the
  // connection is gone already.
  bool Serve(httplib::DataSink* sink) {
    bool connected = sink != nullptr;
    const auto hang_up = [&] {
      connected = false;
      handle_.Cancel(absl::CancelledError(
          "the client closed the connection before the run finished"));
    };
    if (!connected) hang_up();
    while (true) {
      std::shared_ptr<const v1::RunEvent> event;
      std::optional<absl::Status> finished;
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(this, &SseRun::Ready),
                             absl::Seconds(1));
        if (!pending_.empty()) {
          event = std::move(pending_.front());
          pending_.pop_front();
        } else {
          finished = finished_;
        }
      }
      if (event != nullptr) {
        const std::string text = ToSse(*event);
        event.reset();
        const bool ok = connected && sink->write(text.data(), text.size());
        if (!ok && connected) hang_up();
        handle_.OnWriteDone(ok);
      } else if (finished.has_value()) {
        if (connected) {
          const std::string text =
              finished->ok() ? SseEvent("end", "{}")
                             : SseEvent("error", ErrorJson(*finished));
          connected = sink->write(text.data(), text.size());
          if (connected) sink->done();
        }
        // As the gRPC fronts count: a run the server ended for its
        // client (the idle timeout's DEADLINE_EXCEEDED) is counted so,
        // though the connection is gone by then.
        const bool ours_is_a_cancel =
            finished->code() == absl::StatusCode::kCancelled ||
            finished->code() == absl::StatusCode::kDeadlineExceeded;
        Release(connected || ours_is_a_cancel
                    ? *finished
                    : absl::CancelledError("the client closed the connection"));
        return connected;
      } else if (connected) {
        constexpr absl::string_view kHeartbeat = ":\n\n";
        if (!sink->write(kHeartbeat.data(), kHeartbeat.size())) hang_up();
      }
    }
  }

  // When the response ends without Serve (the connection failed before the
  // stream began): cancels the run, waits for it, and releases it.
  void Abandon() {
    {
      absl::MutexLock lock(&mu_);
      if (released_) return;
    }
    Serve(nullptr);
  }

 private:
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !pending_.empty() || finished_.has_value();
  }

  void Release(const absl::Status& seen) {
    {
      absl::MutexLock lock(&mu_);
      released_ = true;
    }
    engine_.Release(handle_.get(), seen);
  }

  Engine& engine_;
  RunHandle handle_;
  int socket_ = -1;
  absl::Mutex mu_;
  std::deque<std::shared_ptr<const v1::RunEvent>> pending_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> finished_ ABSL_GUARDED_BY(mu_);
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

class HttpFront::Routes {
 public:
  Routes(Engine& engine, Authenticator& auth, const std::atomic<bool>& ready,
         bool over_tls, size_t max_request_bytes)
      : engine_(engine),
        auth_(auth),
        ready_(ready),
        over_tls_(over_tls),
        max_request_bytes_(max_request_bytes) {}

  void Install(httplib::Server& server) {
    // Note [headers before bodies]
    // ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    // httplib calls this once a request's headers are in, before it reads
    // the body: a request that will be refused is refused here, without
    // taking its body into memory (before, a token-less client could make
    // the server hold --max_request_bytes per connection). Its body is
    // never read, so its connection closes (Note [bounded connections] in
    // server/http_connection.h).
    server.set_pre_routing_handler(
        [this](const httplib::Request& req, httplib::Response& res) {
          HttpConnection* connection = HttpConnection::Current();
          const absl::Status status = Screen(req);
          if (status.ok()) {
            if (connection != nullptr) connection->HeadersJudged();
            return httplib::Server::HandlerResponse::Unhandled;
          }
          SendError(status, res);
          if (status.code() == absl::StatusCode::kResourceExhausted) {
            res.status = 413;  // Payload Too Large
          }
          CloseAfterResponse(res);
          return httplib::Server::HandlerResponse::Handled;
        });
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
    server.Get(
        "/readyz", [this](const httplib::Request&, httplib::Response& res) {
          const bool ready = ready_.load();
          res.status = ready ? 200 : 503;
          res.set_content(ready ? "ready\n" : "not ready\n", "text/plain");
        });
    for (const WebAsset& asset : WebAssets()) {
      server.Get(std::string(asset.path),
                 [&asset](const httplib::Request&, httplib::Response& res) {
                   res.set_content(asset.body.data(), asset.body.size(),
                                   std::string(asset.content_type).c_str());
                 });
    }
    server.Get("/v1/pipelines",
               [this](const httplib::Request& req, httplib::Response& res) {
                 List(req, res);
               });
    server.Get(R"(/v1/pipelines/([^/:]+))",
               [this](const httplib::Request& req, httplib::Response& res) {
                 Describe(req, res);
               });
    // A run's body is read here, under a hold on the server's request
    // bytes (Engine::HoldRequestBytes); a run without one gets defaults.
    constexpr char kRun[] = R"(/v1/pipelines/([^/:]+):run)";
    server.Post(kRun,
                [this](const httplib::Request& req, httplib::Response& res,
                       const httplib::ContentReader& reader) {
                  RunWithBody(req, res, reader);
                });
    server.Post(kRun, [this](const httplib::Request& req,
                             httplib::Response& res) { Run(req, res, ""); });
  }

 private:
  // What may be refused from the headers alone (Note [headers before
  // bodies]), on every path: a body framed one way; only a run may carry
  // more than kSmallBody, and no more than --max_request_bytes; and on the
  // API, a caller who authenticates (asked before how much: a stranger
  // learns nothing of the limits).
  static constexpr uint64_t kSmallBody = 64 << 10;
  absl::Status Screen(const httplib::Request& req) {
    const size_t lengths = req.get_header_value_count("Content-Length");
    const bool chunked = req.has_header("Transfer-Encoding");
    if (lengths > 0 && chunked) {
      return absl::InvalidArgumentError(
          "the request has both Content-Length and Transfer-Encoding");
    }
    for (size_t i = 1; i < lengths; ++i) {
      if (req.get_header_value("Content-Length", i) !=
          req.get_header_value("Content-Length", 0)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the request has conflicting Content-Length headers ('",
            req.get_header_value("Content-Length", 0), "' and '",
            req.get_header_value("Content-Length", i), "')"));
      }
    }
    uint64_t length = 0;
    if (lengths > 0 &&
        !absl::SimpleAtoi(req.get_header_value("Content-Length"), &length)) {
      return absl::InvalidArgumentError(
          "the request's Content-Length is not a number");
    }
    const bool run = req.method == "POST" &&
                     absl::StartsWith(req.path, "/v1/") &&
                     absl::EndsWith(req.path, ":run");
    if (!run && (chunked || length > kSmallBody)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "only a run takes a body larger than ", kSmallBody, " bytes"));
    }
    if (absl::StartsWith(req.path, "/v1/")) {
      RETURN_IF_ERROR(Authenticate(req).status());
    }
    if (length > max_request_bytes_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the request's body of ", length,
                       " bytes is larger than the "
                       "server takes (--max_request_bytes=",
                       max_request_bytes_, ")"));
    }
    return absl::OkStatus();
  }

  // The body, read as it arrives under a hold on the server's request
  // bytes: its declared length first, what a chunked body adds as it
  // comes.
  void RunWithBody(const httplib::Request& req, httplib::Response& res,
                   const httplib::ContentReader& reader) {
    uint64_t declared = 0;
    if (req.has_header("Content-Length")) {
      (void)absl::SimpleAtoi(req.get_header_value("Content-Length"),
                             &declared);  // checked by Screen
    }
    absl::StatusOr<RequestBytesHold> hold =
        engine_.HoldRequestBytes(static_cast<int64_t>(declared));
    if (!hold.ok()) {
      RefuseBody(req, hold.status(), res);
      return;
    }
    std::string body;
    body.reserve(declared);
    absl::Status read;
    const bool complete = reader([&](const char* data, size_t size) {
      if (body.size() + size > max_request_bytes_) {
        read = absl::ResourceExhaustedError(
            absl::StrCat("the request's body is larger than the server takes "
                         "(--max_request_bytes=",
                         max_request_bytes_, ")"));
        return false;
      }
      if (static_cast<int64_t>(body.size() + size) > hold->bytes()) {
        read = hold->Grow(static_cast<int64_t>(body.size() + size) -
                          hold->bytes());
        if (!read.ok()) return false;
      }
      body.append(data, size);
      return true;
    });
    if (!read.ok() || !complete) {
      RefuseBody(req,
                 read.ok() ? absl::InvalidArgumentError(
                                 "the request's body ended early")
                           : read,
                 res);
      return;
    }
    Run(req, res, std::move(body));
  }

  // A run refused before its body was read whole: its connection closes.
  void RefuseBody(const httplib::Request& req, const absl::Status& status,
                  httplib::Response& res) {
    engine_.Refuse(status, req.matches[1].str(), "", {.peer = PeerOf(req)});
    SendError(status, res);
    CloseAfterResponse(res);
  }

  static void CloseAfterResponse(httplib::Response& res) {
    res.set_header("Connection", "close");
    if (HttpConnection* connection = HttpConnection::Current()) {
      connection->CloseAfterResponse();
    }
  }

  absl::StatusOr<std::string> Authenticate(const httplib::Request& req) {
    Authenticator::CallCredentials call{
        .over_tls = over_tls_, .verified_common_name = CommonNameOf(req)};
    if (req.has_header("Authorization")) {
      call.authorization = req.get_header_value("Authorization");
    }
    return auth_.Authenticate(call);
  }

  void List(const httplib::Request& req, httplib::Response& res) {
    if (absl::StatusOr<std::string> who = Authenticate(req); !who.ok()) {
      return SendError(who.status(), res);
    }
    const absl::StatusOr<v1::ListPipelinesResponse> pipelines =
        engine_.ListPipelines();
    if (!pipelines.ok()) return SendError(pipelines.status(), res);
    res.set_content(ToJson(*pipelines), kJson);
  }

  void Describe(const httplib::Request& req, httplib::Response& res) {
    if (absl::StatusOr<std::string> who = Authenticate(req); !who.ok()) {
      return SendError(who.status(), res);
    }
    const absl::StatusOr<const Pipeline*> pipeline =
        engine_.FindPipeline(req.matches[1].str());
    if (!pipeline.ok()) return SendError(pipeline.status(), res);
    res.set_content(ToJson((*pipeline)->description_proto), kJson);
  }

  void Run(const httplib::Request& req, httplib::Response& res,
           std::string body) {
    const std::string name = req.matches[1].str();
    RunClient client{.peer = PeerOf(req)};
    auto request = std::make_shared<v1::RunRequest>();
    const absl::Status parsed = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(client.principal, Authenticate(req));
      if (body.empty()) return absl::OkStatus();  // every default
      json::JsonParseOptions options;
      options.ignore_unknown_fields = false;
      const auto status =
          json::JsonStringToMessage(body, request.get(), options);
      // The body is not needed past here.
      std::string().swap(body);
      if (!status.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("the body is not a RunRequest in JSON: ",
                         std::string(status.message())));
      }
      if (!request->pipeline().empty() && request->pipeline() != name) {
        return absl::InvalidArgumentError(
            absl::StrCat("the body's pipeline '", request->pipeline(),
                         "' is not the path's '", name, "'"));
      }
      return absl::OkStatus();
    }();
    if (!parsed.ok()) {
      engine_.Refuse(parsed, name, request->request_id(), client);
      return SendError(parsed, res);
    }
    request->set_pipeline(name);
    auto stream = std::make_shared<SseRun>(engine_);
    if (HttpConnection* connection = HttpConnection::Current()) {
      stream->set_socket(connection->socket());
    }
    absl::StatusOr<std::shared_ptr<loopserve::Run>> run =
        engine_.StartRun(std::move(request), stream.get(), std::move(client));
    if (!run.ok()) return SendError(run.status(), res);
    stream->handle().Set(*std::move(run));
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");  // proxies: do not buffer
    res.set_chunked_content_provider(
        "text/event-stream",
        [stream](size_t, httplib::DataSink& sink) {
          return stream->Serve(&sink);
        },
        [stream](bool) { stream->Abandon(); });
  }

  Engine& engine_;
  Authenticator& auth_;
  const std::atomic<bool>& ready_;
  const bool over_tls_;
  const size_t max_request_bytes_;
};

absl::StatusOr<std::unique_ptr<HttpFront>> HttpFront::Start(
    Engine& engine, Authenticator& auth, const std::atomic<bool>& ready,
    const HttpFrontOptions& options) {
  std::unique_ptr<HttpFront> front(new HttpFront());
  const bool tls = !options.tls_cert_file.empty();
  if (tls) {
    ASSIGN_OR_RETURN(
        front->certificate_,
        CertificateFiles::Load(options.tls_cert_file, options.tls_key_file));
    CertificateFiles* certificate = front->certificate_.get();
    const std::string& client_ca = options.tls_client_ca_file;
    front->server_ = std::make_unique<BoundedHttpServer<httplib::SSLServer>>(
        HttpConnectionLimits{}, [certificate, &client_ca](SSL_CTX& ctx) {
          SSL_CTX_set_options(
              &ctx, SSL_OP_NO_COMPRESSION |
                        SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
          if (SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION) != 1) {
            return false;
          }
          certificate->Install(&ctx);
          if (client_ca.empty()) return true;
          // mTLS: a certificate the CA signed, or no handshake.
          STACK_OF(X509_NAME)* names =
              SSL_load_client_CA_file(client_ca.c_str());
          if (names == nullptr || SSL_CTX_load_verify_locations(
                                      &ctx, client_ca.c_str(), nullptr) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            return false;
          }
          SSL_CTX_set_client_CA_list(&ctx, names);
          SSL_CTX_set_verify(
              &ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
          return true;
        });
  } else {
    front->server_ = std::make_unique<BoundedHttpServer<httplib::Server>>(
        HttpConnectionLimits{});
  }
  httplib::Server& server = *front->server_;
  if (!server.is_valid()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the HTTP port cannot use --tls_client_ca_file '",
                     options.tls_client_ca_file, "': no CA certificate in it"));
  }
  const int threads = std::max(1, options.threads);
  server.new_task_queue = [threads] {
    return new httplib::ThreadPool(threads);
  };
  // httplib's own bound on what it reads of a body (a run's, through its
  // content reader, too); Screen has refused larger ones already.
  server.set_payload_max_length(options.max_request_bytes);
  // An SSE stream writes at least every second; a reader that takes
  // nothing for this long is gone.
  server.set_write_timeout(30, 0);
  front->routes_ = std::make_unique<Routes>(engine, auth, ready, tls,
                                            options.max_request_bytes);
  front->routes_->Install(server);

  // host:port, the host perhaps an IPv6 address in brackets ([::]:8000).
  const size_t colon = options.address.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(options.address).substr(colon + 1),
                        &port)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the HTTP address '", options.address, "' is not host:port"));
  }
  const std::string host(absl::StripPrefix(
      absl::StripSuffix(options.address.substr(0, colon), "]"), "["));
  front->port_ = port == 0 ? server.bind_to_any_port(host)
                           : (server.bind_to_port(host, port) ? port : -1);
  if (front->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve HTTP on ", options.address));
  }
  front->thread_ = std::thread([front = front.get()] {
    front->server_->listen_after_bind();
    front->listening_ended_ = true;
  });
  return front;
}

void HttpFront::Stop() {
  if (server_ == nullptr) return;
  // listen_after_bind may not have started its loop yet; stop() then
  // would not end it.
  while (!server_->is_running() && !listening_ended_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

HttpFront::HttpFront() = default;
HttpFront::~HttpFront() { Stop(); }

}  // namespace loopserve
