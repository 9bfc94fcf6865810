// The OIP and HTTP fronts in process, so that their concurrency (many runs
// on one bidirectional stream, a stream that ends as a run starts, a
// connection closed mid-run) runs under the sanitizers too. The end-to-end
// script tests/e2e/fronts_test.sh drives them as clients do.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/support/sync_stream.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "app/default_pipelines.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/loop_server.h"
#include "tests/testing/eventually.h"
#include "tests/testing/metrics_text.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using inference::ModelInferRequest;
using inference::ModelStreamInferResponse;
using ::testing::HasSubstr;

ModelInferRequest SeedLoop(const std::string& id, int64_t steps,
                           int64_t every = 1) {
  ModelInferRequest request;
  request.set_model_name("seed-loop");
  request.set_id(id);
  for (const auto& [name, value] :
       std::map<std::string, int64_t>{{"num_steps", steps}, {"x", 0}}) {
    ModelInferRequest::InferInputTensor* input = request.add_inputs();
    input->set_name(name);
    input->set_datatype("INT64");
    input->add_shape(1);
    input->mutable_contents()->add_int64_contents(value);
  }
  (*request.mutable_parameters())["every"].set_int64_param(every);
  return request;
}

LoopServerOptions TestOptions() {
  LoopServerOptions options;
  options.address = "127.0.0.1:0";
  options.http_address = "127.0.0.1:0";
  options.engine.limits.max_iterations = int64_t{1} << 40;
  return options;
}

class FrontsTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(TestOptions()); }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
  }

  void StartServer(const LoopServerOptions& options) {
    ASSERT_OK_AND_ASSIGN(PipelineCatalog catalog,
                         LoadDefaultPipelines(c10::kCPU));
    ASSERT_OK_AND_ASSIGN(server_,
                         LoopServer::Start(options, std::move(catalog)));
    stub_ = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                            grpc::InsecureChannelCredentials()));
  }

  std::unique_ptr<LoopServer> server_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

TEST_F(FrontsTest, OneStreamCarriesManyRunsAndTheirErrors) {
  grpc::ClientContext context;
  auto stream = stub_->ModelStreamInfer(&context);
  ModelInferRequest bad = SeedLoop("bad", 2);
  bad.mutable_inputs(0)->set_datatype("NOPE");
  ASSERT_TRUE(stream->Write(SeedLoop("a", 3)));
  ASSERT_TRUE(stream->Write(bad));
  ASSERT_TRUE(stream->Write(SeedLoop("b", 2)));
  ASSERT_TRUE(stream->WritesDone());
  std::map<std::string, std::vector<ModelStreamInferResponse>> by_id;
  ModelStreamInferResponse response;
  while (stream->Read(&response)) {
    by_id[response.infer_response().id()].push_back(response);
  }
  ASSERT_OK(absl::Status(
      static_cast<absl::StatusCode>(stream->Finish().error_code()), ""));
  ASSERT_EQ(by_id["bad"].size(), 1u);
  EXPECT_THAT(by_id["bad"][0].error_message(),
              HasSubstr("INVALID_ARGUMENT: pipeline 'seed-loop': input "
                        "'num_steps': datatype 'NOPE'"));
  for (const auto& [id, iterations] :
       std::map<std::string, int>{{"a", 3}, {"b", 2}}) {
    const std::vector<ModelStreamInferResponse>& responses = by_id[id];
    ASSERT_EQ(responses.size(), iterations + 1u) << id;
    for (int i = 0; i < iterations; ++i) {
      EXPECT_EQ(responses[i]
                    .infer_response()
                    .parameters()
                    .at("iteration")
                    .int64_param(),
                i);
    }
    const auto& final = responses.back().infer_response();
    EXPECT_TRUE(final.parameters().at("triton_final_response").bool_param());
    int64_t x;
    ASSERT_EQ(final.raw_output_contents(0).size(), sizeof(x));
    std::memcpy(&x, final.raw_output_contents(0).data(), sizeof(x));
    EXPECT_EQ(x, iterations) << id;
  }
}

// A client that writes one request and half-closes at once: the end of
// reads races the run's start (a use-after-free once, found by the e2e
// test); every stream must still end with its final response.
TEST_F(FrontsTest, AStreamHalfClosedAtOnceStillGetsItsRun) {
  for (int i = 0; i < 50; ++i) {
    grpc::ClientContext context;
    auto stream = stub_->ModelStreamInfer(&context);
    ASSERT_TRUE(stream->Write(SeedLoop("r", 1)));
    ASSERT_TRUE(stream->WritesDone());
    ModelStreamInferResponse response;
    int responses = 0;
    bool final = false;
    while (stream->Read(&response)) {
      ++responses;
      final = response.infer_response().parameters().contains(
          "triton_final_response");
    }
    EXPECT_TRUE(stream->Finish().ok());
    EXPECT_EQ(responses, 2);
    EXPECT_TRUE(final);
  }
}

