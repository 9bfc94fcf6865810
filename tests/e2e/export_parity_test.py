"""Pipelines exported by loopserve-export and served by the real binary,
against diffusers' own pipelines loading the same folders: every streamed
step's latents within 1e-4 of diffusers' (captured with
callback_on_step_end), relative to the trajectory's scale, and the final
image within 1 of diffusers' output_type="np" image × 255, rounded.

    MODELS=DIR SD15=host:port SD2=host:port SDXL=host:port \
      REFINER=host:port SOURCE_DIR=. python export_parity_test.py

MODELS holds tiny_pipelines.py's folders; each address (also DDPM, DDIM)
serves the export of one of them (the SD 1.x server with --max_batch_size
4).
"""

import os
import sys
import threading
import types
import unittest

import diffusers
import grpc
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.environ["SOURCE_DIR"], "client", "python"))
import loopserve  # noqa: E402

MODELS = os.environ["MODELS"]
STEP_TOLERANCE = 1e-4

_pipes = {}


def diffusers_pipe(folder, cls=diffusers.DiffusionPipeline):
    key = (folder, cls)
    if key not in _pipes:
        pipe = cls.from_pretrained(os.path.join(MODELS, folder))
        pipe.set_progress_bar_config(disable=True)
        _pipes[key] = pipe
    return _pipes[key]


def run_diffusers(pipe, seed, scheduler=None, **inputs):
    """(per-step latents, image ×255 rounded, final latents) of diffusers'
    pipeline."""
    if scheduler is not None:
        pipe.scheduler = scheduler
    steps = []

    def capture(_, i, t, kwargs):
        steps.append(kwargs["latents"].clone().numpy())
        return kwargs

    output_type = inputs.pop("output_type", "np")
    out = pipe(generator=torch.Generator().manual_seed(seed),
               output_type=output_type, callback_on_step_end=capture,
               **inputs).images
    if output_type == "np":
        out = np.round(out * 255).astype(np.int64)
    return steps, out


def run_loopserve(target, name, **inputs):
    """(per-step latents, result outputs) of a run through the service."""
    remote = loopserve.RemotePipeline(target, name, values=("latents",),
                                      preview=False)
    steps, outputs = [], None
    for event in remote.stream(**inputs):
        if isinstance(event, loopserve.Step):
            steps.append(event.values["latents"])
        else:
            outputs = event.outputs
    remote.close()
    return steps, outputs


