// The blocks of a denoising pipeline, after diffusers' modular Stable
// Diffusion blocks:
//
//   Sequential {
//     set_timesteps:   SetTimesteps     num_inference_steps, scheduler ->
//     schedule prepare_latents: PrepareLatents   latents | seed, height, width,
//     batch_size denoise:         DenoiseLoop {    iterates the timesteps (i,
//     t)
//       before_denoiser: ScaleModelInput
//       denoiser:        PredictNoise   (classifier-free guidance)
//       after_denoiser:  SchedulerStep  -> latents, denoised
//     }
//     decode:  Decode                   latents -> image   (with a decoder)
//     preview: Preview                  latents -> preview
//   }
//
// Components, by role: "scheduler" (Scheduler), "denoiser" (Denoiser),
// "decoder" and "preview" (ImageDecoder). Per-run state (the schedule with
// its chosen scheduler and a multistep solver's memory, the random
// generator) lives in the pipeline state as internal intermediates.
//
// Thread-safety: as Block.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "blocks/core/iteration_preview.h"
#include "blocks/core/loop.h"
#include "blocks/core/registry.h"
#include "blocks/diffusion/denoisers.h"

namespace loopserve {

class RunSchedule;  // schedulers.h

// The component roles the blocks use.
inline constexpr absl::string_view kSchedulerRole = "scheduler";
inline constexpr absl::string_view kDenoiserRole = "denoiser";
inline constexpr absl::string_view kDecoderRole = "decoder";
// kPreviewRole ("preview", blocks/core/iteration_preview.h): the Preview
// block's ImageDecoder, which a latent_preview also serves as the
// pipeline's IterationPreview.

// scheduler.set_timesteps(num_inference_steps): writes the run's schedule.
// The run picks its scheduler with the input `scheduler`, one of the
// components bound to the "scheduler" role (the first when absent); the
// loop's blocks use the one it picked.
// Which of the steps a run takes follows diffusers' pipelines: with
// `image_latents`, image-to-image's `strength` (the last
// min(int(n · strength), n) steps); SDXL's `denoising_start` (a refiner
// continuing from image_latents) and `denoising_end` (a base stopping
// early). The loop iterates those; the schedule's begin_index says where
// they start.
// Params: num_inference_steps (the input's default, 50); strength (the
// input's default when an image is given, 0.8, as diffusers'); flow
// (false): the flow-matching inputs `mu` and `sigmas`, and `mu` computed
// from the latents when absent; a flow pipeline prepares its latents first,
// as diffusers' Flux pipeline does (and so cannot start from an image).
class SetTimesteps final : public Block {
 public:
  static constexpr absl::string_view kTypeName = "SetTimesteps";
  struct Options {
    int64_t default_steps = 50;
    double strength = 0.8;
    bool flow = false;
  };
  explicit SetTimesteps(Options options) : options_(options) {}
  SetTimesteps() : SetTimesteps(Options{}) {}
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> inputs() const override;
  std::vector<InputParam> intermediate_inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  std::vector<ComponentSpec> expected_components() const override;
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override;

 private:
  Options options_;
};

// The initial latents: the `latents` input when given (unit noise, scaled by
// init_noise_sigma, as diffusers treats it), else randn from a CPU generator
// seeded with `seed`, moved to the device, × init_noise_sigma (1 when no
// schedule is set yet: flow matching). The same generator draws every
// stochastic step's noise after it, as diffusers' generator= does.
// Image-to-image: with `image_latents`, the image noised to the run's first
// step by the scheduler's add_noise with noise from that generator, or the
// image latents as they are with `denoising_start`.
// Params: channels (4), height and width (the inputs' defaults, 64),
// vae_scale_factor (1: latents are height / factor × width / factor).
class PrepareLatents final : public Block {
 public:
  static constexpr absl::string_view kTypeName = "PrepareLatents";
  struct Options {
    int64_t channels = 4;
    int64_t height = 64;
    int64_t width = 64;
    int64_t vae_scale_factor = 1;
    // What height and width must divide by (at least vae_scale_factor): a
    // traced UNet's, whose every down-sampling halves the latents.
    int64_t size_multiple = 1;
  };
  explicit PrepareLatents(Options options) : options_(options) {}
  PrepareLatents() : PrepareLatents(Options{}) {}
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> inputs() const override;
  std::vector<InputParam> intermediate_inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override;

 private:
  absl::StatusOr<at::Tensor> StartFromImage(const BlockState& state,
                                            const at::Tensor& image_latents,
                                            at::Generator& generator,
                                            c10::Device device) const;

