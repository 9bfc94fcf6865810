// Security (issue #14; the HTTP port, #17): bearer tokens from a file that
// may change, TLS and mTLS from PEM files, and a plaintext health port for
// probes. Each test runs a real server on port 0 and talks to it as a
// client would.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "app/default_pipelines.h"
#include "client/loop_client.h"
#include "server/auth.h"
#include "server/loop_server.h"
#include "tests/testing/captured_log.h"
#include "tests/testing/eventually.h"
#include "tests/testing/metrics_text.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::CapturedLog;
using ::loopserve::testing::Eventually;
using ::loopserve::testing::MetricValue;
using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

v1::RunRequest SeedRun() {
  v1::RunRequest request;
  request.set_pipeline("seed-loop");
  (*request.mutable_inputs())["num_steps"].set_int64_value(2);
  (*request.mutable_inputs())["x"].set_int64_value(0);
  return request;
}

void WriteFile(const std::string& path, absl::string_view text) {
  std::ofstream(path, std::ios::trunc) << text;
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string((std::filesystem::temp_directory_path() /
                            absl::StrCat("loopserve-security-", getpid()))
                               .string());
    ASSERT_EQ(
        std::system(absl::StrCat("bash " MAKE_TEST_CERTS " ", *dir_).c_str()),
        0);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string File(absl::string_view name) {
    return absl::StrCat(*dir_, "/", name);
  }

  void Start(LoopServerOptions options) {
    options.address = "127.0.0.1:0";
    ASSERT_OK_AND_ASSIGN(PipelineCatalog catalog,
                         LoadDefaultPipelines(c10::kCPU));
    ASSERT_OK_AND_ASSIGN(server_,
                         LoopServer::Start(options, std::move(catalog)));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
  }
  std::unique_ptr<LoopClient> Connect(ConnectOptions options = {},
                                      int port = 0) {
    absl::StatusOr<std::unique_ptr<LoopClient>> client = LoopClient::Connect(
        absl::StrCat("127.0.0.1:", port != 0 ? port : server_->port()),
        options);
    EXPECT_OK(client.status());
    return client.ok() ? *std::move(client) : nullptr;
  }
  double AuthFailures(absl::string_view reason) {
    return MetricValue(server_->metrics().Scrape(),
                       absl::StrCat(R"(loopserve_auth_failures_total{reason=")",
                                    reason, R"("})"));
  }

  static std::string* dir_;
  std::unique_ptr<LoopServer> server_;
};

std::string* SecurityTest::dir_ = nullptr;

