// Step-level batching under concurrency (Note [step batching] in
// blocks/diffusion/batched_denoiser.h): N clients, each looping runs with
// random seeds over loopback and streaming `latents` every step, against a
// server with batching off (--max_batch_size=1) and one with it on, the two
// measured in alternating rounds (off, on, on, off) for each N in one
// invocation. Prints, per
// pipeline and N: aggregate denoising steps/s, p50 and p99 run latency, p50
// and p99 time to the first streamed iteration, the mean batch size the runs
// saw, and the on/off ratio of steps/s. First, what one denoiser call costs
// at each batch size, which explains the table.
//
//   build/bench/batch_bench [--pipelines=digits-ddim,digits-text]
//       [--clients=1,2,4,8,16] [--steps=20] [--seconds=3] [--rounds=2]
//       [--max_batch_size=16] [--window_ms=1] [--batch_lanes=2]
//       [--max_concurrent_runs=32]
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "app/default_pipelines.h"
#include "blocks/diffusion/denoisers.h"
#include "client/loop_client.h"
#include "engine/device.h"
#include "server/loop_server.h"
#include "util/malloc_tuning.h"
#include "util/status_macros.h"

ABSL_FLAG(std::vector<std::string>, pipelines,
          std::vector<std::string>({"digits-ddim", "digits-text"}),
          "Pipelines to run");
ABSL_FLAG(std::vector<std::string>, clients,
          std::vector<std::string>({"1", "2", "4", "8", "16"}),
          "Concurrent client counts");
ABSL_FLAG(int64_t, steps, 20, "num_inference_steps of every run");
ABSL_FLAG(double, seconds, 3,
          "How long each client count runs, per mode and round");
ABSL_FLAG(int, rounds, 2, "Rounds per client count, alternating the modes");
ABSL_FLAG(int32_t, intra_op_threads, 1,
          "As loopserve's --intra_op_threads (0: one per core)");
ABSL_FLAG(int64_t, max_batch_size, 16, "The batched server's rows per call");
ABSL_FLAG(double, window_ms, 1, "The batched server's --batch_window_ms");
ABSL_FLAG(int32_t, batch_lanes, 2, "The batched server's --batch_lanes");
ABSL_FLAG(int32_t, max_concurrent_runs, 32,
          "Both servers' --max_concurrent_runs");

namespace loopserve {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t at =
      std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[at];
}

// One denoiser call of the digits UNet at each batch size: the cost that
// batching amortises.
absl::Status PrintModelStepCost(const PipelineCatalog& catalog) {
  const Pipeline* pipeline = catalog.Find("digits-ddim");
  if (pipeline == nullptr) return absl::NotFoundError("digits-ddim");
  ASSIGN_OR_RETURN(const Denoiser* denoiser,
                   pipeline->components.Get<Denoiser>("denoiser"));
  c10::InferenceMode inference;
  std::printf("digits UNet, one call (median of 41):\n");
  std::printf("  %6s %10s %12s\n", "rows", "ms/call", "ms/row");
  for (int64_t rows : {1, 2, 4, 8, 16, 32}) {
    const at::Tensor x = at::randn({rows, 1, 8, 8});
    const at::Tensor t = at::full({rows}, 500, at::kLong);
    const std::vector<at::Tensor> cond = {at::zeros({rows, 1, 10})};
    std::vector<double> ms;
    for (int i = 0; i < 46; ++i) {
      const Clock::time_point start = Clock::now();
      ASSIGN_OR_RETURN(at::Tensor out, denoiser->Predict(x, t, cond));
      if (i >= 5) ms.push_back(1e3 * Seconds(Clock::now() - start));
    }
    const double median = Percentile(ms, 0.5);
    std::printf("  %6ld %10.3f %12.3f\n", static_cast<long>(rows), median,
                median / rows);
  }
  return absl::OkStatus();
}

// What the finished runs of one mode measured, over its rounds.
struct Samples {
  std::vector<double> run_s, first_s, batch;
  int64_t steps = 0;
  double seconds = 0;
};

