"""Per-step time of an exported diffusers pipeline through loopserve
(streaming latents every step) against diffusers' own pipeline in this
process, side by side, on the same model and thread count.

    .venv/bin/python bench/export_bench.py --loopserve build/app/loopserve \
        [--threads 2] [--steps 6] [--runs 3] [--sd15-unet]

Models (random weights, built from config classes, nothing downloaded): the
tiny SD 1.x of tests/testing/tiny_pipelines.py at 32x32 pixels and, with
--sd15-unet, Stable Diffusion 1.5's UNet at full width (320, 640, 1280,
1280; 860M parameters) under a small VAE and text encoder, on 32x32
latents. Guidance 7.5 (one UNet call of batch 2 a step). A step's time is
the gap between consecutive steps' latents: for loopserve, the arrival of
streamed iterations at the client; for diffusers, callback_on_step_end. The
first step of each run is left out (warm-up); the median of the rest is
reported.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import diffusers
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "client", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "testing"))
import loopserve  # noqa: E402
import loopserve.export  # noqa: E402
import tiny_pipelines  # noqa: E402
from transformers import CLIPTextModel  # noqa: E402


def sd15_unet_pipeline():
    """SD 1.5's UNet config (diffusers' defaults are SD 1.x's but the
    cross-attention width: 768 here), a VAE of scale 8 kept small, a
    2-layer 768-wide text encoder."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(cross_attention_dim=768,
                                          sample_size=32)
    vae = diffusers.AutoencoderKL(
        block_out_channels=[32, 32, 64, 64], latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=32)
    config = tiny_pipelines._text_config(hidden=768, projection=768)
    config.num_hidden_layers = 2
    config.num_attention_heads = 12
    config.intermediate_size = 3072
    pipe = tiny_pipelines.sd()
    return diffusers.StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=CLIPTextModel(config),
        tokenizer=pipe.tokenizer, scheduler=pipe.scheduler,
        safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def median_gap(times):
    gaps = [b - a for a, b in zip(times[1:], times[2:])]
    return statistics.median(gaps) if gaps else float("nan")


def loopserve_steps(target, name, inputs, runs):
    remote = loopserve.RemotePipeline(target, name, values=("latents",),
                                      preview=False)
    gaps = []
    for run in range(runs):
        times = []
        for event in remote.stream(seed=run, **inputs):
            if isinstance(event, loopserve.Step):
                times.append(time.perf_counter())
        gaps.append(median_gap(times))
    remote.close()
    return statistics.median(gaps)


def diffusers_steps(pipe, inputs, runs):
    gaps = []
    for run in range(runs):
        times = []

        def mark(_, i, t, kwargs):
            times.append(time.perf_counter())
            return kwargs

        pipe(generator=torch.Generator().manual_seed(run), output_type="np",
             callback_on_step_end=mark, **inputs)
        gaps.append(median_gap(times))
    return statistics.median(gaps)


def serve(binary, config, threads, err):
    server = subprocess.Popen(
        [binary, "--host=127.0.0.1", "--port=0", "--metrics_port=0",
         "--http_port=0", "--health_port=0", f"--config={config}",
         f"--intra_op_threads={threads}"], stderr=err)
    for _ in range(600):
        err.flush()
        with open(err.name) as f:
            match = re.search(r"serving .* on 127\.0\.0\.1:(\d+)", f.read())
        if match:
            return server, f"127.0.0.1:{match.group(1)}"
        if server.poll() is not None:
            raise RuntimeError(open(err.name).read())
        time.sleep(0.1)
    raise RuntimeError("loopserve did not start")


def bench(label, pipe, size, args, work):
    folder = os.path.join(work, label)
    pipe.save_pretrained(folder)
    config = loopserve.export.export(folder, folder + "-export", label)
    local = diffusers.DiffusionPipeline.from_pretrained(folder)
    local.set_progress_bar_config(disable=True)
    inputs = dict(prompt="a lighthouse at dusk", height=size, width=size,
                  num_inference_steps=args.steps, guidance_scale=7.5)
    with open(os.path.join(work, label + ".err"), "w") as err:
        server, target = serve(args.loopserve, config, args.threads, err)
        try:
            loopserve_steps(target, label, inputs, 1)  # warm-up
            ours = loopserve_steps(target, label, inputs, args.runs)
        finally:
            server.terminate()
            server.wait()
    diffusers_steps(local, inputs, 1)  # warm-up
    theirs = diffusers_steps(local, inputs, args.runs)
    print(f"{label:<10} {size:>4}px  loopserve {ours * 1e3:9.1f} ms/step  "
          f"diffusers {theirs * 1e3:9.1f} ms/step  "
          f"loopserve/diffusers {ours / theirs:.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--loopserve", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sd15-unet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{args.threads} threads, {args.steps} steps, guidance 7.5, "
          f"median of {args.runs} runs")
    with tempfile.TemporaryDirectory() as work:
        bench("tiny-sd", tiny_pipelines.sd(), 32, args, work)
        if args.sd15_unet:
            bench("sd15-unet", sd15_unet_pipeline(), 256, args, work)


if __name__ == "__main__":
    main()