  Options options_;
};

// The denoising loop wrapper: for each timestep t (index i of n), runs its
// loop blocks with LoopIndex{i, n, t}.
class DenoiseLoop final : public LoopBlocks {
 public:
  static constexpr absl::string_view kTypeName = "DenoiseLoop";
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> loop_intermediate_inputs() const override;
  // before_denoiser (ScaleModelInput), denoiser (PredictNoise),
  // after_denoiser (SchedulerStep): a configuration lists only what differs
  // (Note [default sub-blocks] in blocks/core/composite.h).
  std::vector<std::pair<std::string, std::string>> default_sub_blocks()
      const override;
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const override;
};

// latent_model_input = scheduler.scale_model_input(latents, t).
class ScaleModelInput final : public LoopStepBlock {
 public:
  static constexpr absl::string_view kTypeName = "ScaleModelInput";
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> intermediate_inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  std::vector<ComponentSpec> expected_components() const override;
  absl::Status RunStep(const Components& components, BlockState& state,
                       const LoopIndex& index) const override;
};

// noise_pred = denoiser(latent_model_input, t, conditioning...): the
// denoiser's conditioning values (Denoiser::conditioning) are inputs of this
// block, so of the pipeline, once it is bound to its denoiser. With
// guidance_scale > 1 and a conditioned denoiser: classifier-free guidance,
// one forward of [uncond, cond] and noise_pred = uncond + s · (cond −
// uncond); the unconditional half of each value c is negative_c (a client's,
// or EncodePrompt's from the negative prompt), else zeros; shared values
// are passed once. Values of batch 1 serve the whole batch. Shapes are
// checked before the model runs. The values do not change during a run:
// they are fitted, moved to the device and paired on its first step, and
// kept in the loop's state for the others.
// Params: guidance_scale (the input's default, 1).
class PredictNoise final : public LoopStepBlock {
 public:
  static constexpr absl::string_view kTypeName = "PredictNoise";
  explicit PredictNoise(double default_guidance_scale = 1.0)
      : default_guidance_scale_(default_guidance_scale) {}
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> inputs() const override;
  std::vector<InputParam> intermediate_inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  std::vector<ComponentSpec> expected_components() const override;
  absl::Status Bind(const Components& components) override;
  absl::Status RunStep(const Components& components, BlockState& state,
                       const LoopIndex& index) const override;

 private:
  // The call's conditioning values, as RunStep passes them to the denoiser.
  absl::StatusOr<std::vector<at::Tensor>> PrepareConditioning(
      const BlockState& state, int64_t batch, bool guided,
      c10::Device device) const;

  double default_guidance_scale_;
  // The bound denoiser's (Bind).
  std::vector<ModelArgument> conditioning_;
  // Where the prepared conditioning is kept in the loop's state (Bind).
  std::string prepared_key_;
};

// latents, denoised = scheduler.step(noise_pred, t, latents, eta, generator),
// with the scheduler SetTimesteps picked.
class SchedulerStep final : public LoopStepBlock {
 public:
  static constexpr absl::string_view kTypeName = "SchedulerStep";
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
  std::vector<InputParam> inputs() const override;
  std::vector<InputParam> intermediate_inputs() const override;
  std::vector<OutputParam> intermediate_outputs() const override;
  std::vector<ComponentSpec> expected_components() const override;
  absl::Status RunStep(const Components& components, BlockState& state,
                       const LoopIndex& index) const override;
};

// Runs the ImageDecoder of a role on the final latents into a UINT8
// [B,H,W,3] output: what Decode and Preview share.
class LatentsToImage : public Block {
 public:
  std::vector<InputParam> intermediate_inputs() const final;
  std::vector<OutputParam> intermediate_outputs() const final;
  std::vector<ComponentSpec> expected_components() const final;
  absl::Status Run(const Components& components, PipelineState& state,
                   RunContext& context) const final;

 protected:
  struct Spec {
    absl::string_view role;
    absl::string_view output;
    absl::string_view output_description;
    absl::string_view component_types;
  };
  explicit LatentsToImage(Spec spec) : spec_(spec) {}

 private:
  Spec spec_;
};

// image = decoder(latents).
class Decode final : public LatentsToImage {
 public:
  static constexpr absl::string_view kTypeName = "Decode";
  Decode();
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
};

// preview = the latent preview of the final latents.
class Preview final : public LatentsToImage {
 public:
  static constexpr absl::string_view kTypeName = "Preview";
  Preview();
  absl::string_view type_name() const override { return kTypeName; }
  std::string description() const override;
};

// Shared by the blocks above: the scheduler role's spec, and the run's
// schedule as SetTimesteps left it in a block state (FAILED_PRECONDITION
// when it did not run).
ComponentSpec SchedulerSpec();
absl::StatusOr<RunSchedule*> RunScheduleFrom(const BlockState& state);

// Registers every block above (diffusion_blocks.cc: the blocks' params are
// read there). The blocks are defined by where they run:
// schedule_blocks.cc (before the loop), loop_blocks.cc (the loop and its
// interior), decode_blocks.cc (after it).
absl::Status RegisterDiffusionBlocks(BlockRegistry& registry);

}  // namespace loopserve