TEST_F(FrontsTest, CancellingAStreamCancelsItsRuns) {
  grpc::ClientContext context;
  auto stream = stub_->ModelStreamInfer(&context);
  ASSERT_TRUE(stream->Write(SeedLoop("endless", int64_t{1} << 40, 100000)));
  ASSERT_TRUE(stream->Write(SeedLoop("endless-too", int64_t{1} << 40, 100000)));
  ModelStreamInferResponse response;
  ASSERT_TRUE(stream->Read(&response));
  context.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(server_->engine().WaitForIdle(absl::Seconds(10)));
}

// Note [raw OIP methods]: a message that does not parse is named, on a
// unary call (INVALID_ARGUMENT, not gRPC's UNIMPLEMENTED with no message)
// and on a stream (an error response, then the stream's end with
// INVALID_ARGUMENT, not OK with the later requests dropped unsaid).
TEST_F(FrontsTest, OipMessagesThatDoNotParseAreNamed) {
  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                          grpc::InsecureChannelCredentials());
  // Field 1 (model_name), length-delimited, with a length past the end.
  const std::string garbage("\x0a\xff\xff\xff\xff\x0f", 6);
  grpc::Slice slice(garbage);
  const grpc::ByteBuffer bad(&slice, 1);
  {
    grpc::ClientContext context;
    grpc::ByteBuffer response;
    const grpc::Status status =
        grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
            channel.get(),
            grpc::internal::RpcMethod(
                "/inference.GRPCInferenceService/ModelInfer",
                grpc::internal::RpcMethod::NORMAL_RPC),
            &context, bad, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(),
                HasSubstr("the request does not parse as an "
                          "inference.ModelInferRequest"));
  }
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
      stream(grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer,
                                                       grpc::ByteBuffer>::
                 Create(channel.get(),
                        grpc::internal::RpcMethod(
                            "/inference.GRPCInferenceService/ModelStreamInfer",
                            grpc::internal::RpcMethod::BIDI_STREAMING),
                        &context));
  auto bytes = [](const ModelInferRequest& request) {
    grpc::ByteBuffer buffer;
    bool own;
    (void)grpc::SerializationTraits<ModelInferRequest>::Serialize(
        request, &buffer, &own);
    return buffer;
  };
  ASSERT_TRUE(stream->Write(bytes(SeedLoop("before", 2))));
  ASSERT_TRUE(stream->Write(bad));
  stream->Write(bytes(SeedLoop("after", 2)));
  stream->WritesDone();
  std::vector<ModelStreamInferResponse> responses;
  grpc::ByteBuffer buffer;
  while (stream->Read(&buffer)) {
    ModelStreamInferResponse response;
    ASSERT_TRUE(
        grpc::SerializationTraits<ModelStreamInferResponse>::Deserialize(
            &buffer, &response)
            .ok());
    responses.push_back(response);
  }
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("message 2 of the stream does not parse"));
  int before = 0;
  int errors = 0;
  for (const ModelStreamInferResponse& response : responses) {
    EXPECT_NE(response.infer_response().id(), "after");
    if (response.infer_response().id() == "before") ++before;
    if (!response.error_message().empty()) {
      ++errors;
      EXPECT_THAT(response.error_message(),
                  HasSubstr("INVALID_ARGUMENT: message 2 of the stream does "
                            "not parse"));
    }
  }
  EXPECT_EQ(before, 3);  // its two iterations and its result
  EXPECT_EQ(errors, 1);
}

// The cancel storm: many streams, each with many long runs, cancelled by
// their clients mid-stream, over and over. The cancel races every other
// event of a stream: runs starting and finishing, runs refused (the queue
// is full), a write in flight, the client's half-close, and the idle
// watchdog aborting a stalled reader. Once a use-after-free: OnCancel held
// runs that their own threads freed. LOOPSERVE_STORM_ROUNDS repeats it.
struct StormFlags {
  std::string name;
  int max_concurrent_runs;
  int max_queued_runs;
  absl::Duration stream_idle_timeout;
};

class CancelStormTest : public FrontsTest,
                        public ::testing::WithParamInterface<StormFlags> {
 protected:
  void SetUp() override {
    LoopServerOptions options = TestOptions();
    options.engine.executor = {
        .max_concurrent_runs = GetParam().max_concurrent_runs,
        .max_queued_runs = GetParam().max_queued_runs};
    options.engine.stream_idle_timeout = GetParam().stream_idle_timeout;
    StartServer(options);
  }
};

