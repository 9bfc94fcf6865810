#!/usr/bin/env python3
"""The cases scheduler_parity_test.cc checks loopserve's C++ schedulers
against, computed by diffusers itself (the version scripts/requirements.txt
pins): for every scheduler and option listed in CASES, at 1, 2, 10, 25 and
50 steps, the schedule (timesteps, sigmas, init_noise_sigma) and the whole
trajectory under a fixed analytic model, run as a diffusers pipeline runs
its denoising loop: the initial noise drawn from a torch.Generator seeded
1234, scaled by init_noise_sigma, then scale_model_input, the model, and
step(..., generator=) for every timestep. Image-to-image cases take their
timesteps from StableDiffusionImg2ImgPipeline.get_timesteps and start from
scheduler.add_noise, as that pipeline does; base + refiner cases split a run
as StableDiffusionXLPipeline (denoising_end) and
StableDiffusionXLImg2ImgPipeline.get_timesteps (denoising_start) do.

    scheduler_reference.py OUT_FILE
"""
import inspect
import sys
import types

import diffusers
import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

STEP_COUNTS = (1, 2, 10, 25, 50)

KINDS = {
    "ddim_scheduler": diffusers.DDIMScheduler,
    "ddpm_scheduler": diffusers.DDPMScheduler,
    "euler_scheduler": diffusers.EulerDiscreteScheduler,
    "euler_ancestral_scheduler": diffusers.EulerAncestralDiscreteScheduler,
    "dpm_solver_multistep_scheduler": diffusers.DPMSolverMultistepScheduler,
    "unipc_multistep_scheduler": diffusers.UniPCMultistepScheduler,
    "lcm_scheduler": diffusers.LCMScheduler,
    "flow_match_euler_scheduler": diffusers.FlowMatchEulerDiscreteScheduler,
}