TEST(ParseTokensTest, ReadsPairsSkipsCommentsAndNamesBadLines) {
  EXPECT_THAT(*ParseTokens("# operators\nalice s3cret\n\n  bob\tt0ken  \n"),
              ElementsAre(Pair("alice", "s3cret"), Pair("bob", "t0ken")));
  EXPECT_THAT(ParseTokens("alice s3cret\nbob\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "line 2: expected `PRINCIPAL TOKEN`, got 1 fields"));
  EXPECT_THAT(ParseTokens("alice same\nbob same\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "line 2: the token of 'bob' is given twice"));
}

// A token-less or unknown-token client gets UNAUTHENTICATED from every
// loopserve RPC, while health answers it; the principal is logged.
TEST_F(SecurityTest, TokensAreRequiredByTheApiButNotByHealth) {
  const std::string tokens = File("tokens");
  WriteFile(tokens, "# who may run\nalice s3cret-a\nbob s3cret-b\n");
  Start({.auth_tokens_file = tokens});

  std::unique_ptr<LoopClient> anonymous = Connect();
  EXPECT_EQ(*anonymous->Health(""), HealthStatus::SERVING);
  const auto unauthenticated =
      StatusIs(absl::StatusCode::kUnauthenticated,
               HasSubstr("send the metadata `authorization: Bearer TOKEN`"));
  EXPECT_THAT(anonymous->ListPipelines().status(), unauthenticated);
  EXPECT_THAT(anonymous->DescribePipeline("seed-loop").status(),
              unauthenticated);
  EXPECT_THAT(anonymous->Run(SeedRun()).status(), unauthenticated);
  EXPECT_EQ(AuthFailures("missing_token"), 3);

  EXPECT_THAT(Connect({.token = "s3cret-c"})->Run(SeedRun()).status(),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("not one the server knows")));
  EXPECT_EQ(AuthFailures("unknown_token"), 1);

  CapturedLog log;
  std::unique_ptr<LoopClient> alice = Connect({.token = "s3cret-a"});
  ASSERT_OK(alice->ListPipelines().status());
  v1::RunRequest failing = SeedRun();
  (*failing.mutable_inputs())["num_steps"].set_int64_value(-1);
  EXPECT_THAT(alice->Run(failing).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(alice->Run(SeedRun()).status(),
              StatusIs(absl::StatusCode::kOk, ::testing::_));
  EXPECT_TRUE(Eventually([&] {
    return !log.RunLines("principal=alice peer=ipv4:127.0.0.1:").empty();
  }));
}

// Tokens rotate without a restart: the file is re-read when it changes.
TEST_F(SecurityTest, AChangedTokensFileTakesEffect) {
  const std::string tokens = File("rotating-tokens");
  WriteFile(tokens, "alice old-token\n");
  Start({.auth_tokens_file = tokens});
  ASSERT_OK(Connect({.token = "old-token"})->ListPipelines().status());

  WriteFile(tokens, "alice new-token-of-another-length\n");
  std::unique_ptr<LoopClient> renewed =
      Connect({.token = "new-token-of-another-length"});
  EXPECT_TRUE(Eventually([&] { return renewed->ListPipelines().ok(); }));
  EXPECT_THAT(Connect({.token = "old-token"})->ListPipelines().status(),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));

  // A broken file keeps the tokens in force.
  WriteFile(tokens, "alice\n");
  absl::SleepFor(absl::Milliseconds(1100));
  EXPECT_OK(renewed->ListPipelines().status());
}

TEST_F(SecurityTest, AMissingTokensFileStopsTheStart) {
  EXPECT_THAT(LoopServer::Start({.address = "127.0.0.1:0",
                                 .auth_tokens_file = File("no-such-file")})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--auth_tokens_file")));
}

// A TLS server refuses a plaintext client; a TLS client that trusts its CA
// runs; the plaintext health port answers probes and nothing else.
TEST_F(SecurityTest, TlsServerRefusesPlaintextAndKeepsHealthOpen) {
  Start(
      {.tls = {.cert_file = File("server.pem"), .key_file = File("server.key")},
       .health_address = "127.0.0.1:0"});
  std::unique_ptr<LoopClient> plaintext = Connect();
  EXPECT_THAT(plaintext->ListPipelines().status(),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));

  std::unique_ptr<LoopClient> tls = Connect({.tls_ca_file = File("ca.pem")});
  ASSERT_OK_AND_ASSIGN(v1::RunResult result, tls->Run(SeedRun()));
  EXPECT_EQ(result.outputs().at("x").int64_value(), 2);
  // A client that trusts another CA does not trust this server.
  EXPECT_THAT(
      Connect({.tls_ca_file = File("rogue-ca.pem")})->ListPipelines().status(),
      StatusIs(absl::StatusCode::kUnavailable, ::testing::_));

  std::unique_ptr<LoopClient> probe = Connect({}, server_->health_port());
  EXPECT_EQ(*probe->Health(""), HealthStatus::SERVING);
  EXPECT_EQ(*probe->Health(kLivenessService), HealthStatus::SERVING);
  EXPECT_THAT(probe->Run(SeedRun()).status(),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("this port serves health checks only")));
  EXPECT_EQ(AuthFailures("plaintext"), 1);
}

// Over TLS the token is checked on the call's metadata, before its
// message is received (AuthProcessor): a token-less request larger than
// the server takes is UNAUTHENTICATED, not read and found too large; with
// a token, the same request is RESOURCE_EXHAUSTED. Health stays open.
TEST_F(SecurityTest, TlsCallsAreAuthenticatedBeforeTheirMessageIsRead) {
  const std::string tokens = File("early-tokens");
  WriteFile(tokens, "alice s3cret-a\n");
  LoopServerOptions options;
  options.tls = {.cert_file = File("server.pem"),
                 .key_file = File("server.key")};
  options.auth_tokens_file = tokens;
  options.max_receive_message_bytes = 1 << 20;
  Start(options);
  v1::RunRequest large = SeedRun();
  (*large.mutable_inputs())["x"].mutable_tensor()->set_raw_contents(
      std::string(2 << 20, '\0'));

  std::unique_ptr<LoopClient> anonymous =
      Connect({.tls_ca_file = File("ca.pem")});
  EXPECT_THAT(anonymous->Run(large).status(),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("the server requires a token")));
  EXPECT_THAT(anonymous->ListPipelines().status(),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_EQ(AuthFailures("missing_token"), 2);
  EXPECT_EQ(*anonymous->Health(""), HealthStatus::SERVING);

  std::unique_ptr<LoopClient> alice =
      Connect({.tls_ca_file = File("ca.pem"), .token = "s3cret-a"});
  EXPECT_THAT(alice->Run(large).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::_));
  EXPECT_OK(alice->Run(SeedRun()).status());
}

// mTLS: only a certificate the client CA signed gets in, and its common
// name is the principal.
TEST_F(SecurityTest, MutualTlsTakesOnlyCertificatesItsCaSigned) {
  Start({.tls = {.cert_file = File("server.pem"),
                 .key_file = File("server.key"),
                 .client_ca_file = File("ca.pem")}});
  EXPECT_THAT(
      Connect({.tls_ca_file = File("ca.pem")})->ListPipelines().status(),
      StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(Connect({.tls_ca_file = File("ca.pem"),
                       .tls_cert_file = File("mallory.pem"),
                       .tls_key_file = File("mallory.key")})
                  ->ListPipelines()
                  .status(),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));

  CapturedLog log;
  std::unique_ptr<LoopClient> alice =
      Connect({.tls_ca_file = File("ca.pem"),
               .tls_cert_file = File("alice.pem"),
               .tls_key_file = File("alice.key")});
  v1::RunRequest failing = SeedRun();
  failing.set_pipeline("no-such-pipeline");
  EXPECT_THAT(alice->Run(failing).status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_TRUE(
      Eventually([&] { return !log.RunLines("principal=alice").empty(); }));
  ASSERT_OK(alice->Run(SeedRun()).status());
}

// A renewed certificate is served without a restart: after the files
// change, new connections get the new one.
TEST_F(SecurityTest, ARenewedCertificateIsServedWithoutARestart) {
  const std::string cert = File("rotating.pem");
  const std::string key = File("rotating.key");
  std::filesystem::copy_file(File("server.pem"), cert,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(File("server.key"), key,
                             std::filesystem::copy_options::overwrite_existing);
  Start({.tls = {.cert_file = cert, .key_file = key, .refresh_interval_s = 1}});
  ASSERT_OK(Connect({.tls_ca_file = File("ca.pem")})->ListPipelines().status());

  // The renewal, signed by the other CA, written as cert-manager does:
  // the key and the certificate replaced.
  std::filesystem::copy_file(File("renewed.key"), key,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(File("renewed.pem"), cert,
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_TRUE(Eventually([&] {
    return Connect({.tls_ca_file = File("rogue-ca.pem")})->ListPipelines().ok();
  }));
}

TEST_F(SecurityTest, TlsFilesThatCannotBeReadStopTheStart) {
  EXPECT_THAT(LoopServer::Start({.address = "127.0.0.1:0",
                                 .tls = {.cert_file = File("server.pem"),
                                         .key_file = File("missing.key")}})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls_key_file: cannot read")));
  EXPECT_THAT(LoopServer::Start({.address = "127.0.0.1:0",
                                 .tls = {.client_ca_file = File("ca.pem")}})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("needs --tls_cert_file")));
}

// The HTTP front takes the same TLS and tokens: HTTPS from the same files,
// 401 without a token, and a key that is not the certificate's refused at
// start.
TEST_F(SecurityTest, TheHttpPortTakesTheSameTlsAndTokens) {
  const std::string tokens = File("http-tokens");
  WriteFile(tokens, "alice s3cret-a\n");
  LoopServerOptions options;
  options.tls = {.cert_file = File("server.pem"),
                 .key_file = File("server.key")};
  options.auth_tokens_file = tokens;
  options.http_address = "127.0.0.1:0";
  Start(options);
  httplib::SSLClient client("127.0.0.1", server_->http_port());
  client.set_ca_cert_path(File("ca.pem").c_str());
  client.enable_server_certificate_verification(true);
  httplib::Result refused = client.Get("/v1/pipelines");
  ASSERT_TRUE(refused) << httplib::to_string(refused.error());
  EXPECT_EQ(refused->status, 401);
  EXPECT_THAT(refused->body, HasSubstr("UNAUTHENTICATED"));
  httplib::Result listed =
      client.Get("/v1/pipelines", {{"Authorization", "Bearer s3cret-a"}});
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->status, 200);
  EXPECT_THAT(listed->body, HasSubstr("digits-text"));
  EXPECT_EQ(AuthFailures("missing_token"), 1);

  httplib::SSLClient stranger("127.0.0.1", server_->http_port());
  stranger.set_ca_cert_path(File("rogue-ca.pem").c_str());
  stranger.enable_server_certificate_verification(true);
  EXPECT_FALSE(stranger.Get("/healthz"));

  LoopServerOptions mismatched;
  mismatched.address = "127.0.0.1:0";
  mismatched.tls = {.cert_file = File("server.pem"),
                    .key_file = File("renewed.key")};
  mismatched.http_address = "127.0.0.1:0";
  EXPECT_THAT(LoopServer::Start(mismatched).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is not the key of the certificate")));
}

// What a plaintext HTTP/1.1 server answers `head` (the request line and
// headers, then "\r\n") and the first `body` bytes of a body: everything it
// sends until it closes the connection, or what came within 10 s.
std::string HttpExchange(int port, const std::string& head,
                         const std::string& body) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string answer;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
      0) {
    const std::string sent = head + "\r\n" + body;
    (void)send(fd, sent.data(), sent.size(), MSG_NOSIGNAL);
    char buffer[4096];
    ssize_t n;
    while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0)
      answer.append(buffer, n);
  }
  close(fd);
  return answer;
}

// Note [headers before bodies]: a request refused by its headers is
// answered before its body arrives (here it never does), so a client
// without a token cannot make the server hold a body; the connection then
// closes. Before, the server waited for the whole declared body.
TEST_F(SecurityTest, HttpRefusesFromTheHeadersWithoutReadingTheBody) {
  const std::string tokens = File("body-tokens");
  WriteFile(tokens, "alice s3cret-a\n");
  LoopServerOptions options;
  options.auth_tokens_file = tokens;
  options.max_receive_message_bytes = 1 << 20;
  options.http_address = "127.0.0.1:0";
  Start(options);
  const int port = server_->http_port();
  const std::string run =
      "POST /v1/pipelines/seed-loop:run HTTP/1.1\r\n"
      "Host: localhost\r\n";

  std::string answer = HttpExchange(port, run + "Content-Length: 268435456\r\n",
                                    "{\"inputs\": ");
  EXPECT_THAT(answer, HasSubstr("HTTP/1.1 401"));
  EXPECT_THAT(answer, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(answer, HasSubstr("Connection: close"));
  EXPECT_EQ(AuthFailures("missing_token"), 1);

  const std::string alice = "Authorization: Bearer s3cret-a\r\n";
  answer = HttpExchange(port, run + alice + "Content-Length: 2000000\r\n", "{");
  EXPECT_THAT(answer, HasSubstr("HTTP/1.1 413"));
  EXPECT_THAT(answer, HasSubstr("RESOURCE_EXHAUSTED"));
  EXPECT_THAT(answer, HasSubstr("--max_request_bytes=1048576"));

  answer = HttpExchange(
      port, run + alice + "Content-Length: 2\r\nContent-Length: 12\r\n", "{}");
  EXPECT_THAT(answer, HasSubstr("HTTP/1.1 400"));
  EXPECT_THAT(answer, HasSubstr("conflicting Content-Length headers"));

  answer = HttpExchange(port,
                        run + alice +
                            "Content-Length: 2\r\n"
                            "Transfer-Encoding: chunked\r\n",
                        "{}");
  EXPECT_THAT(answer, HasSubstr("HTTP/1.1 400"));
  EXPECT_THAT(answer, HasSubstr("both Content-Length and Transfer-Encoding"));

  // A request line with no end is cut off at 64 KiB, not held whole (the
  // server closes without an answer; before, it held the line until its
  // end and answered 414).
  EXPECT_EQ(HttpExchange(port, "GET /" + std::string(1 << 20, 'a'), ""), "");

  // Only a run takes a body of any size.
  answer = HttpExchange(port,
                        "GET /v1/pipelines HTTP/1.1\r\nHost: localhost\r\n" +
                            alice + "Content-Length: 100000\r\n",
                        "{");
  EXPECT_THAT(answer, HasSubstr("HTTP/1.1 413"));
  EXPECT_THAT(answer, HasSubstr("only a run takes a body larger than 65536"));

  // A run's body well past that runs (512 KiB of tensor in base64: once,
  // httplib's bound on bodies cut it at 64 KiB).
  const std::string tensor_body = absl::StrCat(
      R"({"inputs": {"num_steps": {"int64_value": "1"},
                     "x": {"tensor": {"datatype": "FP32",
                                      "shape": ["131072"],
                                      "raw_contents": ")",
      std::string((512 << 10) / 3 * 4, 'A'), R"(AAA="}}}})");
  answer = HttpExchange(
      port,
      run + alice +
          absl::StrCat("Content-Length: ", tensor_body.size(), "\r\n") +
          "Connection: close\r\n",
      tensor_body);
  EXPECT_THAT(answer, HasSubstr("HTTP/1.1 200"));
  EXPECT_THAT(answer, HasSubstr("event: end"));

  // And a small one runs.
  const std::string body =
      R"({"inputs": {"num_steps": {"int64_value": "2"},
                     "x": {"int64_value": "0"}}})";
  answer = HttpExchange(
      port,
      run + alice + absl::StrCat("Content-Length: ", body.size(), "\r\n") +
          "Connection: close\r\n",
      body);
  EXPECT_THAT(answer, HasSubstr("HTTP/1.1 200"));
  EXPECT_THAT(answer, HasSubstr("event: end"));
}

