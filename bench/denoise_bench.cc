// The service's overhead on a real denoising run: the same pipeline run
// in-process (RunBlock) and through the service (LoopClient over loopback,
// streaming `latents` every step), alternating, in one process. Prints the
// medians, the paired overhead, steps per second and the time to the first
// streamed iteration.
//
//   build/bench/denoise_bench [--pipeline=digits-ddim] [--steps=50]
//                             [--repeats=21] [--batch=1]
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "app/default_pipelines.h"
#include "blocks/builtin_blocks.h"
#include "client/loop_client.h"
#include "engine/device.h"
#include "server/loop_server.h"
#include "util/malloc_tuning.h"
#include "util/status_macros.h"

ABSL_FLAG(std::string, pipeline, "digits-ddim", "Pipeline to run");
ABSL_FLAG(int64_t, steps, 50, "num_inference_steps");
ABSL_FLAG(int64_t, batch, 1, "batch_size");
ABSL_FLAG(int, repeats, 21, "Paired runs; medians are reported");
ABSL_FLAG(int32_t, intra_op_threads, 1,
          "As loopserve's --intra_op_threads (0: one per core)");

namespace loopserve {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

absl::Status Main() {
  const std::string name = absl::GetFlag(FLAGS_pipeline);
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  ASSIGN_OR_RETURN(PipelineCatalog local, LoadDefaultPipelines(c10::kCPU));
  ASSIGN_OR_RETURN(PipelineCatalog served, LoadDefaultPipelines(c10::kCPU));
  const Pipeline* pipeline = local.Find(name);
  if (pipeline == nullptr) return absl::NotFoundError(name);

  LoopServerOptions options;
  options.address = "127.0.0.1:0";
  ASSIGN_OR_RETURN(std::unique_ptr<LoopServer> server,
                   LoopServer::Start(options, std::move(served)));
  ASSIGN_OR_RETURN(
      std::unique_ptr<LoopClient> client,
      LoopClient::Connect(absl::StrCat("127.0.0.1:", server->port())));

  v1::RunRequest request;
  request.set_pipeline(name);
  (*request.mutable_inputs())["num_inference_steps"].set_int64_value(steps);
  (*request.mutable_inputs())["batch_size"].set_int64_value(batch);
  (*request.mutable_inputs())["seed"].set_int64_value(7);
  request.mutable_stream()->add_values("latents");

  auto in_process = [&]() -> absl::StatusOr<double> {
    c10::InferenceMode guard;  // as the server's executor threads run
    PipelineState state;
    state.SetInput("num_inference_steps", steps);
    state.SetInput("batch_size", batch);
    state.SetInput("seed", int64_t{7});
    RunContext context;
    const absl::Time start = absl::Now();
    RETURN_IF_ERROR(
        RunBlock(*pipeline->root, pipeline->components, state, context));
    return absl::ToDoubleMilliseconds(absl::Now() - start);
  };
  auto through_service = [&](double& first_ms) -> absl::StatusOr<double> {
    int64_t iterations = 0;
    const absl::Time start = absl::Now();
    absl::Time first = start;
    ASSIGN_OR_RETURN(
        v1::RunResult result,
        client->Run(request, {.on_iteration = [&](const v1::Iteration&) {
                      if (iterations++ == 0) {
                        first = absl::Now();
                      }
                    }}));
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    if (iterations != steps) {
      return absl::InternalError(
          absl::StrCat("streamed ", iterations, " of ", steps, " steps"));
    }
    first_ms = absl::ToDoubleMilliseconds(first - start);
    return ms;
  };

  // Warm up both paths (first-call allocations, the channel).
  double first_ms = 0;
  RETURN_IF_ERROR(in_process().status());
  RETURN_IF_ERROR(through_service(first_ms).status());

  std::vector<double> local_ms, service_ms, ratios, first;
  for (int r = 0; r < absl::GetFlag(FLAGS_repeats); ++r) {
    ASSIGN_OR_RETURN(double a, in_process());
    ASSIGN_OR_RETURN(double b, through_service(first_ms));
    local_ms.push_back(a);
    service_ms.push_back(b);
    ratios.push_back(b / a);
    first.push_back(first_ms);
  }
  const double local_median = Median(local_ms);
  const double service = Median(service_ms);
  std::printf("pipeline %s, %lld steps, batch %lld, %zu paired runs\n",
              name.c_str(), static_cast<long long>(steps),
              static_cast<long long>(batch), local_ms.size());
  const double local_min = *std::min_element(local_ms.begin(), local_ms.end());
  const double service_min =
      *std::min_element(service_ms.begin(), service_ms.end());
  std::printf(
      "  in-process    median %8.2f ms/run (%6.1f steps/s), "
      "best %8.2f ms\n",
      local_median, steps * 1000.0 / local_median, local_min);
  std::printf(
      "  service       median %8.2f ms/run (%6.1f steps/s), "
      "best %8.2f ms  (streaming latents every step)\n",
      service, steps * 1000.0 / service, service_min);
  std::printf(
      "  overhead      %+7.2f %% median of paired ratios, %+7.2f %% "
      "best against best\n",
      (Median(ratios) - 1.0) * 100.0, (service_min / local_min - 1.0) * 100.0);
  std::printf("  time to first iteration %.2f ms (median)\n", Median(first));
  server->Shutdown(absl::Seconds(5));
  return absl::OkStatus();
}

}  // namespace
}  // namespace loopserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status status =
          loopserve::SetIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads));
      !status.ok()) {
    std::cerr << status << std::endl;
    return 2;
  }
  loopserve::TuneMallocForStreaming();
  if (absl::Status s = loopserve::Main(); !s.ok()) {
    std::cerr << "denoise_bench: " << s << std::endl;
    return 1;
  }
  return 0;
}