class ExportParityTest(unittest.TestCase):

    def assert_same_run(self, ours, theirs, image=True):
        our_steps, outputs = ours
        their_steps, their_image = theirs
        self.assertEqual(len(our_steps), len(their_steps))
        scale = max(np.abs(s).max() for s in their_steps)
        for i, (a, b) in enumerate(zip(our_steps, their_steps)):
            self.assertEqual(a.shape, b.shape, f"step {i}")
            error = np.abs(a - b).max() / scale
            self.assertLessEqual(error, STEP_TOLERANCE, f"step {i}")
        if image:
            ours_image = outputs["image"].astype(np.int64)
            self.assertEqual(ours_image.shape, their_image.shape)
            self.assertLessEqual(np.abs(ours_image - their_image).max(), 1)

    # ---- SD 1.x ----

    def test_sd15_samplers(self):
        pipe = diffusers_pipe("sd15")
        config = pipe.scheduler.config
        for name, scheduler in (
                ("ddim", diffusers.DDIMScheduler.from_config(config)),
                ("euler-a", diffusers.EulerAncestralDiscreteScheduler
                 .from_config(config)),
                ("dpmpp-2m-karras", diffusers.DPMSolverMultistepScheduler
                 .from_config(config, use_karras_sigmas=True))):
            with self.subTest(scheduler=name):
                inputs = dict(prompt="a lighthouse at dusk, oil painting",
                              num_inference_steps=6, guidance_scale=7.5)
                self.assert_same_run(
                    run_loopserve(os.environ["SD15"], "sd15", seed=11,
                                  scheduler=name, **inputs),
                    run_diffusers(pipe, 11, scheduler, **inputs))

    def test_sd15_sizes_and_batches_under_guidance(self):
        pipe = diffusers_pipe("sd15")
        pipe.scheduler = diffusers.DDIMScheduler.from_config(
            pipe.scheduler.config)
        for size in (32, 48):
            for images in (1, 2, 3, 4):
                with self.subTest(size=size, images=images):
                    inputs = dict(prompt="a cat", negative_prompt="blurry",
                                  height=size, width=size,
                                  num_images_per_prompt=images,
                                  num_inference_steps=3, guidance_scale=6.0)
                    self.assert_same_run(
                        run_loopserve(os.environ["SD15"], "sd15", seed=5,
                                      **inputs),
                        run_diffusers(pipe, 5, **inputs))

    def test_sd15_concurrent_runs_share_batches(self):
        """Runs in flight together (step batching, --max_batch_size 4) each
        give diffusers' result."""
        pipe = diffusers_pipe("sd15")
        pipe.scheduler = diffusers.DDIMScheduler.from_config(
            pipe.scheduler.config)
        prompts = ["a red apple", "a blue car", "a green tree"]
        results = {}

        def run(i):
            results[i] = run_loopserve(
                os.environ["SD15"], "sd15", seed=i, prompt=prompts[i],
                num_inference_steps=8, guidance_scale=7.5)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(3):
            self.assert_same_run(
                results[i],
                run_diffusers(pipe, i, prompt=prompts[i],
                              num_inference_steps=8, guidance_scale=7.5))

    def test_sd15_prompt_list_with_images_per_prompt(self):
        pipe = diffusers_pipe("sd15")
        pipe.scheduler = diffusers.DDIMScheduler.from_config(
            pipe.scheduler.config)
        inputs = dict(prompt=["a dog", "a bird on a wire", "an old map"],
                      negative_prompt=["ugly", "blurry", "dark"],
                      num_images_per_prompt=2, num_inference_steps=4,
                      guidance_scale=7.5)
        ours = run_loopserve(os.environ["SD15"], "sd15", seed=9, **inputs)
        self.assertEqual(ours[1]["image"].shape[0], 6)
        self.assert_same_run(ours, run_diffusers(pipe, 9, **inputs))

    def test_sd15_img2img(self):
        pipe = diffusers_pipe("sd15",
                              diffusers.StableDiffusionImg2ImgPipeline)
        pipe.scheduler = diffusers.DDIMScheduler.from_config(
            pipe.scheduler.config)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        inputs = dict(prompt="the same, at night", strength=0.6,
                      num_inference_steps=10, guidance_scale=7.5)
        ours = run_loopserve(os.environ["SD15"], "sd15-img2img", seed=21,
                             image=image[None], **inputs)
        self.assertEqual(len(ours[0]), 6)  # int(10 · 0.6) steps
        self.assert_same_run(
            ours, run_diffusers(pipe, 21, image=Image.fromarray(image),
                                **inputs))

    def test_sd15_clip_skip(self):
        """diffusers 0.42's SD pipeline reads clip_skip's final layer norm
        from text_encoder.text_model, which transformers 5's CLIPTextModel
        no longer has: the same norm is put where it looks (outside torch's
        module registry)."""
        pipe = diffusers_pipe("sd15")
        pipe.scheduler = diffusers.DDIMScheduler.from_config(
            pipe.scheduler.config)
        encoder = pipe.text_encoder
        if not hasattr(encoder, "text_model"):
            object.__setattr__(encoder, "text_model", types.SimpleNamespace(
                final_layer_norm=encoder.final_layer_norm))
        inputs = dict(prompt="a lighthouse at dusk", negative_prompt="fog",
                      clip_skip=2, num_inference_steps=4, guidance_scale=7.5)
        self.assert_same_run(
            run_loopserve(os.environ["SD15"], "sd15", seed=2, **inputs),
            run_diffusers(pipe, 2, **inputs))

    def test_sdxl_refuses_a_clip_skip_past_its_layers(self):
        # The tiny text encoders have 5 layers; SDXL reads hidden state
        # -(clip_skip + 2).
        with self.assertRaises(grpc.RpcError) as error:
            run_loopserve(os.environ["SDXL"], "sdxl", clip_skip=5,
                          num_inference_steps=2)
        self.assertEqual(error.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("input 'clip_skip': must be in [0, 4], got 5",
                      error.exception.details())

    def test_sd15_refuses_a_size_the_unet_cannot_take(self):
        with self.assertRaises(grpc.RpcError) as error:
            run_loopserve(os.environ["SD15"], "sd15", height=30, width=32,
                          num_inference_steps=2)
        self.assertEqual(error.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("'height' and 'width' must be multiples of 4",
                      error.exception.details())

    # ---- SD 2.x ----

    def test_sd2_v_prediction(self):
        pipe = diffusers_pipe("sd2-v")
        self.assertEqual(pipe.scheduler.config.prediction_type,
                         "v_prediction")
        inputs = dict(prompt="a mountain lake", num_inference_steps=6,
                      guidance_scale=7.5)
        self.assert_same_run(
            run_loopserve(os.environ["SD2"], "sd2-v", seed=3, **inputs),
            run_diffusers(pipe, 3, **inputs))

    # ---- SDXL ----

    def test_sdxl_micro_conditioning(self):
        pipe = diffusers_pipe("sdxl")
        for inputs in (
                dict(prompt="a castle", num_inference_steps=5,
                     guidance_scale=5.0),
                dict(prompt="a castle", negative_prompt="fog",
                     num_inference_steps=5, guidance_scale=5.0, height=48,
                     width=32, original_size=[1024, 768],
                     crops_coords_top_left=[16, 8], target_size=[512, 512],
                     negative_original_size=[256, 256],
                     negative_target_size=[640, 640], clip_skip=1)):
            with self.subTest(inputs=inputs):
                self.assert_same_run(
                    run_loopserve(os.environ["SDXL"], "sdxl", seed=4,
                                  **inputs),
                    run_diffusers(pipe, 4, **{
                        k: tuple(v) if isinstance(v, list) else v
                        for k, v in inputs.items()}))

    def test_sdxl_base_then_refiner(self):
        base = diffusers_pipe("sdxl")
        refiner = diffusers_pipe("sdxl-refiner")
        inputs = dict(prompt="a red fox in snow", num_inference_steps=10,
                      guidance_scale=5.0)
        ours = run_loopserve(os.environ["SDXL"], "sdxl", seed=8,
                             denoising_end=0.8, **inputs)
        theirs = run_diffusers(base, 8, denoising_end=0.8,
                               output_type="latent", **inputs)
        self.assertEqual(len(ours[0]), 8)
        self.assert_same_run(ours, theirs, image=False)
        latents = ours[1]["latents"]
        self.assert_same_run(
            run_loopserve(os.environ["REFINER"], "sdxl-refiner", seed=8,
                          image_latents=latents, denoising_start=0.8,
                          **inputs),
            run_diffusers(refiner, 8, image=theirs[1], denoising_start=0.8,
                          **inputs))

    # ---- unconditional: DDPMPipeline, DDIMPipeline ----

    def test_unconditional_pipelines(self):
        """Their __call__ takes no callback: each step's latents are what
        the scheduler's step returns. The traced UNet differs from the eager
        one by ~1e-6, which this random UNet2DModel grows 1.6× a DDIM step
        (a trained one does not): 8 DDIM steps stay within the tolerance,
        12 do not."""
        for folder, address, steps_count in (("ddpm", "DDPM", 12),
                                             ("ddim", "DDIM", 8)):
            with self.subTest(pipeline=folder):
                pipe = diffusers_pipe(folder)
                steps = []
                step = type(pipe.scheduler).step

                def capture(scheduler, *args, **kwargs):
                    out = step(scheduler, *args, **kwargs)
                    steps.append(out[0].clone().numpy())
                    return out

                pipe.scheduler.step = capture.__get__(pipe.scheduler)
                image = pipe(generator=torch.Generator().manual_seed(6),
                             num_inference_steps=steps_count,
                             output_type="np").images
                del pipe.scheduler.step
                self.assert_same_run(
                    run_loopserve(os.environ[address], folder, seed=6,
                                  num_inference_steps=steps_count),
                    (steps, np.round(image * 255).astype(np.int64)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