// The server's bound on request bytes in flight
// (--max_request_bytes_in_flight): what runs hold and what HTTP bodies
// being read hold count together; past it, RESOURCE_EXHAUSTED on every
// front, and the bytes come back when runs end.
TEST_F(SecurityTest, RequestBytesInFlightAreBounded) {
  LoopServerOptions options;
  options.http_address = "127.0.0.1:0";
  // SeedRun() is about 40 bytes.
  options.engine.max_request_bytes_in_flight = 100;
  Start(options);
  std::unique_ptr<LoopClient> client = Connect();

  v1::RunRequest large = SeedRun();
  large.set_request_id(std::string(100, 'r'));
  EXPECT_THAT(client->Run(large).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("--max_request_bytes_in_flight=100")));

  const std::string body(5000, ' ');
  const std::string answer =
      HttpExchange(server_->http_port(),
                   absl::StrCat("POST /v1/pipelines/seed-loop:run HTTP/1.1\r\n"
                                "Host: localhost\r\nContent-Length: ",
                                body.size(), "\r\n"),
                   body);
  EXPECT_THAT(answer, HasSubstr("HTTP/1.1 429"));
  EXPECT_THAT(answer, HasSubstr("--max_request_bytes_in_flight=100"));

  // A run holds its request while it runs, and gives it back at its end.
  EXPECT_OK(client->Run(SeedRun()).status());
  EXPECT_TRUE(server_->engine().WaitForIdle(absl::Seconds(10)));
  EXPECT_EQ(server_->engine().request_bytes_in_flight(), 0);
}

}  // namespace
}  // namespace loopserve
