// Integration tests: an in-process loopserve on an ephemeral port, driven
// through LoopClient.
#include <ATen/ATen.h>
#include <glog/logging.h>
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <prometheus/histogram.h>
#include <torch/version.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "app/default_pipelines.h"
#include "blocks/builtin_blocks.h"
#include "blocks/examples/seed_blocks.h"
#include "client/loop_client.h"
#include "engine/tensor_codec.h"
#include "server/loop_server.h"
#include "tests/testing/captured_log.h"
#include "tests/testing/eventually.h"
#include "tests/testing/metrics_text.h"
#include "tests/testing/status_matchers.h"
#include "util/png.h"

namespace loopserve {
namespace {

using ::loopserve::testing::CapturedLog;
using ::loopserve::testing::Eventually;
using ::loopserve::testing::MetricValue;
using ::loopserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

// A loop block that waits at iteration 0 until the test opens the gate.
class GateStep : public LoopStepBlock {
 public:
  static constexpr absl::string_view kTypeName = "GateStep";
  GateStep(absl::Notification* entered, absl::Notification* open)
      : entered_(entered), open_(open) {}
  absl::string_view type_name() const override { return kTypeName; }
  absl::Status RunStep(const Components&, BlockState&,
                       const LoopIndex& index) const override {
    if (index.i == 0) {
      entered_->Notify();
      open_->WaitForNotification();
    }
    return absl::OkStatus();
  }

 private:
  absl::Notification* entered_;
  absl::Notification* open_;
};

v1::RunRequest SeedRequest(const std::string& pipeline, int64_t num_steps,
                           int64_t x = 0) {
  v1::RunRequest request;
  request.set_pipeline(pipeline);
  (*request.mutable_inputs())["num_steps"].set_int64_value(num_steps);
  (*request.mutable_inputs())["x"].set_int64_value(x);
  return request;
}

class LoopServiceTest : public ::testing::Test {
 protected:
  void StartServer(LoopServerOptions options = {},
                   const BatchingOptions& batching = {}) {
    BlockRegistry registry;
    ASSERT_OK(RegisterBuiltinBlocks(registry));
    ASSERT_OK_AND_ASSIGN(PipelineCatalog catalog,
                         LoadDefaultPipelines(c10::kCPU, batching));
    ASSERT_OK_AND_ASSIGN(
        auto gated,
        FromBlocks<LoopWrapper>(
            registry,
            {{"gate", std::make_unique<GateStep>(&gate_entered_, &gate_open_)},
             {"block1", "LoopBlock"}}));
    ASSERT_OK(catalog.Add("gated", "seed loop that waits for the test",
                          std::move(gated)));
    options.address = "127.0.0.1:0";
    ASSERT_OK_AND_ASSIGN(server_,
                         LoopServer::Start(options, std::move(catalog)));
    ASSERT_OK_AND_ASSIGN(client_, LoopClient::Connect(absl::StrCat(
                                      "127.0.0.1:", server_->port())));
  }

  void TearDown() override {
    if (!gate_open_.HasBeenNotified()) gate_open_.Notify();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
  }

  // Runs `request`, recording every iteration's x.
  absl::StatusOr<v1::RunResult> RunRecording(const v1::RunRequest& request,
                                             std::vector<int64_t>* xs,
                                             RunCallOptions options = {}) {
    return client_->Run(request,
                        {.on_iteration =
                             [xs](const v1::Iteration& it) {
                               xs->push_back(it.values().at("x").int64_value());
                             }},
                        options);
  }

  // Runs "gated" and cancels it inside its first iteration; the status its
  // client saw. The run is long, so that it cannot end before the cancel
  // reaches the server: a client that cancels as the run ends sees
  // CANCELLED while the server, which sent its result, counts OK.
  absl::Status CancelGatedRun() {
    RunCancellation cancellation;
    absl::Status cancelled;
    std::thread run([&] {
      cancelled = client_
                      ->Run(SeedRequest("gated", 1'000'000), {},
                            {.cancellation = &cancellation})
                      .status();
    });
    gate_entered_.WaitForNotification();
    cancellation.Cancel();
    run.join();
    gate_open_.Notify();
    return cancelled;
  }

  void ExpectStillServing() {
    std::vector<int64_t> xs;
    ASSERT_OK_AND_ASSIGN(v1::RunResult result,
                         RunRecording(SeedRequest("seed-loop", 3), &xs));
    EXPECT_EQ(result.outputs().at("x").int64_value(), 3);
  }

