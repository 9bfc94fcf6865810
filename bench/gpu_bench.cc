// The device path with a denoiser the size of a real one: a UNet-like
// TorchScript model with random weights (bench/make_unet.py), under DDIM,
// on --device. scripts/gpu-check runs it on the GPU; `gpu-check --cpu` runs
// it small on the CPU.
//
//   build/bench/gpu_bench --model=unet.pt --device=cuda [--steps=100]
//       [--batches=1,2,4,8,16,32] [--dtype=float32] [--json=figures.json]
//
// Every figure is measured side by side in this one process:
//  1. in-process steps/s: the pipeline run directly (RunBlock), nothing
//     streamed, with the device synchronised once at the end;
//  2. the service: the same run through a loopserve server and a LoopClient
//     on loopback, every step's latents streamed; its per-step overhead
//     over (1), the median of the ratios of runs taken in turn (the goal
//     is 1 % or less);
//  3. time to first iteration, at the client;
//  4. steps/s at 1..32 concurrent runs through step-level batching
//     (--max_batch_size=32), all streaming every step;
//  5. how much of the device-to-host copy of the streamed latents overlaps
//     compute: per-step time with no copy (a), a blocking copy each step (b),
//     and HostCopy (Note [copies off the device]) each step (c); overlap =
//     1 - (c - a) / (b - a).
// Each time is the median of --repeats runs.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "app/default_pipelines.h"
#include "bench/unet_pipeline.h"
#include "blocks/core/block.h"
#include "blocks/core/loop.h"
#include "client/loop_client.h"
#include "engine/device.h"
#include "engine/host_copy.h"
#include "server/loop_server.h"
#include "util/status_macros.h"

ABSL_FLAG(std::string, model, "", "TorchScript UNet (bench/make_unet.py)");
ABSL_FLAG(std::string, device, "cuda", "--device of the pipeline");
ABSL_FLAG(std::string, dtype, "float32", "The denoiser's dtype");
ABSL_FLAG(int64_t, steps, 100, "num_inference_steps of every run");
ABSL_FLAG(int64_t, size, 64, "Latent height and width ([1,4,size,size])");
ABSL_FLAG(std::vector<std::string>, batches,
          std::vector<std::string>({"1", "2", "4", "8", "16", "32"}),
          "Concurrent runs for the batching figures");
ABSL_FLAG(int, repeats, 5, "Runs per figure; the median is reported");
ABSL_FLAG(int32_t, intra_op_threads, 1,
          "As loopserve's --intra_op_threads (0: one per core)");
ABSL_FLAG(std::string, json, "", "Also write the figures here");

