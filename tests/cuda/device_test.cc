// The device path (label `cuda`): pipelines on the device under test against
// the same pipelines on the CPU, and the server with --device set to it.
//
// The device under test is $LOOPSERVE_TEST_DEVICE, "cuda" by default; every
// test skips when it is not there. scripts/gpu-check runs them on the GPU,
// and `scripts/gpu-check --cpu` with LOOPSERVE_TEST_DEVICE=cpu, where they
// check the same paths (streaming, copies off the device, previews, memory)
// against the CPU itself.
#include "engine/device.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "app/default_pipelines.h"
#include "bench/unet_pipeline.h"
#include "blocks/core/block.h"
#include "blocks/core/loop.h"
#include "client/loop_client.h"
#include "engine/tensor_codec.h"
#include "server/loop_server.h"
#include "tests/testing/eventually.h"
#include "tests/testing/status_matchers.h"

namespace loopserve {
namespace {

using ::loopserve::testing::Eventually;
using ::loopserve::testing::StatusIs;
using Inputs = std::map<std::string, c10::IValue>;

// The device under test, or why there is none.
absl::StatusOr<c10::Device> DeviceUnderTest() {
  const char* flag = std::getenv("LOOPSERVE_TEST_DEVICE");
  return ResolveDevice(flag != nullptr && *flag != '\0' ? flag : "cuda");
}

#define SKIP_WITHOUT_DEVICE(device)                                   \
  absl::StatusOr<c10::Device> device##_or = DeviceUnderTest();        \
  if (!device##_or.ok()) {                                            \
    GTEST_SKIP() << "no device under test: " << device##_or.status(); \
  }                                                                   \
  const c10::Device device = *device##_or

// Records each iteration's latents, on the CPU, in float64.
class Trajectory final : public IterationObserver {
 public:
  absl::Status OnIteration(const LoopIteration& iteration) override {
    const c10::IValue* latents = iteration.state.Find("latents");
    if (latents != nullptr && latents->isTensor()) {
      steps.push_back(latents->toTensor().to(at::kCPU, at::kDouble));
    }
    return absl::OkStatus();
  }
  std::vector<at::Tensor> steps;
};

absl::StatusOr<std::vector<at::Tensor>> RunTrajectory(
    const PipelineCatalog& catalog, const std::string& name,
    const Inputs& inputs, c10::Device device) {
  const Pipeline* pipeline = catalog.Find(name);
  if (pipeline == nullptr) return absl::NotFoundError(name);
  c10::InferenceMode inference;
  PipelineState state;
  for (const auto& [key, value] : inputs) state.SetInput(key, value);
  Trajectory trajectory;
  RunContext context{.observer = &trajectory, .device = device};
  RETURN_IF_ERROR(
      RunBlock(*pipeline->root, pipeline->components, state, context));
  return trajectory.steps;
}

// The largest difference between two trajectories, relative to the CPU
// trajectory's scale (at least 1).
double Deviation(const std::vector<at::Tensor>& device_steps,
                 const std::vector<at::Tensor>& cpu_steps) {
  EXPECT_EQ(device_steps.size(), cpu_steps.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(device_steps.size(), cpu_steps.size()); ++i) {
    const double scale = std::max(1.0, cpu_steps[i].abs().max().item<double>());
    worst = std::max(
        worst,
        (device_steps[i] - cpu_steps[i]).abs().max().item<double>() / scale);
  }
  return worst;
}

class DeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Comparisons with the CPU: no TF32 in convolutions or matmuls.
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
  }
};

// Every sampler, deterministic and stochastic (noise drawn on the run's
// CPU generator, then moved): each step's latents within 1e-4 of the CPU's.
TEST_F(DeviceTest, EverySamplersTrajectoryMatchesTheCpu) {
  SKIP_WITHOUT_DEVICE(device);
  ASSERT_OK_AND_ASSIGN(PipelineCatalog on_cpu, LoadDefaultPipelines(c10::kCPU));
  ASSERT_OK_AND_ASSIGN(PipelineCatalog on_device, LoadDefaultPipelines(device));
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"gmm-ddim",
       {"ddim", "euler", "euler-karras", "euler-a", "dpmpp-2m",
        "dpmpp-2m-karras", "dpmpp-2m-sde-karras", "dpmpp-3m", "unipc",
        "unipc-3"}},
      {"gmm-flow", {"flow-euler", "flow-euler-dynamic"}}};
  for (const auto& [pipeline, samplers] : cases) {
    for (const std::string& sampler : samplers) {
      SCOPED_TRACE(absl::StrCat(pipeline, " ", sampler));
      const Inputs inputs = {{"num_inference_steps", int64_t{20}},
                             {"seed", int64_t{7}},
                             {"scheduler", sampler}};
      ASSERT_OK_AND_ASSIGN(auto cpu,
                           RunTrajectory(on_cpu, pipeline, inputs, c10::kCPU));
      ASSERT_OK_AND_ASSIGN(auto dev,
                           RunTrajectory(on_device, pipeline, inputs, device));
      ASSERT_EQ(cpu.size(), 20u);
      EXPECT_LE(Deviation(dev, cpu), 1e-4);
    }
  }
}