  absl::Notification gate_entered_;
  absl::Notification gate_open_;
  std::unique_ptr<LoopServer> server_;
  std::unique_ptr<LoopClient> client_;
};

std::vector<int64_t> Range(int64_t first, int64_t last, int64_t step = 1) {
  std::vector<int64_t> values;
  for (int64_t v = first; v <= last; v += step) values.push_back(v);
  return values;
}

TEST_F(LoopServiceTest, SeedLoopStreamsEveryIterationOnceInOrder) {
  StartServer();
  std::vector<int64_t> xs;
  std::vector<int64_t> indices;
  v1::RunStarted started;
  ASSERT_OK_AND_ASSIGN(
      v1::RunResult result,
      client_->Run(SeedRequest("seed-loop", 100),
                   {.on_started = [&](const v1::RunStarted& s) { started = s; },
                    .on_iteration =
                        [&](const v1::Iteration& it) {
                          xs.push_back(it.values().at("x").int64_value());
                          indices.push_back(it.index());
                          EXPECT_EQ(it.loop(), "seed-loop");
                          EXPECT_EQ(it.total(), 100);
                          EXPECT_EQ(it.dropped_before(), 0u);
                        }}));
  EXPECT_THAT(xs, ElementsAreArray(Range(1, 100)));
  EXPECT_THAT(indices, ElementsAreArray(Range(0, 99)));
  EXPECT_EQ(result.outputs().at("x").int64_value(), 100);
  EXPECT_EQ(result.stats().iterations(), 100);
  EXPECT_EQ(result.stats().iterations_sent(), 100u);
  EXPECT_EQ(result.stats().iterations_dropped(), 0u);
  EXPECT_THAT(started.run_id(), HasSubstr("run-"));
}

TEST_F(LoopServiceTest, SeedLoop2GivesTwoN) {
  StartServer();
  std::vector<int64_t> xs;
  ASSERT_OK_AND_ASSIGN(v1::RunResult result,
                       RunRecording(SeedRequest("seed-loop-2", 50, 1), &xs));
  EXPECT_THAT(xs, ElementsAreArray(Range(3, 101, 2)));
  EXPECT_EQ(result.outputs().at("x").int64_value(), 101);
}

TEST_F(LoopServiceTest, RequestIdIsEchoed) {
  StartServer();
  v1::RunRequest request = SeedRequest("seed-loop", 1);
  request.set_request_id("abc-123");
  std::string echoed;
  ASSERT_OK(client_
                ->Run(request, {.on_started =
                                    [&](const v1::RunStarted& s) {
                                      echoed = s.request_id();
                                    }})
                .status());
  EXPECT_EQ(echoed, "abc-123");
}

TEST_F(LoopServiceTest, EverySendsEveryKthAndTheLast) {
  StartServer();
  v1::RunRequest request = SeedRequest("seed-loop", 10);
  request.mutable_stream()->set_every(3);
  std::vector<int64_t> xs;
  ASSERT_OK_AND_ASSIGN(v1::RunResult result, RunRecording(request, &xs));
  EXPECT_THAT(xs, ElementsAreArray({3, 6, 9, 10}));
  EXPECT_EQ(result.outputs().at("x").int64_value(), 10);
  EXPECT_EQ(result.stats().iterations_sent(), 4u);
}

TEST_F(LoopServiceTest, TensorXRoundTrips) {
  StartServer();
  v1::RunRequest request = SeedRequest("seed-loop", 4);
  at::Tensor x0 = at::arange(12, at::kFloat).reshape({3, 4});
  ASSERT_OK(
      EncodeTensor(x0, *(*request.mutable_inputs())["x"].mutable_tensor()));
  std::vector<at::Tensor> seen;
  ASSERT_OK_AND_ASSIGN(
      v1::RunResult result,
      client_->Run(request, {.on_iteration = [&](const v1::Iteration& it) {
                     seen.push_back(
                         *DecodeTensor(it.values().at("x").tensor(), {}));
                   }}));
  ASSERT_EQ(seen.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(at::equal(seen[i], x0 + (i + 1)));
  EXPECT_EQ(result.outputs().at("x").tensor().datatype(), "FP32");
  EXPECT_TRUE(
      at::equal(*DecodeTensor(result.outputs().at("x").tensor(), {}), x0 + 4));
}

// Inputs outside their documented range are refused, and a run whose
// loop carries NaN or Inf ends with INVALID_ARGUMENT naming the iteration
// and its inputs (Note [diverged runs]) rather than finishing OK with a
// constant image. So are inputs that contradict each other.
TEST_F(LoopServiceTest, DivergingAndContradictoryRunsAreRefused) {
  StartServer();
  auto request =
      [](const std::string& pipeline,
         const std::vector<std::pair<std::string, v1::Value>>& inputs) {
        v1::RunRequest r;
        r.set_pipeline(pipeline);
        r.set_request_id("probe");
        for (const auto& [name, value] : inputs) {
          (*r.mutable_inputs())[name] = value;
        }
        return r;
      };
  auto number = [](double d) {
    v1::Value v;
    v.set_double_value(d);
    return v;
  };
  auto integer = [](int64_t i) {
    v1::Value v;
    v.set_int64_value(i);
    return v;
  };
  auto tensor = [](const at::Tensor& t) {
    v1::Value v;
    EXPECT_OK(EncodeTensor(t, *v.mutable_tensor()));
    return v;
  };
  const auto refused = [&](const v1::RunRequest& r) {
    return client_->Run(r).status();
  };
  using ::testing::AllOf;
  const auto invalid = [](auto... parts) {
    return StatusIs(absl::StatusCode::kInvalidArgument,
                    AllOf(HasSubstr(parts)...));
  };

  EXPECT_THAT(
      refused(request("digits-text", {{"guidance_scale", number(1e308)}})),
      invalid("input 'guidance_scale': must be in [0, 100], got "
              "1e+308"));
  EXPECT_THAT(refused(request("gmm-ddim", {{"eta", number(1e308)}})),
              invalid("input 'eta': must be in [0, 1], got 1e+308"));
  for (const char* pipeline : {"gmm-ddim", "gmm-euler"}) {
    EXPECT_THAT(
        refused(request(pipeline,
                        {{"latents", tensor(at::full({1, 4, 64, 64}, 1e30))},
                         {"num_inference_steps", integer(4)}})),
        invalid(absl::StrCat("the run diverged: after iteration 0 of loop '",
                             pipeline, "/denoise'"),
                "holds NaN or Inf", "'latents'=a FP32 [1,4,64,64] tensor",
                "'num_inference_steps'=4"))
        << pipeline;
  }
  EXPECT_THAT(
      refused(request("digits-ddim",
                      {{"latents", tensor(at::full({1, 1, 8, 8}, 1e30))}})),
      invalid("the run diverged: after iteration 0 of loop "
              "'digits-ddim/denoise'"));

  for (int64_t batch : {0, -1}) {
    EXPECT_THAT(refused(request("gmm-ddim", {{"batch_size", integer(batch)}})),
                invalid("input 'batch_size': must be in [1, 1024]"));
  }
  EXPECT_THAT(refused(request("gmm-ddim",
                              {{"batch_size", integer(2)},
                               {"latents", tensor(at::zeros({1, 4, 8, 8}))}})),
              invalid("input 'batch_size' (2) must be 1 or the batch of "
                      "'latents' (1)"));
  v1::Value prompt;
  prompt.set_string_value("a seven");
  EXPECT_THAT(refused(request("digits-text", {{"prompt", prompt},
                                              {"encoder_hidden_states",
                                               tensor(at::zeros({1, 4, 8}))}})),
              invalid("input 'prompt': cannot be given with input "
                      "'encoder_hidden_states'"));
  ExpectStillServing();
}

TEST_F(LoopServiceTest, LatestWithASlowReaderDropsAndCounts) {
  StartServer();
  // 1 MiB tensors fill the transport's windows at once; the reader then
  // holds its first batch until the loop has finished, so the loop, which
  // never waits under LATEST, must replace what the writer had not taken.
  v1::RunRequest request = SeedRequest("seed-loop", 200);
  ASSERT_OK(EncodeTensor(at::zeros({256, 1024}),
                         *(*request.mutable_inputs())["x"].mutable_tensor()));
  request.mutable_stream()->set_backpressure(v1::StreamOptions::LATEST);
  std::vector<int64_t> indices;
  uint64_t dropped_before = 0;
  ASSERT_OK_AND_ASSIGN(
      v1::RunResult result,
      client_->Run(request, {.on_iteration = [&](const v1::Iteration& it) {
                     if (indices.empty()) {
                       ASSERT_TRUE(Eventually(
                           [&] { return server_->executor().running() == 0; }));
                     }
                     indices.push_back(it.index());
                     dropped_before += it.dropped_before();
                     at::Tensor x =
                         *DecodeTensor(it.values().at("x").tensor(), {});
                     EXPECT_EQ(x[0][0].item<float>(), it.index() + 1);
                   }}));
  EXPECT_TRUE(std::is_sorted(indices.begin(), indices.end()));
  EXPECT_EQ(indices.back(), 199);  // the last iteration is the newest
  EXPECT_GT(result.stats().iterations_dropped(), 0u);
  EXPECT_EQ(result.stats().iterations_dropped(), dropped_before);
  EXPECT_EQ(
      result.stats().iterations_sent() + result.stats().iterations_dropped(),
      200u);
  EXPECT_EQ(indices.size(), result.stats().iterations_sent());
  at::Tensor final_x = *DecodeTensor(result.outputs().at("x").tensor(), {});
  EXPECT_TRUE(at::equal(final_x, at::full({256, 1024}, 200.0)));
}

TEST_F(LoopServiceTest, BlockWithASlowReaderCoalescesAndLosesNothing) {
  StartServer();
  std::vector<int64_t> xs;
  int largest_batch = 0;
  ASSERT_OK_AND_ASSIGN(
      v1::RunResult result,
      client_->Run(SeedRequest("seed-loop", 1000),
                   {.on_iteration =
                        [&](const v1::Iteration& it) {
                          xs.push_back(it.values().at("x").int64_value());
                        },
                    .on_batch =
                        [&](const v1::IterationBatch& batch) {
                          if (xs.empty()) {  // hold the first batch
                            ASSERT_TRUE(Eventually([&] {
                              return server_->executor().running() == 0;
                            }));
                          }
                          largest_batch =
                              std::max(largest_batch, batch.items_size());
                        }}));
  EXPECT_THAT(xs, ElementsAreArray(Range(1, 1000)));
  EXPECT_GT(largest_batch, 1);
  EXPECT_EQ(result.stats().iterations_dropped(), 0u);
}

TEST_F(LoopServiceTest, BlockMakesTheLoopWaitForASlowReader) {
  LoopServerOptions options;
  options.engine.stream.max_queued_iterations = 4;
  StartServer(options);
  std::vector<int64_t> xs;
  ASSERT_OK_AND_ASSIGN(
      v1::RunResult result,
      client_->Run(SeedRequest("seed-loop", 300),
                   {.on_iteration = [&](const v1::Iteration& it) {
                     xs.push_back(it.values().at("x").int64_value());
                     if (xs.size() % 50 == 0)
                       absl::SleepFor(absl::Milliseconds(5));
                   }}));
  EXPECT_THAT(xs, ElementsAreArray(Range(1, 300)));
  EXPECT_EQ(result.stats().iterations_sent(), 300u);
}

TEST_F(LoopServiceTest, CancellationFreesTheSlotAtOnce) {
  LoopServerOptions options;
  options.engine.executor = {.max_concurrent_runs = 1, .max_queued_runs = 0};
  options.engine.limits.max_iterations = int64_t{1} << 40;
  StartServer(options);

  RunCancellation cancellation;
  absl::Notification first_iteration;
  absl::Status long_status;
  std::thread long_run([&] {
    v1::RunRequest request = SeedRequest("seed-loop", int64_t{1} << 40);
    request.mutable_stream()->set_every(100000);
    long_status = client_
                      ->Run(request,
                            {.on_iteration =
                                 [&](const v1::Iteration&) {
                                   if (!first_iteration.HasBeenNotified()) {
                                     first_iteration.Notify();
                                   }
                                 }},
                            {.cancellation = &cancellation})
                      .status();
  });
  first_iteration.WaitForNotification();
  // The one slot is taken and nothing may queue.
  EXPECT_THAT(client_->Run(SeedRequest("seed-loop", 1)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("--max_concurrent_runs=1")));
  cancellation.Cancel();
  long_run.join();
  EXPECT_THAT(long_status,
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  ASSERT_TRUE(Eventually([&] { return server_->executor().running() == 0; }));
  ExpectStillServing();
}

// Note [stalled readers]: a client that reads one message and then stops
// reading held its worker for as long as it stayed connected. Now its run
// is ended once its write has waited --stream_idle_timeout_s, and the
// slot serves the next client.
TEST_F(LoopServiceTest, AStalledReaderLosesItsRunAndFreesTheSlot) {
  LoopServerOptions options;
  options.engine.executor = {.max_concurrent_runs = 1, .max_queued_runs = 0};
  options.engine.limits.max_iterations = int64_t{1} << 40;
  options.engine.stream_idle_timeout = absl::Milliseconds(300);
  StartServer(options);
  CapturedLog log;

  // 1 MB an iteration: the stream's flow-control windows fill at once.
  v1::RunRequest request = SeedRequest("seed-loop", int64_t{1} << 40);
  ASSERT_OK(EncodeTensor(at::zeros({256 << 10}),
                         *(*request.mutable_inputs())["x"].mutable_tensor()));
  auto stub = v1::LoopPipelineService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                          grpc::InsecureChannelCredentials()));
  grpc::ClientContext stalled;
  std::unique_ptr<grpc::ClientReader<v1::RunEvent>> reader =
      stub->Run(&stalled, request);
  v1::RunEvent event;
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_TRUE(event.has_started());
  // ... and reads no more.
  ASSERT_TRUE(Eventually([&] {
    return MetricValue(
               server_->metrics().Scrape(),
               R"(loopserve_runs_total{code="DEADLINE_EXCEEDED",pipeline="seed-loop"})") ==
           1;
  }));
  ASSERT_TRUE(Eventually([&] { return server_->executor().running() == 0; }));
  // It says what was measured: the write in flight, not what was read.
  EXPECT_TRUE(Eventually([&] {
    return !log.RunLines(
                   "the message being sent to the client did not "
                   "finish within 300ms")
                .empty();
  }));
  ASSERT_OK_AND_ASSIGN(v1::RunResult result,
                       client_->Run(SeedRequest("seed-loop", 3)));
  EXPECT_EQ(result.outputs().at("x").int64_value(), 3);
  stalled.TryCancel();
  reader->Finish();
}

// One client cannot hold every slot: past --max_runs_per_client its runs
// are refused, while its runs in flight go on.
TEST_F(LoopServiceTest, OneClientCannotTakeEverySlot) {
  LoopServerOptions options;
  options.engine.executor = {.max_concurrent_runs = 4, .max_queued_runs = 4};
  options.engine.max_runs_per_client = 2;
  options.engine.limits.max_iterations = int64_t{1} << 40;
  StartServer(options);
  std::vector<std::thread> runs;
  std::vector<absl::Status> statuses(2);
  RunCancellation cancellations[2];
  for (int i = 0; i < 2; ++i) {
    runs.emplace_back([&, i] {
      v1::RunRequest request = SeedRequest("seed-loop", int64_t{1} << 40);
      request.mutable_stream()->set_every(1 << 30);
      statuses[i] =
          client_->Run(request, {}, {.cancellation = &cancellations[i]})
              .status();
    });
  }
  ASSERT_TRUE(Eventually([&] { return server_->executor().running() == 2; }));
  EXPECT_THAT(client_->Run(SeedRequest("seed-loop", 1)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("already has 2 runs queued or running, the "
                                 "server's limit per client "
                                 "(--max_runs_per_client=2)")));
  for (RunCancellation& cancellation : cancellations) cancellation.Cancel();
  for (std::thread& run : runs) run.join();
  for (const absl::Status& status : statuses) {
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  }
  // Counted free once gRPC is done with each call.
  EXPECT_TRUE(Eventually(
      [&] { return client_->Run(SeedRequest("seed-loop", 1)).ok(); }));
}

TEST_F(LoopServiceTest, DeadlineStopsTheRun) {
  LoopServerOptions options;
  options.engine.limits.max_iterations = int64_t{1} << 40;
  StartServer(options);
  v1::RunRequest request = SeedRequest("seed-loop", int64_t{1} << 40);
  request.mutable_stream()->set_every(1000000);
  EXPECT_THAT(
      client_->Run(request, {}, {.timeout = absl::Milliseconds(200)}).status(),
      StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  ASSERT_TRUE(Eventually([&] { return server_->executor().running() == 0; }));
  ExpectStillServing();
}

struct BadRequestCase {
  std::string name;
  std::function<void(v1::RunRequest&)> mutate;
  absl::StatusCode code;
  std::string message;
};

class BadRequestTest : public LoopServiceTest,
                       public ::testing::WithParamInterface<BadRequestCase> {};

TEST_P(BadRequestTest, IsRefusedWithItsFieldNamedAndTheServerServesOn) {
  LoopServerOptions options;
  options.engine.limits.max_iterations = 1000;
  options.engine.limits.decode.max_tensor_bytes = 1 << 20;
  options.engine.limits.decode.max_tensor_elements = 1 << 20;
  StartServer(options);
  v1::RunRequest request = SeedRequest("seed-loop", 5);
  GetParam().mutate(request);
  EXPECT_THAT(client_->Run(request).status(),
              StatusIs(GetParam().code, HasSubstr(GetParam().message)));
  ExpectStillServing();
}

v1::Tensor* XTensor(v1::RunRequest& r) {
  return (*r.mutable_inputs())["x"].mutable_tensor();
}

INSTANTIATE_TEST_SUITE_P(
    AllFields, BadRequestTest,
    ::testing::Values(
        BadRequestCase{"UnknownPipeline",
                       [](v1::RunRequest& r) { r.set_pipeline("seed-lop"); },
                       absl::StatusCode::kNotFound,
                       "pipeline 'seed-lop' is not served; available: "
                       "seed-loop, seed-loop-2"},
        BadRequestCase{"UnknownInput",
                       [](v1::RunRequest& r) {
                         (*r.mutable_inputs())["nm_steps"].set_int64_value(3);
                       },
                       absl::StatusCode::kInvalidArgument,
                       "pipeline 'seed-loop': input 'nm_steps': unknown input"},
        BadRequestCase{
            "MissingRequired",
            [](v1::RunRequest& r) { r.mutable_inputs()->erase("x"); },
            absl::StatusCode::kInvalidArgument,
            "input 'x': required input is missing"},
        BadRequestCase{"WrongKind",
                       [](v1::RunRequest& r) {
                         (*r.mutable_inputs())["num_steps"].set_string_value(
                             "5");
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'num_steps': expects int, got string"},
        BadRequestCase{"UnknownDatatype",
                       [](v1::RunRequest& r) {
                         XTensor(r)->set_datatype("FP8");
                         XTensor(r)->add_shape(1);
                         XTensor(r)->set_raw_contents(std::string(1, '\0'));
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': unknown datatype 'FP8'"},
        BadRequestCase{"BytesDoNotMatchShape",
                       [](v1::RunRequest& r) {
                         XTensor(r)->set_datatype("FP32");
                         XTensor(r)->add_shape(2);
                         XTensor(r)->add_shape(3);
                         XTensor(r)->set_raw_contents(std::string(20, '\0'));
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': raw_contents has 20 bytes; shape [2,3] "
                       "FP32 needs 24"},
        BadRequestCase{"NegativeDimension",
                       [](v1::RunRequest& r) {
                         XTensor(r)->set_datatype("FP32");
                         XTensor(r)->add_shape(-2);
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': dimension 0 of the shape is negative"},
        BadRequestCase{"TensorTooLarge",
                       [](v1::RunRequest& r) {
                         XTensor(r)->set_datatype("FP32");
                         XTensor(r)->add_shape(1024);
                         XTensor(r)->add_shape(1024);
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': tensor of shape [1024,1024] FP32 is larger "
                       "than the server's limit of 1048576 bytes"},
        BadRequestCase{"TooManyIterations",
                       [](v1::RunRequest& r) {
                         (*r.mutable_inputs())["num_steps"].set_int64_value(
                             1001);
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'num_steps': 1001 is above the server's limit "
                       "of 1000 iterations"},
        BadRequestCase{"NegativeIterations",
                       [](v1::RunRequest& r) {
                         (*r.mutable_inputs())["num_steps"].set_int64_value(-1);
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'num_steps': must be >= 0, got -1"},
        BadRequestCase{"UnknownStreamValue",
                       [](v1::RunRequest& r) {
                         r.mutable_stream()->add_values("latents");
                       },
                       absl::StatusCode::kInvalidArgument,
                       "stream.values names 'latents', which is not an "
                       "iteration output; it has: x"},
        BadRequestCase{"UnknownOutput",
                       [](v1::RunRequest& r) { r.add_outputs("image"); },
                       absl::StatusCode::kInvalidArgument,
                       "outputs names 'image', which is not an output; it "
                       "has: x"},
        BadRequestCase{"UnknownBackpressure",
                       [](v1::RunRequest& r) {
                         r.mutable_stream()->set_backpressure(
                             static_cast<v1::StreamOptions::Backpressure>(7));
                       },
                       absl::StatusCode::kInvalidArgument,
                       "stream.backpressure: unknown value 7"},
        BadRequestCase{
            "ValueWithoutKind",
            [](v1::RunRequest& r) { (*r.mutable_inputs())["x"].Clear(); },
            absl::StatusCode::kInvalidArgument,
            "input 'x': value has no kind set"},
        // Issue #14's findings, each refused before any work and cheaply.
        BadRequestCase{"RankAboveTheLimit",
                       [](v1::RunRequest& r) {
                         XTensor(r)->set_datatype("FP32");
                         for (int i = 0; i < 9; ++i) XTensor(r)->add_shape(1);
                         XTensor(r)->set_raw_contents(std::string(4, '\0'));
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': tensor has 9 dimensions; the server's "
                       "limit is 8 (--max_tensor_rank)"},
        BadRequestCase{"FiftyThousandDimensions",  // held a worker 10 s
                       [](v1::RunRequest& r) {
                         XTensor(r)->set_datatype("FP32");
                         for (int i = 0; i < 50000; ++i) {
                           XTensor(r)->add_shape(1);
                         }
                         XTensor(r)->set_raw_contents(std::string(4, '\0'));
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': tensor has 50000 dimensions"},
        BadRequestCase{"TooManyElements",
                       [](v1::RunRequest& r) {
                         XTensor(r)->set_datatype("BOOL");
                         XTensor(r)->add_shape(1 << 19);
                         XTensor(r)->add_shape(4);
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': tensor of shape [524288,4] BOOL is larger "
                       "than the server's limit of 1048576 elements "
                       "(--max_tensor_elements)"},
        BadRequestCase{"NaNInATensor",
                       [](v1::RunRequest& r) {
                         const float values[] = {1.0f, std::nanf("")};
                         XTensor(r)->set_datatype("FP32");
                         XTensor(r)->add_shape(2);
                         XTensor(r)->set_raw_contents(
                             std::string(reinterpret_cast<const char*>(values),
                                         sizeof(values)));
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': element 1 is NaN or Inf; the server "
                       "refuses non-finite inputs (--allow_non_finite_inputs)"},
        BadRequestCase{"InfAsADouble",
                       [](v1::RunRequest& r) {
                         (*r.mutable_inputs())["x"].set_double_value(
                             -std::numeric_limits<double>::infinity());
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': the value is NaN or Inf"},
        BadRequestCase{"BoolByteOtherThanZeroOrOne",
                       [](v1::RunRequest& r) {
                         XTensor(r)->set_datatype("BOOL");
                         XTensor(r)->add_shape(2);
                         XTensor(r)->set_raw_contents(std::string("\1\7", 2));
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': BOOL element 1 is byte 7; expected 0 or 1"},
        BadRequestCase{"IntThatWouldWrap",
                       [](v1::RunRequest& r) {
                         (*r.mutable_inputs())["x"].set_int64_value(
                             std::numeric_limits<int64_t>::max() - 2);
                       },
                       absl::StatusCode::kOutOfRange, "x + 1 overflows int64"},
        BadRequestCase{"LongString",
                       [](v1::RunRequest& r) {
                         (*r.mutable_inputs())["x"].set_string_value(
                             std::string(70000, 'a'));
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'x': string of 70000 bytes is longer than the "
                       "server's limit of 65536 (--max_string_bytes)"},
        BadRequestCase{"FourMegabyteRequestId",
                       [](v1::RunRequest& r) {
                         r.set_request_id(std::string(4 << 20, 'r'));
                       },
                       absl::StatusCode::kInvalidArgument,
                       "request_id: 4194304 bytes is longer than the "
                       "server's limit of 128"},
        // Echoed cut short, so the client gets NOT_FOUND, not a status too
        // large for its metadata limit.
        BadRequestCase{"MegabytePipelineName",
                       [](v1::RunRequest& r) {
                         r.set_pipeline(std::string(1 << 20, 'p'));
                       },
                       absl::StatusCode::kNotFound,
                       "ppp...' (1048576 bytes) is not served"},
        BadRequestCase{"ControlBytesInANameAreEscaped",
                       [](v1::RunRequest& r) {
                         (*r.mutable_inputs())[std::string("a\nb\x1b[31m")]
                             .set_int64_value(1);
                       },
                       absl::StatusCode::kInvalidArgument,
                       "input 'a\\nb\\x1b[31m': unknown input"}),
    [](const ::testing::TestParamInfo<BadRequestCase>& info) {
      return info.param.name;
    });

TEST_F(LoopServiceTest, SixteenConcurrentRunsAreAllExact) {
  LoopServerOptions options;
  options.engine.executor = {.max_concurrent_runs = 4, .max_queued_runs = 16};
  StartServer(options);
  constexpr int kRuns = 16;
  std::vector<std::thread> threads;
  std::vector<absl::Status> statuses(kRuns);
  std::vector<std::vector<int64_t>> streams(kRuns);
  std::vector<int64_t> finals(kRuns);
  for (int r = 0; r < kRuns; ++r) {
    threads.emplace_back([&, r] {
      absl::StatusOr<v1::RunResult> result =
          RunRecording(SeedRequest("seed-loop-2", 2000, r), &streams[r]);
      statuses[r] = result.status();
      if (result.ok()) finals[r] = result->outputs().at("x").int64_value();
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < kRuns; ++r) {
    ASSERT_OK(statuses[r]);
    EXPECT_EQ(finals[r], r + 4000);
    EXPECT_THAT(streams[r], ElementsAreArray(Range(r + 2, r + 4000, 2)));
  }
}

v1::RunRequest DenoiseRequest(const std::string& pipeline, int64_t steps,
                              int64_t seed) {
  v1::RunRequest request;
  request.set_pipeline(pipeline);
  (*request.mutable_inputs())["num_inference_steps"].set_int64_value(steps);
  (*request.mutable_inputs())["seed"].set_int64_value(seed);
  return request;
}

// What the digits model cannot take is refused naming the inputs, before
// the model runs: never INTERNAL, never the module's traceback or a path
// of the machine that built it.
TEST_F(LoopServiceTest, ModelInputErrorsNameTheInputsAndNeverLeakTheModel) {
  StartServer();
  auto run = [&](absl::string_view name, v1::Value value) {
    v1::RunRequest request = DenoiseRequest("digits-ddim", 2, 1);
    (*request.mutable_inputs())[std::string(name)] = std::move(value);
    return client_->Run(request).status();
  };
  v1::Value height;
  height.set_int64_value(7);
  const absl::Status odd = run("height", height);
  EXPECT_THAT(odd, StatusIs(absl::StatusCode::kInvalidArgument,
                            HasSubstr("the denoiser takes samples [B,1,8,8]; "
                                      "these latents are [1,1,7,8]")));
  EXPECT_THAT(std::string(odd.message()), Not(HasSubstr(".py")));
  EXPECT_THAT(std::string(odd.message()), Not(HasSubstr("Traceback")));
  EXPECT_LT(odd.message().size(), 300u);

  // Given latents decide the size: a height beside them is refused, not
  // ignored.
  v1::RunRequest both = DenoiseRequest("digits-ddim", 2, 1);
  ASSERT_OK(
      EncodeTensor(at::zeros({1, 1, 8, 8}),
                   *(*both.mutable_inputs())["latents"].mutable_tensor()));
  (*both.mutable_inputs())["height"].set_int64_value(16);
  EXPECT_THAT(client_->Run(both).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'height': cannot be given with input "
                                 "'latents', which decides it")));

  v1::Value eta;
  eta.set_double_value(std::nan(""));
  EXPECT_THAT(run("eta", eta),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'eta': the value is NaN or Inf")));
  // An unconditioned model takes no conditioning: named as unknown.
  v1::RunRequest gmm = DenoiseRequest("gmm-ddim", 2, 1);
  ASSERT_OK(EncodeTensor(
      at::zeros({1, 1, 10}),
      *(*gmm.mutable_inputs())["encoder_hidden_states"].mutable_tensor()));
  EXPECT_THAT(client_->Run(gmm).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'encoder_hidden_states': unknown "
                                 "input")));
  ExpectStillServing();
}

// A denoising run streams each step's latents, and through the service it
// equals the same run in-process, bit for bit (CPU).
TEST_F(LoopServiceTest, DenoisingStreamsEveryStepsLatentsExactly) {
  StartServer();
  v1::RunRequest request = DenoiseRequest("gmm-ddim", 10, 3);
  request.mutable_stream()->add_values("latents");
  std::vector<at::Tensor> steps;
  std::vector<int64_t> indices;
  ASSERT_OK_AND_ASSIGN(
      v1::RunResult result,
      client_->Run(request, {.on_iteration = [&](const v1::Iteration& it) {
                     EXPECT_EQ(it.values_size(), 1);
                     EXPECT_EQ(it.total(), 10);
                     EXPECT_EQ(it.loop(), "gmm-ddim/denoise");
                     indices.push_back(it.index());
                     steps.push_back(
                         *DecodeTensor(it.values().at("latents").tensor(), {}));
                   }}));
  EXPECT_THAT(indices, ElementsAreArray(Range(0, 9)));
  ASSERT_EQ(steps.size(), 10u);
  EXPECT_EQ(steps[0].sizes(), (std::vector<int64_t>{1, 4, 64, 64}));
  EXPECT_FALSE(at::equal(steps[0], steps[1]));
  const at::Tensor final_latents =
      *DecodeTensor(result.outputs().at("latents").tensor(), {});
  EXPECT_TRUE(at::equal(steps.back(), final_latents));
  // Internal working state is neither an output nor streamed.
  EXPECT_FALSE(result.outputs().contains("timesteps"));
  EXPECT_FALSE(result.outputs().contains("generator"));

  ASSERT_OK_AND_ASSIGN(PipelineCatalog catalog,
                       LoadDefaultPipelines(c10::kCPU));
  const Pipeline* pipeline = catalog.Find("gmm-ddim");
  PipelineState state;
  state.SetInput("num_inference_steps", int64_t{10});
  state.SetInput("seed", int64_t{3});
  RunContext context;
  ASSERT_OK(RunBlock(*pipeline->root, pipeline->components, state, context));
  EXPECT_TRUE(
      at::equal(state.GetIntermediate("latents")->toTensor(), final_latents));
}

// Concurrent runs of a batched server share the denoiser's calls: every
// row of every step goes through exactly one call, each call's wait is
// counted, and RunStats says how full the calls were.
TEST_F(LoopServiceTest, BatchedRunsReportTheirBatchesAndMetrics) {
  StartServer({}, {.max_batch_size = 16, .window = std::chrono::seconds(5)});
  constexpr int kRuns = 3;
  constexpr int64_t kSteps = 30;
  std::vector<absl::StatusOr<v1::RunResult>> results(kRuns);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRuns; ++i) {
    threads.emplace_back([&, i] {
      results[i] = client_->Run(DenoiseRequest("gmm-ddim", kSteps, i));
    });
  }
  for (std::thread& thread : threads) thread.join();
  double most = 0;
  for (const auto& result : results) {
    ASSERT_OK(result.status());
    EXPECT_GE(result->stats().mean_batch_size(), 1);
    EXPECT_LE(result->stats().mean_batch_size(), kRuns);
    most = std::max(most, result->stats().mean_batch_size());
  }
  EXPECT_GT(most, 1);
  const std::string text = server_->metrics().Scrape();
  EXPECT_EQ(MetricValue(text, R"(loopserve_batch_rows_sum{component="gmm"})"),
            kRuns * kSteps);
  EXPECT_LT(MetricValue(text, R"(loopserve_batch_rows_count{component="gmm"})"),
            kRuns * kSteps);
  EXPECT_EQ(MetricValue(
                text, R"(loopserve_batch_wait_seconds_count{component="gmm"})"),
            kRuns * kSteps);
}

TEST_F(LoopServiceTest, PreviewsArePngsOfTheLatentSize) {
  StartServer();
  v1::RunRequest request = DenoiseRequest("gmm-euler", 4, 1);
  (*request.mutable_inputs())["batch_size"].set_int64_value(2);
  request.mutable_stream()->add_values("denoised");
  request.mutable_stream()->set_preview(true);
  int previews = 0;
  ASSERT_OK(client_
                ->Run(request, {.on_iteration =
                                    [&](const v1::Iteration& it) {
                                      auto png = DecodePng(it.preview_png());
                                      ASSERT_OK(png.status());
                                      // The batch side by side.
                                      EXPECT_EQ(png->height, 64);
                                      EXPECT_EQ(png->width, 128);
                                      ++previews;
                                    }})
                .status());
  EXPECT_EQ(previews, 4);

  ASSERT_OK_AND_ASSIGN(v1::PipelineDescription gmm,
                       client_->DescribePipeline("gmm-euler"));
  EXPECT_TRUE(gmm.preview());
  ASSERT_OK_AND_ASSIGN(v1::PipelineDescription seed_loop,
                       client_->DescribePipeline("seed-loop"));
  EXPECT_FALSE(seed_loop.preview());
  v1::RunRequest seed = SeedRequest("seed-loop", 3);
  seed.mutable_stream()->set_preview(true);
  EXPECT_THAT(client_->Run(seed).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("stream.preview: the pipeline has no "
                                 "iteration preview")));
  ExpectStillServing();
}

TEST_F(LoopServiceTest, BadDenoisingInputsAreRefusedAndNamed) {
  StartServer();
  v1::RunRequest steps = DenoiseRequest("gmm-ddim", 0, 1);
  EXPECT_THAT(client_->Run(steps).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'num_inference_steps' must be in")));
  v1::RunRequest too_many = DenoiseRequest("gmm-ddim", 2'000'000, 1);
  EXPECT_THAT(client_->Run(too_many).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("above the server's limit")));
  v1::RunRequest shape = DenoiseRequest("gmm-ddim", 2, 1);
  ASSERT_OK(
      EncodeTensor(at::zeros({1, 3, 8, 8}),
                   *(*shape.mutable_inputs())["latents"].mutable_tensor()));
  EXPECT_THAT(client_->Run(shape).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'latents' must be a floating-point "
                                 "[B,4,H,W] tensor")));
  ExpectStillServing();
}

// A run picks its sampler by name among those the pipeline lists; another
// name is refused before it is queued, naming the input and the choices.
TEST_F(LoopServiceTest, ARunPicksItsSampler) {
  StartServer();
  ASSERT_OK_AND_ASSIGN(v1::PipelineDescription d,
                       client_->DescribePipeline("gmm-ddim"));
  const v1::ParamSpec* scheduler = nullptr;
  for (const v1::ParamSpec& input : d.inputs()) {
    if (input.name() == "scheduler") scheduler = &input;
  }
  ASSERT_NE(scheduler, nullptr);
  EXPECT_THAT(scheduler->choices(),
              ElementsAre("ddim", "euler", "euler-karras", "euler-a",
                          "dpmpp-2m", "dpmpp-2m-karras", "dpmpp-2m-sde-karras",
                          "dpmpp-3m", "unipc", "unipc-3"));
  EXPECT_EQ(scheduler->default_value().string_value(), "ddim");

  auto final_latents = [&](const std::string& sampler) -> at::Tensor {
    v1::RunRequest request = DenoiseRequest("gmm-ddim", 6, 2);
    if (!sampler.empty()) {
      (*request.mutable_inputs())["scheduler"].set_string_value(sampler);
    }
    absl::StatusOr<v1::RunResult> result = client_->Run(request);
    EXPECT_OK(result.status());
    if (!result.ok()) return at::Tensor();
    return *DecodeTensor(result->outputs().at("latents").tensor(), {});
  };
  const at::Tensor by_default = final_latents("");
  EXPECT_TRUE(at::equal(by_default, final_latents("ddim")));
  EXPECT_FALSE(at::equal(by_default, final_latents("dpmpp-2m-karras")));
  EXPECT_FALSE(at::equal(final_latents("unipc"), final_latents("euler-a")));

  v1::RunRequest bad = DenoiseRequest("gmm-ddim", 6, 2);
  (*bad.mutable_inputs())["scheduler"].set_string_value("dpmpp-9m");
  EXPECT_THAT(client_->Run(bad).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("pipeline 'gmm-ddim': input 'scheduler': "
                                 "must be one of: ddim, euler, euler-karras, "
                                 "euler-a, dpmpp-2m, ")));
  ExpectStillServing();
}

// RunStarted reports what the server filled in (a random seed, the
// defaults); sent back, they reproduce the run bit for bit.
TEST_F(LoopServiceTest, ResolvedInputsReproduceTheRun) {
  StartServer();
  v1::RunRequest request;
  request.set_pipeline("gmm-ddim");
  (*request.mutable_inputs())["scheduler"].set_string_value("euler-a");
  (*request.mutable_inputs())["num_inference_steps"].set_int64_value(5);
  google::protobuf::Map<std::string, v1::Value> resolved;
  ASSERT_OK_AND_ASSIGN(
      v1::RunResult first,
      client_->Run(request, {.on_started = [&](const v1::RunStarted& s) {
                     resolved = s.resolved_inputs();
                   }}));
  ASSERT_TRUE(resolved.contains("seed"));
  EXPECT_EQ(resolved.at("seed").kind_case(), v1::Value::kInt64Value);
  EXPECT_EQ(resolved.at("eta").double_value(), 0.0);
  EXPECT_EQ(resolved.at("height").int64_value(), 64);
  EXPECT_FALSE(resolved.contains("scheduler"));  // the request set it
  EXPECT_FALSE(resolved.contains("latents"));    // no default, not drawn

  v1::RunRequest again = request;
  (*again.mutable_inputs())["seed"] = resolved.at("seed");
  ASSERT_OK_AND_ASSIGN(v1::RunResult second, client_->Run(again));
  EXPECT_TRUE(
      at::equal(*DecodeTensor(first.outputs().at("latents").tensor(), {}),
                *DecodeTensor(second.outputs().at("latents").tensor(), {})));
  v1::RunRequest other = request;
  (*other.mutable_inputs())["seed"].set_int64_value(
      resolved.at("seed").int64_value() + 1);
  ASSERT_OK_AND_ASSIGN(v1::RunResult third, client_->Run(other));
  EXPECT_FALSE(
      at::equal(*DecodeTensor(first.outputs().at("latents").tensor(), {}),
                *DecodeTensor(third.outputs().at("latents").tensor(), {})));
}

TEST_F(LoopServiceTest, ListAndDescribe) {
  StartServer();
  ASSERT_OK_AND_ASSIGN(auto pipelines, client_->ListPipelines());
  // The embedded default configuration's, then the test's own.
  std::vector<std::string> names;
  for (const auto& p : pipelines) names.push_back(p.name());
  EXPECT_THAT(names, ElementsAre("seed-loop", "seed-loop-2", "gmm-ddim",
                                 "gmm-euler", "gmm-flow", "digits-ddim",
                                 "digits-text", "digits-img2img", "gated"));

  ASSERT_OK_AND_ASSIGN(v1::PipelineDescription d,
                       client_->DescribePipeline("seed-loop-2"));
  ASSERT_EQ(d.inputs_size(), 2);
  EXPECT_EQ(d.inputs(0).name(), "num_steps");
  EXPECT_EQ(d.inputs(0).type(), "int");
  EXPECT_TRUE(d.inputs(0).required());
  EXPECT_EQ(d.inputs(1).name(), "x");
  EXPECT_EQ(d.inputs(1).type(), "int | double | tensor");
  ASSERT_EQ(d.iteration_outputs_size(), 1);
  EXPECT_EQ(d.iteration_outputs(0).name(), "x");
  ASSERT_EQ(d.outputs_size(), 1);
  EXPECT_EQ(d.blocks().kind(), "loop");
  EXPECT_EQ(d.blocks().type(), "LoopWrapper");
  ASSERT_EQ(d.blocks().blocks_size(), 2);
  EXPECT_EQ(d.blocks().blocks(1).name(), "block2");
  EXPECT_EQ(d.blocks().blocks(1).type(), "LoopBlock");

  EXPECT_THAT(client_->DescribePipeline("nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'nope'")));
}

TEST_F(LoopServiceTest, HealthReportsServing) {
  StartServer();
  EXPECT_EQ(*client_->Health(""), HealthStatus::SERVING);
  EXPECT_EQ(*client_->Health(kServiceName), HealthStatus::SERVING);
  EXPECT_EQ(*client_->Health(kLivenessService), HealthStatus::SERVING);
}

TEST(LoopServerTest, ReadinessWaitsForThePipelinesAndLivenessDoesNot) {
  LoopServerOptions options;
  options.address = "127.0.0.1:0";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<LoopServer> server,
                       LoopServer::Start(options));
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<LoopClient> client,
      LoopClient::Connect(absl::StrCat("127.0.0.1:", server->port())));

  // Loading: alive, not ready, and every call says so.
  EXPECT_EQ(*client->Health(kLivenessService), HealthStatus::SERVING);
  EXPECT_EQ(*client->Health(""), HealthStatus::NOT_SERVING);
  EXPECT_EQ(*client->Health(kServiceName), HealthStatus::NOT_SERVING);
  EXPECT_THAT(client->ListPipelines().status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("loading")));
  EXPECT_THAT(client->Run(SeedRequest("seed-loop", 1)).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("loading")));
  EXPECT_EQ(
      MetricValue(server->metrics().Scrape(),
                  R"(loopserve_rejected_runs_total{reason="unavailable"})"),
      1);

  ASSERT_OK_AND_ASSIGN(PipelineCatalog catalog,
                       LoadDefaultPipelines(c10::kCPU));
  server->Serve(std::move(catalog));
  EXPECT_EQ(*client->Health(kServiceName), HealthStatus::SERVING);
  ASSERT_OK_AND_ASSIGN(v1::RunResult result,
                       client->Run(SeedRequest("seed-loop", 2)));
  EXPECT_EQ(result.outputs().at("x").int64_value(), 2);
  server->Shutdown(absl::Seconds(5));
}

TEST_F(LoopServiceTest, MetricsCountRunsIterationsAndLeafBlocks) {
  StartServer();
  for (int run = 0; run < 3; ++run) {
    ASSERT_OK(client_->Run(SeedRequest("seed-loop-2", 7)).status());
  }
  // A call is counted once gRPC is done with it, which may be a moment
  // after its client has its status.
  ASSERT_TRUE(Eventually([&] {
    return MetricValue(
               server_->metrics().Scrape(),
               R"(loopserve_runs_total{code="OK",pipeline="seed-loop-2"})") ==
           3;
  }));
  const std::string text = server_->metrics().Scrape();
  auto value = [&](absl::string_view series) {
    return MetricValue(text, series);
  };
  EXPECT_EQ(value(R"(loopserve_runs_total{code="OK",pipeline="seed-loop-2"})"),
            3);
  EXPECT_EQ(
      value(R"(loopserve_run_duration_seconds_count{pipeline="seed-loop-2"})"),
      3);
  EXPECT_EQ(
      value(
          R"(loopserve_queue_duration_seconds_count{pipeline="seed-loop-2"})"),
      3);
  EXPECT_EQ(
      value(
          R"(loopserve_time_to_first_iteration_seconds_count{pipeline="seed-loop-2"})"),
      3);
  EXPECT_EQ(
      value(
          R"(loopserve_iteration_duration_seconds_count{pipeline="seed-loop-2"})"),
      21);
  // Both loop blocks, every iteration; each series ends in +Inf = count.
  for (const char* block : {"seed-loop-2/block1", "seed-loop-2/block2"}) {
    SCOPED_TRACE(block);
    const std::string labels =
        absl::StrCat(R"(block=")", block, R"(",pipeline="seed-loop-2")");
    EXPECT_EQ(value(absl::StrCat("loopserve_block_duration_seconds_count{",
                                 labels, "}")),
              21);
    EXPECT_EQ(value(absl::StrCat("loopserve_block_duration_seconds_bucket{",
                                 labels, R"(,le="+Inf"})")),
              21);
  }
  EXPECT_EQ(
      value(R"(loopserve_iterations_streamed_total{pipeline="seed-loop-2"})"),
      21);
  EXPECT_EQ(value(R"(loopserve_stream_bytes_total{pipeline="seed-loop-2"})"),
            21 * 8);  // one int64 x per iteration
  EXPECT_EQ(value(R"(loopserve_active_runs{pipeline="seed-loop-2"})"), 0);
  EXPECT_EQ(value("loopserve_queued_runs"), 0);
  // Series of pipelines nobody ran exist, at zero.
  EXPECT_EQ(
      value(R"(loopserve_run_duration_seconds_count{pipeline="seed-loop"})"),
      0);
  EXPECT_THAT(text, HasSubstr(absl::StrCat(
                        R"(loopserve_build_info{device="cpu",torch_version=")",
                        TORCH_VERSION, R"(",version=")")));
  EXPECT_GT(value("process_resident_memory_bytes"), 0);
  EXPECT_GT(value("process_open_fds"), 0);
  EXPECT_GT(value("process_start_time_seconds"), 1.6e9);
}

TEST_F(LoopServiceTest, MetricsCountRefusalsAndFailuresByCode) {
  StartServer();
  EXPECT_FALSE(client_->Run(SeedRequest("no-such-pipeline", 1)).ok());
  EXPECT_FALSE(client_->Run(SeedRequest("seed-loop", -1)).ok());
  EXPECT_THAT(CancelGatedRun(),
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  ASSERT_TRUE(Eventually([&] {
    return MetricValue(
               server_->metrics().Scrape(),
               R"(loopserve_runs_total{code="CANCELLED",pipeline="gated"})") ==
           1;
  }));
  const std::string text = server_->metrics().Scrape();
  // A name nobody serves never becomes a label.
  EXPECT_EQ(
      MetricValue(
          text, R"(loopserve_runs_total{code="NOT_FOUND",pipeline="unknown"})"),
      1);
  EXPECT_EQ(
      MetricValue(
          text,
          R"(loopserve_runs_total{code="INVALID_ARGUMENT",pipeline="seed-loop"})"),
      1);
  EXPECT_EQ(
      MetricValue(text, R"(loopserve_rejected_runs_total{reason="not_found"})"),
      1);
  EXPECT_EQ(
      MetricValue(
          text, R"(loopserve_rejected_runs_total{reason="invalid_argument"})"),
      1);
  EXPECT_THAT(text, ::testing::Not(HasSubstr("no-such-pipeline")));
  EXPECT_EQ(MetricValue(text, R"(loopserve_active_runs{pipeline="gated"})"), 0);
}

// Every Run call is counted once, under the code its client saw, and each
// that did not end OK writes one log line naming the run, the pipeline, the
// code, the block at fault and the durations.
TEST_F(LoopServiceTest, EveryOutcomeIsCountedOnceUnderTheClientsCodeAndLogged) {
  LoopServerOptions options;
  options.engine.limits.max_iterations = int64_t{1} << 40;
  StartServer(options);
  CapturedLog log;

  ASSERT_OK(client_->Run(SeedRequest("seed-loop", 2)).status());
  EXPECT_THAT(client_->Run(SeedRequest("no-such-pipeline", 1)).status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  v1::RunRequest bad_latents;
  bad_latents.set_pipeline("gmm-ddim");
  bad_latents.set_request_id("req-bad");
  *(*bad_latents.mutable_inputs())["latents"].mutable_tensor() = [] {
    v1::Tensor t;
    t.set_datatype("FP32");
    for (int64_t d : {1, 3, 8, 8}) t.add_shape(d);
    t.set_raw_contents(std::string(3 * 64 * 4, '\0'));
    return t;
  }();
  EXPECT_THAT(client_->Run(bad_latents).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("prepare_latents")));
  v1::RunRequest endless = SeedRequest("seed-loop", int64_t{1} << 40);
  endless.mutable_stream()->set_every(1000000);
  EXPECT_THAT(
      client_->Run(endless, {}, {.timeout = absl::Milliseconds(200)}).status(),
      StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  EXPECT_THAT(CancelGatedRun(),
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));

  ASSERT_TRUE(Eventually([&] {
    return MetricValue(
               server_->metrics().Scrape(),
               R"(loopserve_runs_total{code="CANCELLED",pipeline="gated"})") ==
               1 &&
           MetricValue(
               server_->metrics().Scrape(),
               R"(loopserve_runs_total{code="DEADLINE_EXCEEDED",pipeline="seed-loop"})") ==
               1;
  })) << server_->metrics().Scrape();
  const std::string text = server_->metrics().Scrape();
  EXPECT_EQ(
      MetricValue(text,
                  R"(loopserve_runs_total{code="OK",pipeline="seed-loop"})"),
      1);
  EXPECT_EQ(
      MetricValue(
          text, R"(loopserve_runs_total{code="NOT_FOUND",pipeline="unknown"})"),
      1);
  EXPECT_EQ(
      MetricValue(
          text,
          R"(loopserve_runs_total{code="INVALID_ARGUMENT",pipeline="gmm-ddim"})"),
      1);
  // Once each: five calls, five counts.
  double total = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (absl::StartsWith(line, "loopserve_runs_total{")) {
      total += std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  EXPECT_EQ(total, 5);

  // One line per call that did not end OK, none for the OK one.
  ASSERT_TRUE(Eventually([&] { return log.RunLines("code=").size() == 4; }));
  const auto invalid = log.RunLines("code=INVALID_ARGUMENT");
  ASSERT_EQ(invalid.size(), 1u);
  EXPECT_EQ(invalid[0].severity, google::GLOG_WARNING);
  EXPECT_THAT(
      invalid[0].text,
      ::testing::AllOf(
          ::testing::StartsWith("run ended run_id=run-"),
          HasSubstr(" request_id=req-bad pipeline=gmm-ddim "),
          HasSubstr(" block=gmm-ddim/prepare_latents "),
          ::testing::ContainsRegex(" queue_ms=[0-9.e-]+ run_ms=[0-9.e-]+ "
                                   "iterations=0 message=\".*latents")));
  const auto not_found = log.RunLines("code=NOT_FOUND");
  ASSERT_EQ(not_found.size(), 1u);
  EXPECT_THAT(not_found[0].text,
              ::testing::StartsWith("run refused run_id=- request_id=\"\" "
                                    "pipeline=unknown code=NOT_FOUND "
                                    "message=\"pipeline 'no-such-pipeline'"));
  EXPECT_EQ(log.RunLines("pipeline=gated code=CANCELLED").size(), 1u);
  EXPECT_EQ(log.RunLines("pipeline=seed-loop code=DEADLINE_EXCEEDED").size(),
            1u);
}

// A client that gives up before its request has arrived is counted as it
// saw it, CANCELLED, not as a request that did not parse.
TEST_F(LoopServiceTest, ACallCancelledBeforeItsRequestArrivesCountsCancelled) {
  StartServer();
  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                          grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(
      &context, "/loopserve.v1.LoopPipelineService/Run", &queue);
  int started_tag = 1;
  call->StartCall(&started_tag);
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(queue.Next(&tag, &ok));
  ASSERT_TRUE(ok);
  context.TryCancel();  // before any message
  const bool counted = Eventually([&] {
    return MetricValue(
               server_->metrics().Scrape(),
               R"(loopserve_runs_total{code="CANCELLED",pipeline="unknown"})") ==
           1;
  });
  ASSERT_TRUE(counted) << server_->metrics().Scrape();
  const std::string text = server_->metrics().Scrape();
  EXPECT_EQ(
      MetricValue(
          text,
          R"(loopserve_runs_total{code="INVALID_ARGUMENT",pipeline="unknown"})"),
      -1);
  EXPECT_EQ(
      MetricValue(text, R"(loopserve_rejected_runs_total{reason="cancelled"})"),
      1);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  ExpectStillServing();
}

// Note [one clock]: the queue time a client is told, twice, and the queue
// time Prometheus sees are one interval; so are the run times.
TEST_F(LoopServiceTest, QueueAndRunTimesAreOneIntervalEach) {
  StartServer();
  v1::RunStarted started;
  ASSERT_OK_AND_ASSIGN(
      v1::RunResult result,
      client_->Run(
          SeedRequest("seed-loop-2", 50),
          {.on_started = [&](const v1::RunStarted& s) { started = s; }}));
  EXPECT_EQ(started.queue_ms(), result.stats().queue_ms());
  const std::string text = server_->metrics().Scrape();
  EXPECT_DOUBLE_EQ(
      MetricValue(
          text,
          R"(loopserve_queue_duration_seconds_sum{pipeline="seed-loop-2"})"),
      result.stats().queue_ms() / 1000);
  EXPECT_DOUBLE_EQ(
      MetricValue(
          text,
          R"(loopserve_run_duration_seconds_sum{pipeline="seed-loop-2"})"),
      result.stats().run_ms() / 1000);
}

TEST_F(LoopServiceTest, ActiveRunsCountsARunWhileItRuns) {
  StartServer();
  absl::StatusOr<v1::RunResult> result;
  std::thread run([&] { result = client_->Run(SeedRequest("gated", 2)); });
  gate_entered_.WaitForNotification();
  EXPECT_EQ(MetricValue(server_->metrics().Scrape(),
                        R"(loopserve_active_runs{pipeline="gated"})"),
            1);
  gate_open_.Notify();
  run.join();
  ASSERT_OK(result.status());
  EXPECT_EQ(MetricValue(server_->metrics().Scrape(),
                        R"(loopserve_active_runs{pipeline="gated"})"),
            0);
}

// Note [metrics off the loop]: a fast loop is timed 1 in kSampleEvery
// iterations, yet every iteration and every loop block is counted once.
TEST(RunRecorderTest, SamplesFastLoopsButCountsEveryIteration) {
  ASSERT_OK_AND_ASSIGN(PipelineCatalog catalog,
                       LoadDefaultPipelines(c10::kCPU));
  Metrics metrics({.version = "test", .torch_version = "", .device = "cpu"});
  const Pipeline& pipeline = *catalog.Find("seed-loop-2");
  metrics.AddPipeline(pipeline);
  PipelineMetrics& series = metrics.For("seed-loop-2");
  constexpr int64_t kSteps = 1000;
  {
    RunRecorder recorder(series, RunRecorder::Clock::now());
    PipelineState state;
    state.SetInput("num_steps", kSteps);
    state.SetInput("x", int64_t{0});
    RunContext context{.timer = &recorder};
    ASSERT_OK(RunBlock(*pipeline.root, pipeline.components, state, context));
  }
  EXPECT_EQ(series.iteration_duration->Collect().histogram.sample_count,
            kSteps);
  for (prometheus::Histogram* block : series.block_duration) {
    const auto histogram = block->Collect().histogram;
    EXPECT_EQ(histogram.sample_count, kSteps);
    EXPECT_EQ(histogram.bucket.back().cumulative_count, kSteps);
  }
}

// A run's own buckets (Note [metrics off the loop]) must land exactly where
// prometheus::Histogram::Observe would put each value, bounds included.
TEST(RunRecorderTest, PublishesTheBucketsObserveWouldHave) {
  ASSERT_OK_AND_ASSIGN(PipelineCatalog catalog,
                       LoadDefaultPipelines(c10::kCPU));
  Metrics metrics({.version = "test", .torch_version = "", .device = "cpu"});
  const Pipeline& pipeline = *catalog.Find("seed-loop");
  metrics.AddPipeline(pipeline);
  PipelineMetrics& series = metrics.For("seed-loop");
  prometheus::Histogram direct(Metrics::StepBuckets());
  {
    RunRecorder recorder(series, RunRecorder::Clock::now());
    const auto& loop = static_cast<const LoopBlocks&>(*pipeline.root);
    for (const int64_t ns :
         std::vector<int64_t>{1, 10'000, 10'001, 999'999, 1'000'000, 7'000'000,
                              2'500'000'000, 9'000'000'000}) {
      const std::chrono::nanoseconds elapsed(ns);
      recorder.OnIterationTimed(loop, elapsed);
      direct.Observe(std::chrono::duration<double>(elapsed).count());
    }
  }  // publishes
  const prometheus::ClientMetric published =
      series.iteration_duration->Collect();
  const prometheus::ClientMetric expected = direct.Collect();
  ASSERT_EQ(published.histogram.bucket.size(),
            expected.histogram.bucket.size());
  for (size_t i = 0; i < expected.histogram.bucket.size(); ++i) {
    EXPECT_EQ(published.histogram.bucket[i].cumulative_count,
              expected.histogram.bucket[i].cumulative_count)
        << "le=" << expected.histogram.bucket[i].upper_bound;
  }
  EXPECT_EQ(published.histogram.sample_count, 8);
  EXPECT_DOUBLE_EQ(published.histogram.sample_sum,
                   expected.histogram.sample_sum);
  EXPECT_EQ(series.time_to_first_iteration->Collect().histogram.sample_count,
            1);
}

TEST_F(LoopServiceTest, GracefulShutdownLetsRunsFinishAndRefusesNewOnes) {
  StartServer();
  absl::StatusOr<v1::RunResult> in_flight;
  std::thread run([&] { in_flight = client_->Run(SeedRequest("gated", 10)); });
  gate_entered_.WaitForNotification();
  std::thread shutdown([&] { server_->Shutdown(absl::Seconds(60)); });

  ASSERT_TRUE(Eventually([&] {
    auto health = client_->Health(kServiceName);
    return health.ok() && *health == HealthStatus::NOT_SERVING;
  }));
  EXPECT_THAT(
      client_->Run(SeedRequest("seed-loop", 1)).status(),
      StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
  gate_open_.Notify();
  run.join();
  shutdown.join();
  ASSERT_OK(in_flight.status());
  EXPECT_EQ(in_flight->outputs().at("x").int64_value(), 10);
}

TEST_F(LoopServiceTest, ShutdownCancelsRunsPastTheGracePeriod) {
  LoopServerOptions options;
  options.engine.limits.max_iterations = int64_t{1} << 40;
  StartServer(options);
  absl::Notification running;
  absl::Status status;
  std::thread run([&] {
    v1::RunRequest request = SeedRequest("seed-loop", int64_t{1} << 40);
    request.mutable_stream()->set_every(100000);
    status = client_
                 ->Run(request, {.on_iteration =
                                     [&](const v1::Iteration&) {
                                       if (!running.HasBeenNotified()) {
                                         running.Notify();
                                       }
                                     }})
                 .status();
  });
  running.WaitForNotification();
  server_->Shutdown(absl::Milliseconds(100));
  run.join();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable,
                               HasSubstr("shut down before the run finished")));
  EXPECT_EQ(server_->executor().running(), 0);
}

}  // namespace
}  // namespace loopserve