# (type, config, request, eta): every option the issue lists, each at every
# step count. request: mu, sigmas ("flux": linspace(1, 1/n, n)) or
# image_seq_len, as a run gives set_timesteps.
NO_CLIP = dict(clip_sample=False)
CASES = [
    ("ddim_scheduler", dict(NO_CLIP, timestep_spacing="leading"), {}, 0.0),
    ("ddim_scheduler", dict(NO_CLIP, timestep_spacing="trailing"), {}, 0.0),
    ("ddim_scheduler", dict(NO_CLIP, timestep_spacing="linspace"), {}, 0.0),
    ("ddim_scheduler", dict(NO_CLIP, prediction_type="v_prediction"), {}, 0.0),
    ("ddim_scheduler", dict(NO_CLIP, prediction_type="sample"), {}, 0.0),
    ("ddim_scheduler", dict(NO_CLIP), {}, 0.5),
    ("ddim_scheduler", dict(beta_schedule="scaled_linear", beta_start=0.00085,
                            beta_end=0.012, steps_offset=1,
                            set_alpha_to_one=False), {}, 0.0),
    ("ddpm_scheduler", dict(), {}, 0.0),
    ("ddpm_scheduler", dict(NO_CLIP, timestep_spacing="trailing",
                            prediction_type="v_prediction"), {}, 0.0),
    ("ddpm_scheduler", dict(NO_CLIP, variance_type="fixed_large",
                            timestep_spacing="linspace"), {}, 0.0),
    ("ddpm_scheduler", dict(beta_schedule="scaled_linear", beta_start=0.00085,
                            beta_end=0.012, steps_offset=1,
                            prediction_type="sample"), {}, 0.0),
    ("euler_scheduler", dict(timestep_spacing="leading"), {}, 0.0),
    ("euler_scheduler", dict(timestep_spacing="trailing"), {}, 0.0),
    ("euler_scheduler", dict(timestep_spacing="linspace"), {}, 0.0),
    ("euler_scheduler", dict(prediction_type="v_prediction"), {}, 0.0),
    ("euler_scheduler", dict(prediction_type="sample"), {}, 0.0),
    ("euler_scheduler", dict(use_karras_sigmas=True), {}, 0.0),
    ("euler_scheduler", dict(use_karras_sigmas=True, beta_start=0.00085,
                             beta_end=0.012, beta_schedule="scaled_linear",
                             timestep_spacing="leading", steps_offset=1),
     {}, 0.0),
    ("euler_ancestral_scheduler", dict(timestep_spacing="leading"), {}, 0.0),
    ("euler_ancestral_scheduler", dict(timestep_spacing="trailing"), {}, 0.0),
    ("euler_ancestral_scheduler", dict(timestep_spacing="linspace"), {}, 0.0),
    ("euler_ancestral_scheduler", dict(prediction_type="v_prediction"), {},
     0.0),
    ("dpm_solver_multistep_scheduler", dict(solver_order=1), {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(solver_order=2), {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(solver_order=3), {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(use_karras_sigmas=True), {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(solver_order=3,
                                            lower_order_final=False), {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(euler_at_final=True,
                                            final_sigmas_type="sigma_min"),
     {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(final_sigmas_type="sigma_min",
                                            use_karras_sigmas=True), {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(solver_type="heun"), {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(prediction_type="v_prediction",
                                            timestep_spacing="trailing"),
     {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(prediction_type="sample",
                                            timestep_spacing="leading",
                                            steps_offset=1), {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(algorithm_type="sde-dpmsolver++",
                                            solver_order=1), {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(algorithm_type="sde-dpmsolver++"),
     {}, 0.0),
    ("dpm_solver_multistep_scheduler", dict(algorithm_type="sde-dpmsolver++",
                                            solver_type="heun",
                                            use_karras_sigmas=True), {}, 0.0),
    # bh1, predict_x0=False and a higher-order last step
    # (lower_order_final=False) reach σ = 0 as NaN in diffusers (h is
    # infinite there); loopserve refuses them with final_sigmas_type zero,
    # so they are checked with sigma_min.
    ("unipc_multistep_scheduler", dict(solver_type="bh1", solver_order=1,
                                       final_sigmas_type="sigma_min"), {},
     0.0),
    ("unipc_multistep_scheduler", dict(solver_type="bh1", solver_order=2,
                                       final_sigmas_type="sigma_min"), {},
     0.0),
    ("unipc_multistep_scheduler", dict(solver_type="bh1", solver_order=3,
                                       final_sigmas_type="sigma_min"), {},
     0.0),
    ("unipc_multistep_scheduler", dict(solver_type="bh2", solver_order=1), {},
     0.0),
    ("unipc_multistep_scheduler", dict(solver_type="bh2", solver_order=2), {},
     0.0),
    ("unipc_multistep_scheduler", dict(solver_type="bh2", solver_order=3), {},
     0.0),
    ("unipc_multistep_scheduler", dict(use_karras_sigmas=True), {}, 0.0),
    ("unipc_multistep_scheduler", dict(use_karras_sigmas=True, solver_order=3,
                                       final_sigmas_type="sigma_min"), {},
     0.0),
    ("unipc_multistep_scheduler", dict(predict_x0=False, solver_order=3,
                                       final_sigmas_type="sigma_min"), {},
     0.0),
    ("unipc_multistep_scheduler", dict(prediction_type="v_prediction",
                                       timestep_spacing="trailing",
                                       lower_order_final=False,
                                       final_sigmas_type="sigma_min"), {},
     0.0),
    ("unipc_multistep_scheduler", dict(prediction_type="sample",
                                       timestep_spacing="leading",
                                       disable_corrector=[0]), {}, 0.0),
    ("lcm_scheduler", dict(), {}, 0.0),
    ("lcm_scheduler", dict(prediction_type="v_prediction", clip_sample=True,
                           set_alpha_to_one=False), {}, 0.0),
    ("lcm_scheduler", dict(beta_schedule="linear", beta_start=0.0001,
                           beta_end=0.02, prediction_type="sample"), {}, 0.0),
    ("flow_match_euler_scheduler", dict(), {}, 0.0),
    ("flow_match_euler_scheduler", dict(shift=3.0), {}, 0.0),
    ("flow_match_euler_scheduler", dict(use_dynamic_shifting=True,
                                        base_shift=0.5, max_shift=1.15),
     dict(mu=0.8), 0.0),
    ("flow_match_euler_scheduler", dict(use_dynamic_shifting=True),
     dict(image_seq_len=16), 0.0),
    ("flow_match_euler_scheduler", dict(use_dynamic_shifting=True),
     dict(sigmas="flux", image_seq_len=1024), 0.0),
    ("flow_match_euler_scheduler", dict(shift=3.0), dict(sigmas="flux"), 0.0),
]


# Image-to-image, as diffusers' StableDiffusionImg2ImgPipeline runs it: the
# last min(int(n · strength), n) steps (get_timesteps, set_begin_index),
# starting from scheduler.add_noise(image, noise, first timestep) with the
# noise drawn from the run's generator. (type, config, strength), at
# IMG2IMG_STEPS.
IMG2IMG_STEPS = (10, 25)
IMG2IMG_CASES = [
    ("ddim_scheduler", dict(clip_sample=False), 0.6),
    ("euler_scheduler", dict(), 0.75),
    ("euler_ancestral_scheduler", dict(), 0.3),
    ("dpm_solver_multistep_scheduler", dict(), 0.6),
    ("dpm_solver_multistep_scheduler", dict(use_karras_sigmas=True), 0.5),
    ("dpm_solver_multistep_scheduler", dict(solver_order=3), 0.8),
    ("unipc_multistep_scheduler", dict(), 0.6),
    ("lcm_scheduler", dict(), 1.0),
]


# SDXL's base + refiner: the base runs the steps at or above its
# denoising_end cutoff and hands over its latents; the refiner continues
# from them (denoising_start, no noise added) on its own scheduler.
# (type, config, fraction), at SPLIT_STEPS, deterministic samplers.
SPLIT_STEPS = (10, 25)
SPLIT_CASES = [
    ("ddim_scheduler", dict(clip_sample=False), 0.8),
    ("euler_scheduler", dict(), 0.7),
    ("dpm_solver_multistep_scheduler", dict(), 0.8),
    ("dpm_solver_multistep_scheduler", dict(use_karras_sigmas=True), 0.6),
    ("unipc_multistep_scheduler", dict(), 0.7),
]


def model(x, t):
    """The fixed analytic 'model' both sides use."""
    return torch.sin(x) * 0.3 + t.to(torch.float32) / 1000 * 0.1


def accepts(method, name):
    return name in inspect.signature(method).parameters


def step(scheduler, eps, t, x, eta, generator):
    """scheduler.step as a pipeline calls it (prepare_extra_step_kwargs:
    eta and generator where the scheduler takes them), and the denoised
    sample (x0) the step predicted."""
    kwargs = {}
    if accepts(scheduler.step, "eta"):
        kwargs["eta"] = eta
    if accepts(scheduler.step, "generator"):
        kwargs["generator"] = generator
    out = scheduler.step(eps, t, x, return_dict=True, **kwargs)
    for field in ("pred_original_sample", "denoised"):
        if getattr(out, field, None) is not None:
            return out.prev_sample, getattr(out, field)
    i = scheduler.step_index - 1  # the step just taken
    if isinstance(scheduler, diffusers.FlowMatchEulerDiscreteScheduler):
        return out.prev_sample, x.to(torch.float32) - scheduler.sigmas[i] * eps
    # Multistep solvers keep the step's converted model output: x0, or for
    # UniPC's predict_x0=False the noise, from which x0 follows.
    converted = scheduler.model_outputs[-1]
    if getattr(scheduler.config, "predict_x0", True):
        return out.prev_sample, converted
    alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[i])
    return out.prev_sample, (x - sigma_t * converted) / alpha_t


def fmt(values):
    return " ".join(repr(float(v)) for v in values)


def config_line(kind, cfg):
    parts = [f"type={kind}"]
    for k, v in cfg.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, list):
            v = "[" + ",".join(str(x) for x in v) + "]"
        parts.append(f"{k}={v}")
    return "config " + " ".join(parts)


def sigmas_of(s):
    """The scheduler's sigmas; DDIM and LCM keep none, and loopserve's
    schedules give theirs as the noise level of alphas_cumprod at each
    timestep, then 0."""
    if hasattr(s, "sigmas"):
        return s.sigmas
    a = s.alphas_cumprod
    return torch.cat([(((1 - a) / a) ** 0.5)[s.timesteps], torch.zeros(1)])


def init_noise_sigma(s):
    """Flow matching keeps none: its pipelines (SD3, Flux) start from the
    unit noise."""
    return getattr(s, "init_noise_sigma", 1.0)


def scale_model_input(s, x, t):
    """Flow matching's pipelines give the model the sample as it is."""
    return s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x


def schedule_lines(s):
    return ["timesteps " + fmt(s.timesteps), "sigmas " + fmt(sigmas_of(s)),
            f"init_noise_sigma {float(init_noise_sigma(s))!r}"]


def denoise(s, timesteps, x, eta, generator):
    """A pipeline's denoising loop over `timesteps`: the last latents and
    the last step's x0."""
    denoised = None
    for t in timesteps:
        eps = model(scale_model_input(s, x, t), t)
        x, denoised = step(s, eps, t, x, eta, generator)
    return x, denoised


def header(name, kind, cfg, request, s, eta=0.0):
    """A case's lines before its inputs and results."""
    return [f"case {name}", config_line(kind, cfg), "request " + request,
            *schedule_lines(s), f"eta {eta!r}", "seed 1234"]


def results(x, denoised):
    return ["final " + fmt(x.flatten()), "denoised " + fmt(denoised.flatten()),
            "end"]


def main():
    out = [f"# diffusers {diffusers.__version__}, torch {torch.__version__}"]
    for index, (kind, cfg, request, eta) in enumerate(CASES):
        for n in STEP_COUNTS:
            s = KINDS[kind](**cfg)
            mu = request.get("mu")
            sigmas = request.get("sigmas")
            if sigmas == "flux":
                sigmas = list(np.linspace(1.0, 1 / n, n))
            seq_len = request.get("image_seq_len")
            if mu is None and seq_len is not None:
                # What the Flux and SD3 pipelines pass set_timesteps.
                mu = diffusers.pipelines.flux.pipeline_flux.calculate_shift(
                    seq_len, s.config.base_image_seq_len,
                    s.config.max_image_seq_len, s.config.base_shift,
                    s.config.max_shift)
            extra = {}
            if mu is not None:
                extra["mu"] = mu
            if sigmas is not None:
                extra["sigmas"] = sigmas
            s.set_timesteps(None if sigmas is not None else n, **extra)
            req = [f"steps={n}"]
            if "mu" in request:
                req.append(f"mu={request['mu']!r}")
            if seq_len is not None:
                req.append(f"image_seq_len={seq_len}")
            if sigmas is not None:
                req.append("sigmas=" + ",".join(repr(float(v))
                                                for v in sigmas))
            out += header(f"{index}/{kind}/{n}", kind, cfg, " ".join(req), s,
                          eta)
            generator = torch.Generator().manual_seed(1234)
            unit = randn_tensor((1, 4, 8, 8), generator=generator,
                                dtype=torch.float32)
            out.append("unit_noise " + fmt(unit.flatten()))
            out += results(*denoise(s, s.timesteps, unit * init_noise_sigma(s),
                                    eta, generator))

    img2img = diffusers.StableDiffusionImg2ImgPipeline
    for index, (kind, cfg, strength) in enumerate(IMG2IMG_CASES):
        for n in IMG2IMG_STEPS:
            s = KINDS[kind](**cfg)
            s.set_timesteps(n)
            timesteps, _ = img2img.get_timesteps(
                types.SimpleNamespace(scheduler=s), n, strength, "cpu")
            image = torch.randn((1, 4, 8, 8),
                                generator=torch.Generator().manual_seed(99))
            out += header(f"img2img-{index}/{kind}/{n}", kind, cfg,
                          f"steps={n} strength={strength!r}", s)
            out.append("image_latents " + fmt(image.flatten()))
            generator = torch.Generator().manual_seed(1234)
            noise = randn_tensor((1, 4, 8, 8), generator=generator)
            x = s.add_noise(image, noise, timesteps[:1])
            out += results(*denoise(s, timesteps, x, 0.0, generator))

    refiner = diffusers.StableDiffusionXLImg2ImgPipeline
    for index, (kind, cfg, fraction) in enumerate(SPLIT_CASES):
        for n in SPLIT_STEPS:
            # The base: StableDiffusionXLPipeline.__call__'s denoising_end
            # (inline there, no function of its own to call).
            base = KINDS[kind](**cfg)
            base.set_timesteps(n)
            train = base.config.num_train_timesteps
            cutoff = int(round(train - fraction * train))
            kept = len(list(filter(lambda ts: ts >= cutoff, base.timesteps)))
            out += header(f"split-{index}/{kind}/{n}", kind, cfg,
                          f"steps={n} split={fraction!r}", base)
            generator = torch.Generator().manual_seed(1234)
            x = randn_tensor((1, 4, 8, 8), generator=generator) * \
                init_noise_sigma(base)
            x, _ = denoise(base, base.timesteps[:kept], x, 0.0, generator)
            out.append("base_final " + fmt(x.flatten()))
            # The refiner: its own scheduler, timesteps from
            # StableDiffusionXLImg2ImgPipeline.get_timesteps, no noise added.
            s = KINDS[kind](**cfg)
            s.set_timesteps(n)
            timesteps, _ = refiner.get_timesteps(
                types.SimpleNamespace(scheduler=s), n, 0.3, "cpu",
                denoising_start=fraction)
            generator = torch.Generator().manual_seed(1234)
            out += results(*denoise(s, timesteps, x, 0.0, generator))

    with open(sys.argv[1], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
