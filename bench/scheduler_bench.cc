// What a sampler's own arithmetic costs per step, next to a model step: each
// built-in sampler of the default pipelines (and LCM) runs set_timesteps and
// `steps` × (scale_model_input + step) on [1,4,SIZE,SIZE] latents with a
// fixed model output, and the shipped digits UNet runs its own step, in one
// process, alternating. Prints the median per-step time of each and its
// fraction of the UNet's step. Memory is tuned as the server tunes it.
//
//   build/bench/scheduler_bench [--size=128] [--steps=50] [--repeats=7]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "app/default_pipelines.h"
#include "blocks/builtin_blocks.h"
#include "blocks/diffusion/denoisers.h"
#include "blocks/diffusion/schedulers.h"
#include "util/malloc_tuning.h"
#include "util/status_macros.h"

ABSL_FLAG(int64_t, size, 128, "Latent height and width");
ABSL_FLAG(int64_t, steps, 50, "num_inference_steps");
ABSL_FLAG(int, repeats, 7, "Runs of each; medians are reported");

namespace loopserve {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Sampler {
  std::string name;
  const Scheduler* scheduler;
  std::vector<double> us_per_step{};
};

absl::Status Main() {
  const int64_t size = absl::GetFlag(FLAGS_size);
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  TuneMallocForStreaming();  // as the server runs (Note [malloc trimming])
  c10::InferenceMode inference;
  ASSIGN_OR_RETURN(PipelineCatalog catalog, LoadDefaultPipelines(c10::kCPU));

  std::vector<Sampler> samplers;
  for (const char* pipeline : {"gmm-ddim", "gmm-flow"}) {
    const Components& components = catalog.Find(pipeline)->components;
    for (const std::string& name : components.Choices("scheduler")) {
      ASSIGN_OR_RETURN(const Scheduler* scheduler,
                       components.Get<Scheduler>("scheduler", name));
      samplers.push_back({name, scheduler});
    }
  }
  // LCM is in no default pipeline (it needs a distilled model).
  ComponentRegistry registry;
  RETURN_IF_ERROR(RegisterBuiltinComponents(registry));
  Components extra;
  RETURN_IF_ERROR(registry.Create("lcm_scheduler", "lcm", {}, {}, extra));
  ASSIGN_OR_RETURN(const Scheduler* lcm, extra.Get<Scheduler>("lcm"));
  samplers.push_back({"lcm", lcm});

  const Pipeline* digits = catalog.Find("digits-ddim");
  if (digits == nullptr) return absl::NotFoundError("digits-ddim");
  ASSIGN_OR_RETURN(const Denoiser* unet,
                   digits->components.Get<Denoiser>("denoiser"));

  at::Generator generator = at::detail::createCPUGenerator(0);
  const at::Tensor latents = at::randn({1, 4, size, size}, generator);
  const at::Tensor model_output = at::randn({1, 4, size, size}, generator);
  const at::Tensor digit = at::randn({1, 1, 8, 8}, generator);
  // The null conditioning (no digit) for each conditioning value.
  std::vector<at::Tensor> conditioning;
  for (const ModelArgument& argument : unet->conditioning()) {
    std::vector<int64_t> shape = argument.shape;
    for (int64_t& size : shape) size = std::max<int64_t>(size, 1);
    conditioning.push_back(at::zeros(shape));
  }
  std::vector<double> unet_us;
  for (int r = 0; r < repeats; ++r) {
    for (Sampler& sampler : samplers) {
      const absl::Time start = absl::Now();
      ScheduleRequest request{.num_inference_steps = steps,
                              .image_seq_len = (size / 2) * (size / 2)};
      ASSIGN_OR_RETURN(Schedule schedule,
                       sampler.scheduler->SetTimesteps(request));
      at::Tensor x = latents * schedule.init_noise_sigma;
      for (int64_t i = 0; i < schedule.size(); ++i) {
        const at::Tensor input =
            sampler.scheduler->ScaleModelInput(schedule, x, i);
        ASSIGN_OR_RETURN(
            StepResult step,
            sampler.scheduler->Step(schedule, model_output + 0 * input, i, x,
                                    {.eta = 0, .generator = &generator}));
        x = step.prev_sample;
      }
      sampler.us_per_step.push_back(
          absl::ToDoubleMicroseconds(absl::Now() - start) /
          static_cast<double>(schedule.size()));
    }
    const absl::Time start = absl::Now();
    for (int64_t i = 0; i < steps; ++i) {
      const at::Tensor t = at::scalar_tensor(999 - 20 * (i % 50), at::kLong);
      ASSIGN_OR_RETURN(at::Tensor eps,
                       unet->Predict(digit, t.expand({1}), conditioning));
      (void)eps;
    }
    unet_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - start) /
                      static_cast<double>(steps));
  }

  const double unet_step = Median(unet_us);
  std::printf("digits UNet step ([1,1,8,8]): %.1f us\n", unet_step);
  std::printf("%-22s %14s %12s\n", "sampler", "us per step", "of a UNet step");
  for (const Sampler& sampler : samplers) {
    const double us = Median(sampler.us_per_step);
    std::printf("%-22s %14.1f %11.1f%%\n", sampler.name.c_str(), us,
                100 * us / unet_step);
  }
  std::printf(
      "(sampler arithmetic on [1,4,%ld,%ld] latents, %ld steps, "
      "median of %d)\n",
      static_cast<long>(size), static_cast<long>(size),
      static_cast<long>(steps), repeats);
  return absl::OkStatus();
}

}  // namespace
}  // namespace loopserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status status = loopserve::Main(); !status.ok()) {
    std::fprintf(stderr, "scheduler_bench: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