// The shipped digits UNet and text encoder, guided and not.
TEST_F(DeviceTest, DigitsPipelinesMatchTheCpu) {
  SKIP_WITHOUT_DEVICE(device);
  ASSERT_OK_AND_ASSIGN(PipelineCatalog on_cpu, LoadDefaultPipelines(c10::kCPU));
  ASSERT_OK_AND_ASSIGN(PipelineCatalog on_device, LoadDefaultPipelines(device));
  for (const std::string pipeline : {"digits-ddim", "digits-text"}) {
    for (const std::string sampler : {"ddim", "euler-a", "dpmpp-2m-karras"}) {
      SCOPED_TRACE(absl::StrCat(pipeline, " ", sampler));
      const Inputs inputs = {{"num_inference_steps", int64_t{25}},
                             {"seed", int64_t{3}},
                             {"scheduler", sampler},
                             {"prompt", std::string("a handwritten seven")}};
      ASSERT_OK_AND_ASSIGN(auto cpu,
                           RunTrajectory(on_cpu, pipeline, inputs, c10::kCPU));
      ASSERT_OK_AND_ASSIGN(auto dev,
                           RunTrajectory(on_device, pipeline, inputs, device));
      EXPECT_LE(Deviation(dev, cpu), 1e-4);
    }
  }
}

// A UNet-like denoiser (bench/make_unet.py, random weights) in half
// precision, the component's dtype: finite, and close to float32 at the
// precision of the type. (The shipped digits model computes its timestep
// embedding in float32 whatever its weights' type, so it runs in float32
// only.)
absl::StatusOr<PipelineCatalog> LoadUnet(c10::Device device,
                                         const std::string& dtype) {
  const char* path = std::getenv("TEST_UNET");
  if (path == nullptr) return absl::FailedPreconditionError("no $TEST_UNET");
  return LoadUnetPipeline(path, dtype, 16, device);
}

TEST_F(DeviceTest, HalfPrecisionDenoisers) {
  SKIP_WITHOUT_DEVICE(device);
  const Inputs inputs = {{"num_inference_steps", int64_t{20}},
                         {"seed", int64_t{5}}};
  ASSERT_OK_AND_ASSIGN(PipelineCatalog full, LoadUnet(device, "float32"));
  ASSERT_OK_AND_ASSIGN(auto reference,
                       RunTrajectory(full, "unet", inputs, device));
  for (const auto& [dtype, tolerance] :
       {std::pair{"float16", 2e-2}, std::pair{"bfloat16", 1e-1}}) {
    SCOPED_TRACE(dtype);
    if (device.is_cpu() && std::string(dtype) == "float16") {
      continue;  // libtorch 1.13 has no float16 convolution on the CPU
    }
    ASSERT_OK_AND_ASSIGN(PipelineCatalog half, LoadUnet(device, dtype));
    ASSERT_OK_AND_ASSIGN(auto steps,
                         RunTrajectory(half, "unet", inputs, device));
    ASSERT_EQ(steps.size(), reference.size());
    EXPECT_TRUE(at::isfinite(steps.back()).all().item<bool>());
    // One step: a random model's whole trajectory amplifies any rounding.
    const double deviation = Deviation({steps[0]}, {reference[0]});
    EXPECT_LE(deviation, tolerance);
    EXPECT_GT(deviation, 0);  // it did run in another precision
  }
}

v1::RunRequest DigitsRequest(int64_t steps, int64_t seed) {
  v1::RunRequest request;
  request.set_pipeline("digits-text");
  auto& inputs = *request.mutable_inputs();
  inputs["num_inference_steps"].set_int64_value(steps);
  inputs["seed"].set_int64_value(seed);
  inputs["prompt"].set_string_value(std::string("a handwritten seven"));
  request.mutable_stream()->add_values(std::string("latents"));
  request.mutable_stream()->set_preview(true);
  return request;
}

at::Tensor Decoded(const v1::Value& value) {
  absl::StatusOr<at::Tensor> tensor = DecodeTensor(value.tensor(), {});
  EXPECT_OK(tensor.status());
  return tensor.ok() ? tensor->to(at::kDouble) : at::Tensor();
}

// The server with --device set: every step's latents streamed (copied off
// the device without stalling the loop) with a preview, equal to the CPU's;
// cancellation and deadlines; step-level batching of concurrent runs.
class DeviceServerTest : public DeviceTest {
 protected:
  void StartServer(c10::Device device, int max_batch_size) {
    LoopServerOptions options;
    options.address = "127.0.0.1:0";
    options.engine.device = device;
    options.engine.executor.max_concurrent_runs = 8;
    ASSERT_OK_AND_ASSIGN(
        PipelineCatalog catalog,
        LoadDefaultPipelines(device, {.max_batch_size = max_batch_size}));
    ASSERT_OK_AND_ASSIGN(server_,
                         LoopServer::Start(options, std::move(catalog)));
    ASSERT_OK_AND_ASSIGN(client_, LoopClient::Connect(absl::StrCat(
                                      "127.0.0.1:", server_->port())));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
  }