TEST_P(CancelStormTest, CancelledStreamsLeaveTheServerServing) {
  constexpr int kStreams = 20;
  constexpr int kRunsPerStream = 20;
  const char* rounds_env = std::getenv("LOOPSERVE_STORM_ROUNDS");
  const int rounds = rounds_env != nullptr ? std::atoi(rounds_env) : 3;
  for (int round = 0; round < rounds; ++round) {
    std::vector<std::thread> clients;
    for (int s = 0; s < kStreams; ++s) {
      clients.emplace_back([&, s] {
        grpc::ClientContext context;
        auto stream = stub_->ModelStreamInfer(&context);
        for (int r = 0; r < kRunsPerStream; ++r) {
          if (!stream->Write(
                  SeedLoop(absl::StrCat(s, "-", r), 1'000'000, 1000))) {
            break;
          }
        }
        // Some streams half-close first: the end of reads races too.
        if (s % 4 == 0) stream->WritesDone();
        ModelStreamInferResponse response;
        for (int i = 0; i < 10 + s % 3 && stream->Read(&response); ++i) {
        }
        context.TryCancel();
        stream->Finish();
      });
    }
    for (std::thread& client : clients) client.join();
    ASSERT_TRUE(server_->engine().WaitForIdle(absl::Seconds(30)))
        << "round " << round;
  }
  // And it serves on: a stream after the storm gets its run.
  grpc::ClientContext context;
  auto stream = stub_->ModelStreamInfer(&context);
  ASSERT_TRUE(stream->Write(SeedLoop("after", 2)));
  ASSERT_TRUE(stream->WritesDone());
  ModelStreamInferResponse response;
  int responses = 0;
  while (stream->Read(&response)) {
    EXPECT_EQ(response.error_message(), "");
    ++responses;
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(responses, 3);
}

INSTANTIATE_TEST_SUITE_P(
    Flags, CancelStormTest,
    ::testing::Values(
        // The server's defaults: most runs are refused (the queue is full),
        // their errors written while others are cancelled.
        StormFlags{"defaults", 32, 64, absl::ZeroDuration()},
        // Every run accepted: queued runs finish inside the cancel.
        StormFlags{"wide", 16, 512, absl::ZeroDuration()},
        // Stalled readers aborted by the watchdog while clients cancel.
        StormFlags{"idle_timeout", 8, 128, absl::Milliseconds(20)}),
    [](const ::testing::TestParamInfo<StormFlags>& info) {
      return info.param.name;
    });

// Note [stalled readers] on HTTP: a client that stops reading its event
// stream has its run ended by the idle timeout, its connection shut under
// the stalled write, and the run counted DEADLINE_EXCEEDED, as on gRPC
// (once it counted CANCELLED, as if the client had hung up).
class HttpIdleTimeoutTest : public FrontsTest {
 protected:
  void SetUp() override {
    LoopServerOptions options = TestOptions();
    options.engine.stream_idle_timeout = absl::Milliseconds(200);
    StartServer(options);
  }
};

TEST_F(HttpIdleTimeoutTest, AStalledReaderIsCountedDeadlineExceeded) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const int small = 4096;  // the server's writes stall soon
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(server_->http_port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
            0);
  const std::string body =
      R"({"inputs": {"num_steps": {"int64_value": "1099511627776"},
                     "x": {"int64_value": "0"}}})";
  const std::string request = absl::StrCat(
      "POST /v1/pipelines/seed-loop:run HTTP/1.1\r\nHost: localhost\r\n"
      "Content-Length: ",
      body.size(), "\r\n\r\n", body);
  ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  // Never read: the run is ended for it.
  EXPECT_TRUE(server_->engine().WaitForIdle(absl::Seconds(30)));
  EXPECT_TRUE(loopserve::testing::Eventually([&] {
    return loopserve::testing::MetricValue(
               server_->metrics().Scrape(),
               R"(loopserve_runs_total{code="DEADLINE_EXCEEDED",pipeline="seed-loop"})") ==
           1;
  })) << server_->metrics().Scrape();
  close(fd);
}

TEST_F(FrontsTest, ClosingAnEventStreamCancelsItsRun) {
  httplib::Client client("127.0.0.1", server_->http_port());
  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/pipelines/seed-loop:run";
  request.body =
      R"({"inputs": {"num_steps": {"int64_value": "1099511627776"},
                     "x": {"int64_value": "0"}},
          "stream": {"every": 100000}})";
  std::string received;
  request.content_receiver = [&](const char* data, size_t size, uint64_t,
                                 uint64_t) {
    received.append(data, size);
    // Hang up once the first iterations arrived.
    return received.find("event: iterations") == std::string::npos;
  };
  httplib::Response response;
  httplib::Error error;
  client.send(request, response, error);
  EXPECT_THAT(received, HasSubstr("event: started"));
  EXPECT_THAT(received, HasSubstr(R"("index":"99999")"));
  EXPECT_TRUE(server_->engine().WaitForIdle(absl::Seconds(10)));
  // And it serves on.
  httplib::Result list = client.Get("/v1/pipelines");
  ASSERT_TRUE(list);
  EXPECT_THAT(list->body, HasSubstr("digits-text"));
}

}  // namespace
}  // namespace loopserve