namespace loopserve {
namespace {

absl::StatusOr<PipelineCatalog> Load(c10::Device device, int64_t batch) {
  return LoadUnetPipeline(absl::GetFlag(FLAGS_model),
                          absl::GetFlag(FLAGS_dtype), absl::GetFlag(FLAGS_size),
                          device, {.max_batch_size = batch});
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// What the in-process loop does with each step's latents.
enum class Copy { kNone, kBlocking, kHostCopy };

class CopyObserver final : public IterationObserver {
 public:
  explicit CopyObserver(Copy copy) : copy_(copy) {}
  absl::Status OnIteration(const LoopIteration& iteration) override {
    const at::Tensor& latents = iteration.state.Find("latents")->toTensor();
    if (copy_ == Copy::kBlocking) kept_.push_back(latents.to(at::kCPU));
    if (copy_ == Copy::kHostCopy) copies_.push_back(HostCopy::Start(latents));
    return absl::OkStatus();
  }
  void WaitAll() {
    for (HostCopy& copy : copies_) copy.Wait();
  }

 private:
  const Copy copy_;
  std::vector<at::Tensor> kept_;
  std::vector<HostCopy> copies_;
};

// Seconds per step of one in-process run, the device synchronised at its
// end (the final latents read on the host).
absl::StatusOr<double> InProcessStep(const PipelineCatalog& catalog,
                                     c10::Device device, Copy copy) {
  const Pipeline& pipeline = *catalog.Find("unet");
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  c10::InferenceMode inference;
  PipelineState state;
  state.SetInput("num_inference_steps", steps);
  state.SetInput("seed", int64_t{1});
  CopyObserver observer(copy);
  RunContext context{.observer = &observer, .device = device};
  const absl::Time start = absl::Now();
  RETURN_IF_ERROR(
      RunBlock(*pipeline.root, pipeline.components, state, context));
  state.GetIntermediate("latents")->toTensor().to(at::kCPU);
  observer.WaitAll();
  return absl::ToDoubleSeconds(absl::Now() - start) / steps;
}

v1::RunRequest StreamingRequest(int64_t seed) {
  v1::RunRequest request;
  request.set_pipeline("unet");
  // std::string keys: GCC 12 misreads literal ones (-Warray-bounds).
  auto& inputs = *request.mutable_inputs();
  inputs[std::string("num_inference_steps")].set_int64_value(
      absl::GetFlag(FLAGS_steps));
  inputs[std::string("seed")].set_int64_value(seed);
  request.mutable_stream()->add_values(std::string("latents"));
  return request;
}

struct ServiceRun {
  double step_s = 0;
  double first_iteration_s = 0;
  int64_t iterations = 0;
};

absl::StatusOr<ServiceRun> ServiceStep(LoopClient& client, int64_t seed) {
  ServiceRun run;
  const absl::Time start = absl::Now();
  absl::Time first;
  ASSIGN_OR_RETURN(v1::RunResult result,
                   client.Run(StreamingRequest(seed),
                              {.on_iteration = [&](const v1::Iteration&) {
                                if (run.iterations++ == 0) first = absl::Now();
                              }}));
  (void)result;
  run.step_s =
      absl::ToDoubleSeconds(absl::Now() - start) / absl::GetFlag(FLAGS_steps);
  run.first_iteration_s = absl::ToDoubleSeconds(first - start);
  return run;
}

absl::Status Main() {
  if (absl::GetFlag(FLAGS_model).empty()) {
    return absl::InvalidArgumentError(
        "--model: give bench/make_unet.py's file");
  }
  ASSIGN_OR_RETURN(const c10::Device device,
                   ResolveDevice(absl::GetFlag(FLAGS_device)));
  const int repeats = absl::GetFlag(FLAGS_repeats);
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  std::vector<std::pair<std::string, double>> figures;
  auto report = [&figures](const std::string& key, double value) {
    figures.emplace_back(key, value);
    std::printf("gpu_bench %s=%.6g\n", key.c_str(), value);
    std::fflush(stdout);
  };

  int max_batch = 1;
  for (const std::string& b : absl::GetFlag(FLAGS_batches)) {
    max_batch = std::max(max_batch, std::stoi(b));
  }
  ASSIGN_OR_RETURN(PipelineCatalog catalog, Load(device, 1));

  // 1 and 5: in process, interleaved.
  RETURN_IF_ERROR(InProcessStep(catalog, device, Copy::kNone).status());
  std::vector<double> none, blocking, host_copy;
  for (int r = 0; r < repeats; ++r) {
    ASSIGN_OR_RETURN(double a, InProcessStep(catalog, device, Copy::kNone));
    ASSIGN_OR_RETURN(double b, InProcessStep(catalog, device, Copy::kBlocking));
    ASSIGN_OR_RETURN(double c, InProcessStep(catalog, device, Copy::kHostCopy));
    none.push_back(a);
    blocking.push_back(b);
    host_copy.push_back(c);
  }
  const double in_process = Median(none);
  report("in_process_step_ms", in_process * 1e3);
  report("in_process_steps_per_s", 1 / in_process);
  report("blocking_copy_step_ms", Median(blocking) * 1e3);
  report("host_copy_step_ms", Median(host_copy) * 1e3);
  // On the CPU nothing leaves a device: a "blocking copy" copies nothing.
  const double copy_cost = Median(blocking) - in_process;
  if (!device.is_cpu() && copy_cost > 0) {
    report(
        "copy_overlap_fraction",
        std::clamp(1 - (Median(host_copy) - in_process) / copy_cost, 0.0, 1.0));
  }

  // 2 and 3: the service, every step streamed; in-process runs interleaved
  // with the service's so that both see the same device.
  LoopServerOptions options;
  options.address = "127.0.0.1:0";
  options.engine.device = device;
  options.engine.executor.max_concurrent_runs = std::max(max_batch, 1);
  options.engine.executor.max_queued_runs = 2 * std::max(max_batch, 1);
  ASSIGN_OR_RETURN(PipelineCatalog served, Load(device, max_batch));
  ASSIGN_OR_RETURN(std::unique_ptr<LoopServer> server,
                   LoopServer::Start(options, std::move(served)));
  ASSIGN_OR_RETURN(
      std::unique_ptr<LoopClient> client,
      LoopClient::Connect(absl::StrCat("127.0.0.1:", server->port())));
  RETURN_IF_ERROR(ServiceStep(*client, 1).status());
  std::vector<double> service, first, alone, ratios;
  for (int r = 0; r < repeats; ++r) {
    ASSIGN_OR_RETURN(ServiceRun run, ServiceStep(*client, r));
    if (run.iterations != steps) {
      return absl::InternalError(
          absl::StrCat("streamed ", run.iterations, " iterations of ", steps));
    }
    service.push_back(run.step_s);
    first.push_back(run.first_iteration_s);
    ASSIGN_OR_RETURN(double a, InProcessStep(catalog, device, Copy::kNone));
    alone.push_back(a);
    ratios.push_back(run.step_s / a);
  }
  report("service_step_ms", Median(service) * 1e3);
  report("service_in_process_step_ms", Median(alone) * 1e3);
  // Run by run: the machine's own drift cancels out of each ratio.
  report("service_overhead_percent", 100 * (Median(ratios) - 1));
  report("first_iteration_ms", Median(first) * 1e3);

  // 4: concurrent runs, batched at the denoiser.
  for (const std::string& b : absl::GetFlag(FLAGS_batches)) {
    const int runs = std::stoi(b);
    std::vector<double> rates;
    for (int r = 0; r < std::max(1, repeats / 2); ++r) {
      std::vector<absl::Status> statuses(runs);
      std::vector<std::thread> threads;
      const absl::Time start = absl::Now();
      for (int i = 0; i < runs; ++i) {
        threads.emplace_back([&, i] {
          statuses[i] = ServiceStep(*client, 100 * r + i).status();
        });
      }
      for (std::thread& thread : threads) thread.join();
      for (const absl::Status& status : statuses) RETURN_IF_ERROR(status);
      rates.push_back(runs * steps /
                      absl::ToDoubleSeconds(absl::Now() - start));
    }
    report(absl::StrCat("batch_", runs, "_steps_per_s"), Median(rates));
  }
  if (const std::optional<DeviceMemory> memory = DeviceMemoryOf(device)) {
    report("device_memory_allocated_mib", memory->allocated / 1048576.0);
    report("device_memory_reserved_mib", memory->reserved / 1048576.0);
  }
  server->Shutdown(absl::Seconds(5));

  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream out(path);
    out << "{";
    for (size_t i = 0; i < figures.size(); ++i) {
      out << (i ? ", " : "") << "\"" << figures[i].first
          << "\": " << figures[i].second;
    }
    out << "}\n";
  }
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
  if (absl::Status status = loopserve::Main(); !status.ok()) {
    std::cerr << status << std::endl;
    return 1;
  }
  return 0;
}
