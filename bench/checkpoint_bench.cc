// What checkpoints cost (engine/checkpoint.h): a loopserve server and one
// LoopClient in this process over loopback; each case run with
// StreamOptions.checkpoints off and on, alternately, in the same process.
//
//   build/bench/checkpoint_bench [--steps=50] [--repeats=7]
//
// Prints, per case: the checkpoint's bytes per iteration, the time per step
// without and with checkpoints (the median of --repeats runs each), their
// ratio, and the time of a resume from the middle iteration to the end
// beside the same steps in the uninterrupted run.
//   digits-text   the shipped 8x8 UNet, DPM++ 2M (a multistep history),
//                 guidance 3
//   gmm [1,4,64,64]  Stable-Diffusion-sized latents with the mixture's exact
//                 (near-free) denoiser: the checkpoint's own cost shows
//   seed-loop     an int x: the per-iteration floor
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "app/default_pipelines.h"
#include "client/loop_client.h"
#include "server/loop_server.h"
#include "util/malloc_tuning.h"

ABSL_FLAG(int64_t, steps, 50, "Iterations of each run");
ABSL_FLAG(int, repeats, 7, "Runs per figure; the median is reported");

namespace loopserve {
namespace {

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct Timed {
  double seconds = 0;
  int64_t iterations = 0;
  int64_t checkpoint_bytes = 0;
  std::string middle_checkpoint;
};

Timed TimedRun(LoopClient& client, const v1::RunRequest& request) {
  Timed timed;
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::RunResult> result = client.Run(
      request, {.on_iteration = [&](const v1::Iteration& it) {
        ++timed.iterations;
        timed.checkpoint_bytes += static_cast<int64_t>(it.checkpoint().size());
        if (it.total() > 0 && it.index() == it.total() / 2) {
          timed.middle_checkpoint = it.checkpoint();
        }
      }});
  timed.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!result.ok()) {
    std::fprintf(stderr, "run failed: %s\n",
                 result.status().ToString().c_str());
    std::exit(1);
  }
  return timed;
}

void Case(LoopClient& client, const CheckpointKey& key,
          const std::string& label, v1::RunRequest request, int64_t steps,
          int repeats) {
  v1::RunRequest with = request;
  with.mutable_stream()->set_checkpoints(true);
  TimedRun(client, request);  // warm-up
  TimedRun(client, with);
  std::vector<double> off, on, resumed;
  int64_t bytes = 0;
  std::string middle;
  for (int r = 0; r < repeats; ++r) {
    off.push_back(TimedRun(client, request).seconds / steps);
    const Timed timed = TimedRun(client, with);
    on.push_back(timed.seconds / steps);
    bytes = timed.checkpoint_bytes / std::max<int64_t>(1, timed.iterations);
    middle = timed.middle_checkpoint;
  }
  v1::RunRequest resume;
  resume.set_resume_from(middle);
  resume.mutable_stream()->CopyFrom(request.stream());
  // What a resume request costs the gRPC thread that takes it: the MAC
  // check and the parse (Engine::StartRun).
  std::vector<double> opens;
  for (int r = 0; r < repeats; ++r) {
    const absl::Time start = absl::Now();
    if (!key.Open(middle).ok()) std::exit(1);
    opens.push_back(absl::ToDoubleSeconds(absl::Now() - start));
  }
  const int64_t rest = steps - (steps / 2 + 1);
  for (int r = 0; r < repeats; ++r) {
    resumed.push_back(TimedRun(client, resume).seconds /
                      std::max<int64_t>(1, rest));
  }
  const double off_ms = Median(off) * 1e3;
  const double on_ms = Median(on) * 1e3;
  std::printf(
      "%-18s %9lld B/iteration  step %8.4f ms off, %8.4f ms on (x%.2f)  "
      "open %.3f ms  resumed %lld steps: %8.4f ms/step\n",
      label.c_str(), static_cast<long long>(bytes), off_ms, on_ms,
      on_ms / off_ms, Median(opens) * 1e3, static_cast<long long>(rest),
      Median(resumed) * 1e3);
}

int Main() {
  absl::StatusOr<PipelineCatalog> catalog = LoadDefaultPipelines(c10::kCPU);
  if (!catalog.ok()) {
    std::cerr << catalog.status() << std::endl;
    return 1;
  }
  LoopServerOptions options;
  options.address = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<LoopServer>> server =
      LoopServer::Start(options, *std::move(catalog));
  if (!server.ok()) return 1;
  absl::StatusOr<std::unique_ptr<LoopClient>> connected =
      LoopClient::Connect(absl::StrCat("127.0.0.1:", (*server)->port()));
  if (!connected.ok()) return 1;
  LoopClient& client = **connected;
  const CheckpointKey& key = (*server)->engine().checkpoint_key();
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  const int repeats = absl::GetFlag(FLAGS_repeats);

  v1::RunRequest digits;
  digits.set_pipeline("digits-text");
  (*digits.mutable_inputs())["prompt"].set_string_value("seven");
  (*digits.mutable_inputs())["scheduler"].set_string_value("dpmpp-2m");
  (*digits.mutable_inputs())["num_inference_steps"].set_int64_value(steps);
  (*digits.mutable_inputs())["seed"].set_int64_value(1);
  digits.mutable_stream()->add_values("latents");
  Case(client, key, "digits-text", digits, steps, repeats);

  v1::RunRequest gmm;
  gmm.set_pipeline("gmm-ddim");
  (*gmm.mutable_inputs())["scheduler"].set_string_value("dpmpp-2m");
  (*gmm.mutable_inputs())["num_inference_steps"].set_int64_value(steps);
  (*gmm.mutable_inputs())["seed"].set_int64_value(1);
  gmm.mutable_stream()->add_values("latents");
  Case(client, key, "gmm [1,4,64,64]", gmm, steps, repeats);

  v1::RunRequest seed;
  seed.set_pipeline("seed-loop");
  (*seed.mutable_inputs())["num_steps"].set_int64_value(steps * 20);
  (*seed.mutable_inputs())["x"].set_int64_value(0);
  Case(client, key, "seed-loop (int)", seed, steps * 20, repeats);

  (*server)->Shutdown(absl::Seconds(5));
  return 0;
}

}  // namespace
}  // namespace loopserve

int main(int argc, char** argv) {
  loopserve::TuneMallocForStreaming();  // Note [malloc trimming]
  absl::ParseCommandLine(argc, argv);
  return loopserve::Main();
}