  // Runs `request`, keeping each streamed iteration's latents.
  absl::StatusOr<std::vector<at::Tensor>> Stream(const v1::RunRequest& request,
                                                 RunCallOptions options = {},
                                                 int* previews = nullptr) {
    std::vector<at::Tensor> latents;
    ASSIGN_OR_RETURN(
        v1::RunResult result,
        client_->Run(
            request,
            {.on_iteration =
                 [&](const v1::Iteration& it) {
                   latents.push_back(Decoded(it.values().at("latents")));
                   if (previews != nullptr && !it.preview_png().empty()) {
                     ++*previews;
                   }
                 }},
            options));
    return latents;
  }

  std::unique_ptr<LoopServer> server_;
  std::unique_ptr<LoopClient> client_;
};

TEST_F(DeviceServerTest, StreamsEveryStepAsTheCpuDoes) {
  SKIP_WITHOUT_DEVICE(device);
  ASSERT_OK_AND_ASSIGN(PipelineCatalog on_cpu, LoadDefaultPipelines(c10::kCPU));
  const Inputs inputs = {{"num_inference_steps", int64_t{30}},
                         {"seed", int64_t{11}},
                         {"prompt", std::string("a handwritten seven")}};
  ASSERT_OK_AND_ASSIGN(auto cpu,
                       RunTrajectory(on_cpu, "digits-text", inputs, c10::kCPU));
  StartServer(device, 1);
  int previews = 0;
  ASSERT_OK_AND_ASSIGN(auto streamed,
                       Stream(DigitsRequest(30, 11), {}, &previews));
  EXPECT_EQ(previews, 30);
  EXPECT_LE(Deviation(streamed, cpu), 1e-4);
}

TEST_F(DeviceServerTest, CancelAndDeadlineStopTheRunAndTheServerServesOn) {
  SKIP_WITHOUT_DEVICE(device);
  StartServer(device, 1);
  RunCancellation cancellation;
  // The scheduler's most steps: long enough to cancel, and to outlast a
  // 50 ms deadline, on any device.
  v1::RunRequest endless = DigitsRequest(1000, 1);
  int seen = 0;
  absl::StatusOr<v1::RunResult> cancelled =
      client_->Run(endless,
                   {.on_iteration =
                        [&](const v1::Iteration&) {
                          if (++seen == 3) cancellation.Cancel();
                        }},
                   {.cancellation = &cancellation});
  EXPECT_THAT(cancelled, StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  EXPECT_THAT(Stream(endless, {.timeout = absl::Milliseconds(50)}),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  ASSERT_OK_AND_ASSIGN(auto after, Stream(DigitsRequest(10, 2)));
  EXPECT_EQ(after.size(), 10u);
}

// Concurrent runs share batched denoiser calls on the device and end where
// each ends alone.
TEST_F(DeviceServerTest, BatchedRunsEndWhereTheyEndAlone) {
  SKIP_WITHOUT_DEVICE(device);
  StartServer(device, 8);
  std::vector<std::vector<at::Tensor>> alone(8);
  for (int i = 0; i < 8; ++i) {
    ASSERT_OK_AND_ASSIGN(alone[i], Stream(DigitsRequest(20, 100 + i)));
  }
  std::vector<absl::StatusOr<std::vector<at::Tensor>>> together(
      8, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back(
        [&, i] { together[i] = Stream(DigitsRequest(20, 100 + i)); });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < 8; ++i) {
    ASSERT_OK(together[i].status());
    EXPECT_LE(Deviation(*together[i], alone[i]), 1e-4) << "run " << i;
  }
}

// A hundred runs leave the device's memory where it was after the first.
TEST_F(DeviceServerTest, DeviceMemoryReturnsToItsBaseline) {
  SKIP_WITHOUT_DEVICE(device);
  if (!DeviceMemoryOf(device).has_value()) {
    GTEST_SKIP() << device << " reports no allocator figures";
  }
  StartServer(device, 1);
  for (int i = 0; i < 3; ++i) ASSERT_OK(Stream(DigitsRequest(10, i)).status());
  // A run's state is released once its call is done, just after the client
  // has its result.
  auto allocated = [device] { return DeviceMemoryOf(device)->allocated; };
  absl::SleepFor(absl::Milliseconds(200));
  const int64_t baseline = allocated();
  for (int i = 0; i < 100; ++i) {
    ASSERT_OK(Stream(DigitsRequest(10, 1000 + i)).status());
  }
  EXPECT_TRUE(
      Eventually([&] { return allocated() <= baseline; }, absl::Seconds(5)))
      << allocated() << " bytes allocated, " << baseline << " before";
}

}  // namespace
}  // namespace loopserve