// `clients` threads loop runs of `pipeline` for `seconds`; the runs that
// finished are added to `samples`.
absl::Status Load(const std::string& address, const std::string& pipeline,
                  int clients, int64_t steps, double seconds,
                  Samples& samples) {
  absl::Mutex mu;
  std::vector<double>& run_s = samples.run_s;
  std::vector<double>& first_s = samples.first_s;
  std::vector<double>& batch = samples.batch;
  absl::Status failure;
  std::atomic<int64_t> steps_done{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point stop =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(seconds));
  v1::RunRequest base;
  base.set_pipeline(pipeline);
  (*base.mutable_inputs())[std::string("num_inference_steps")].set_int64_value(
      steps);
  if (pipeline == "digits-text") {  // a guided run: two rows per call
    (*base.mutable_inputs())[std::string("prompt")].set_string_value(
        "a handwritten seven");
  }
  base.mutable_stream()->add_values("latents");
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      absl::StatusOr<std::unique_ptr<LoopClient>> client =
          LoopClient::Connect(address);
      std::mt19937_64 seeds(1000 + c);
      while (client.ok() && Clock::now() < stop) {
        v1::RunRequest request = base;
        (*request.mutable_inputs())[std::string("seed")].set_int64_value(
            static_cast<int64_t>(seeds() >> 33));
        const Clock::time_point begin = Clock::now();
        Clock::time_point first{};
        absl::StatusOr<v1::RunResult> result = (*client)->Run(
            request, {.on_batch = [&](const v1::IterationBatch&) {
              if (first == Clock::time_point{}) first = Clock::now();
            }});
        const Clock::time_point end = Clock::now();
        absl::MutexLock lock(&mu);
        if (!result.ok()) {
          failure = result.status();
          return;
        }
        steps_done += result->stats().iterations();
        run_s.push_back(Seconds(end - begin));
        first_s.push_back(Seconds(first - begin));
        batch.push_back(result->stats().mean_batch_size());
      }
      if (!client.ok()) {
        absl::MutexLock lock(&mu);
        failure = client.status();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  samples.seconds += Seconds(Clock::now() - start);
  samples.steps += steps_done.load();
  return failure;
}

// One row of the table: `samples` of one mode, `off` the unbatched one's
// steps/s (0 for the unbatched row itself).
double PrintRow(int clients, bool batching, const Samples& s, double off) {
  const double steps_per_second = s.steps / std::max(s.seconds, 1e-9);
  double sum = 0;
  for (double b : s.batch) sum += b;
  std::printf("  %7d %4s %9.1f %9.1f %9.1f %9.2f %9.2f %6.2f %6zu", clients,
              batching ? "on" : "off", steps_per_second,
              1e3 * Percentile(s.run_s, 0.5), 1e3 * Percentile(s.run_s, 0.99),
              1e3 * Percentile(s.first_s, 0.5),
              1e3 * Percentile(s.first_s, 0.99),
              s.batch.empty() ? 0 : sum / s.batch.size(), s.run_s.size());
  if (batching) std::printf(" %7.2fx", steps_per_second / std::max(off, 1e-9));
  std::printf("\n");
  std::fflush(stdout);
  return steps_per_second;
}

absl::StatusOr<std::unique_ptr<LoopServer>> StartServer(
    const BatchingOptions& batching) {
  ASSIGN_OR_RETURN(PipelineCatalog catalog,
                   LoadDefaultPipelines(c10::kCPU, batching));
  LoopServerOptions options;
  options.address = "127.0.0.1:0";
  options.engine.executor.max_concurrent_runs =
      absl::GetFlag(FLAGS_max_concurrent_runs);
  return LoopServer::Start(options, std::move(catalog));
}

absl::Status Main() {
  const BatchingOptions on{
      .max_batch_size = absl::GetFlag(FLAGS_max_batch_size),
      .window = std::chrono::microseconds(
          static_cast<int64_t>(absl::GetFlag(FLAGS_window_ms) * 1000)),
      .lanes = absl::GetFlag(FLAGS_batch_lanes)};
  ASSIGN_OR_RETURN(std::unique_ptr<LoopServer> batched, StartServer(on));
  ASSIGN_OR_RETURN(std::unique_ptr<LoopServer> unbatched,
                   StartServer({.max_batch_size = 1}));
  {
    ASSIGN_OR_RETURN(PipelineCatalog catalog, LoadDefaultPipelines(c10::kCPU));
    RETURN_IF_ERROR(PrintModelStepCost(catalog));
  }
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  std::printf(
      "\n%ld steps per run, streaming latents every step; %d rounds of "
      "%.1f s per point; batching on: --max_batch_size=%ld "
      "--batch_window_ms=%g "
      "--batch_lanes=%d; both: --max_concurrent_runs=%d\n",
      static_cast<long>(steps), rounds, seconds,
      static_cast<long>(on.max_batch_size), absl::GetFlag(FLAGS_window_ms),
      on.lanes, absl::GetFlag(FLAGS_max_concurrent_runs));
  for (const std::string& pipeline : absl::GetFlag(FLAGS_pipelines)) {
    // Warm-up: TorchScript's profiling executor optimises a module after
    // its first calls, at each batch size it sees.
    for (LoopServer* server : {unbatched.get(), batched.get()}) {
      Samples warm_up;
      RETURN_IF_ERROR(Load(absl::StrCat("127.0.0.1:", server->port()), pipeline,
                           4, steps, 1.0, warm_up));
    }
    std::printf("\n%s\n", pipeline.c_str());
    std::printf("  %7s %4s %9s %9s %9s %9s %9s %6s %6s %8s\n", "clients",
                "mode", "steps/s", "run p50", "run p99", "first50", "first99",
                "batch", "runs", "on/off");
    for (const std::string& text : absl::GetFlag(FLAGS_clients)) {
      const int clients = std::stoi(text);
      // Off, on, on, off, ...: a drift of the machine's speed falls on
      // both alike.
      Samples off, on;
      for (int round = 0; round < rounds; ++round) {
        for (const bool batching : {round % 2 == 1, round % 2 == 0}) {
          LoopServer& server = batching ? *batched : *unbatched;
          RETURN_IF_ERROR(Load(absl::StrCat("127.0.0.1:", server.port()),
                               pipeline, clients, steps, seconds,
                               batching ? on : off));
        }
      }
      PrintRow(clients, true, on, PrintRow(clients, false, off, 0));
    }
  }
  std::printf(
      "\n(latencies in ms; batch: the mean RunStats.mean_batch_size; "
      "on/off: steps/s with batching over without)\n");
  batched->Shutdown(absl::Seconds(5));
  unbatched->Shutdown(absl::Seconds(5));
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
  if (absl::Status status = loopserve::Main(); !status.ok()) {
    std::cerr << status << std::endl;
    return 1;
  }
  return 0;
}
