#!/usr/bin/env python3
"""A reference of diffusers' DDIMScheduler and EulerDiscreteScheduler, written
from diffusers' formulas with numpy and torch, float32 as diffusers computes.

Writes the cases scheduler_parity_test.cc checks loopserve's C++ schedulers
against: timesteps, sigmas and init_noise_sigma of every timestep spacing at
10, 25 and 50 steps, and whole trajectories under a fixed analytic model.

    scheduler_reference.py OUT_FILE
"""
import sys

import numpy as np
import torch


def betas_for(cfg):
    n = cfg["num_train_timesteps"]
    if cfg["beta_schedule"] == "linear":
        return torch.linspace(cfg["beta_start"], cfg["beta_end"], n,
                              dtype=torch.float32)
    return torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n,
                          dtype=torch.float32) ** 2


class Ddim:
    defaults = dict(num_train_timesteps=1000, beta_start=0.0001,
                    beta_end=0.02, beta_schedule="linear",
                    prediction_type="epsilon", timestep_spacing="leading",
                    steps_offset=0, set_alpha_to_one=True, clip_sample=True,
                    clip_sample_range=1.0)

    def __init__(self, **kw):
        self.cfg = dict(self.defaults, **kw)
        self.alphas_cumprod = torch.cumprod(1.0 - betas_for(self.cfg), dim=0)
        self.final_alpha_cumprod = (torch.tensor(1.0)
                                    if self.cfg["set_alpha_to_one"]
                                    else self.alphas_cumprod[0])
        self.init_noise_sigma = 1.0

    def set_timesteps(self, n):
        N = self.cfg["num_train_timesteps"]
        spacing = self.cfg["timestep_spacing"]
        if spacing == "linspace":
            t = np.linspace(0, N - 1, n).round()[::-1].copy().astype(np.int64)
        elif spacing == "leading":
            ratio = N // n
            t = (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64)
            t += self.cfg["steps_offset"]
        else:
            ratio = N / n
            t = np.round(np.arange(N, 0, -ratio)).astype(np.int64)
            t -= 1
        self.n = n
        self.timesteps = torch.from_numpy(t)
        ts = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.sigmas = torch.cat([ts[self.timesteps], torch.zeros(1)])

    def scale_model_input(self, sample, i):
        return sample

    def step(self, model_output, i, sample, eta=0.0, generator=None):
        timestep = int(self.timesteps[i])
        prev = timestep - self.cfg["num_train_timesteps"] // self.n
        a_t = self.alphas_cumprod[timestep]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else \
            self.final_alpha_cumprod
        b_t = 1 - a_t
        kind = self.cfg["prediction_type"]
        if kind == "epsilon":
            x0 = (sample - b_t ** 0.5 * model_output) / a_t ** 0.5
            eps = model_output
        elif kind == "v_prediction":
            x0 = a_t ** 0.5 * sample - b_t ** 0.5 * model_output
            eps = a_t ** 0.5 * model_output + b_t ** 0.5 * sample
        else:
            x0 = model_output
            eps = (sample - a_t ** 0.5 * x0) / b_t ** 0.5
        if self.cfg["clip_sample"]:
            r = self.cfg["clip_sample_range"]
            x0 = x0.clamp(-r, r)
        b_prev = 1 - a_prev
        variance = (b_prev / b_t) * (1 - a_t / a_prev)
        std = eta * variance ** 0.5
        direction = (1 - a_prev - std ** 2) ** 0.5 * eps
        prev_sample = a_prev ** 0.5 * x0 + direction
        if eta > 0:
            noise = torch.randn(model_output.shape, generator=generator,
                                dtype=model_output.dtype)
            prev_sample = prev_sample + std * noise
        return prev_sample, x0


class Euler:
    defaults = dict(num_train_timesteps=1000, beta_start=0.0001,
                    beta_end=0.02, beta_schedule="linear",
                    prediction_type="epsilon", timestep_spacing="linspace",
                    steps_offset=0)

    def __init__(self, **kw):
        self.cfg = dict(self.defaults, **kw)
        self.alphas_cumprod = torch.cumprod(1.0 - betas_for(self.cfg), dim=0)

    def set_timesteps(self, n):
        N = self.cfg["num_train_timesteps"]
        spacing = self.cfg["timestep_spacing"]
        if spacing == "linspace":
            t = np.linspace(0, N - 1, n, dtype=np.float32)[::-1].copy()
        elif spacing == "leading":
            ratio = N // n
            t = (np.arange(0, n) * ratio).round()[::-1].copy().astype(
                np.float32)
            t += self.cfg["steps_offset"]
        else:
            ratio = N / n
            t = (np.arange(N, 0, -ratio)).round().copy().astype(np.float32)
            t -= 1
        sigmas = np.array(((1 - self.alphas_cumprod) /
                           self.alphas_cumprod) ** 0.5)
        sigmas = np.interp(t, np.arange(0, len(sigmas)), sigmas)
        sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas)
        self.timesteps = torch.from_numpy(t.astype(np.float32))
        max_sigma = self.sigmas.max()
        if spacing in ("linspace", "trailing"):
            self.init_noise_sigma = max_sigma
        else:
            self.init_noise_sigma = (max_sigma ** 2 + 1) ** 0.5

    def scale_model_input(self, sample, i):
        sigma = self.sigmas[i]
        return sample / ((sigma ** 2 + 1) ** 0.5)

    def step(self, model_output, i, sample, eta=0.0, generator=None):
        sample = sample.to(torch.float32)
        sigma = self.sigmas[i]
        sigma_hat = sigma * (0 + 1)  # s_churn = 0: gamma = 0
        kind = self.cfg["prediction_type"]
        if kind == "epsilon":
            x0 = sample - sigma_hat * model_output
        elif kind == "v_prediction":
            x0 = model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + (
                sample / (sigma ** 2 + 1))
        else:
            x0 = model_output
        derivative = (sample - x0) / sigma_hat
        dt = self.sigmas[i + 1] - sigma_hat
        return (sample + derivative * dt).to(model_output.dtype), x0


def model(x, t):
    """The fixed analytic 'model' both sides use."""
    return torch.sin(x) * 0.3 + t.to(torch.float32) / 1000 * 0.1


def fmt(values):
    return " ".join(repr(float(v)) for v in values)


def config_line(kind, cfg):
    parts = [f"type={kind}"]
    for k, v in cfg.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        parts.append(f"{k}={v}")
    return "config " + " ".join(parts)


def main():
    out = []

    def schedule_case(name, kind, cls, cfg, n):
        s = cls(**cfg)
        s.set_timesteps(n)
        out.append(f"case {name}")
        out.append(config_line(kind, cfg))
        out.append(f"steps {n}")
        out.append("timesteps " + fmt(s.timesteps))
        out.append("sigmas " + fmt(s.sigmas))
        out.append(f"init_noise_sigma {float(s.init_noise_sigma)!r}")
        return s

    for kind, cls in (("ddim_scheduler", Ddim), ("euler_scheduler", Euler)):
        for spacing in ("leading", "trailing", "linspace"):
            for n in (10, 25, 50):
                schedule_case(f"{kind}/{spacing}/{n}", kind, cls,
                              dict(timestep_spacing=spacing), n)
                out.append("end")

    trajectories = []
    for kind, cls in (("ddim_scheduler", Ddim), ("euler_scheduler", Euler)):
        for prediction in ("epsilon", "v_prediction"):
            for spacing in ("leading", "trailing", "linspace"):
                cfg = dict(timestep_spacing=spacing,
                           prediction_type=prediction)
                if kind == "ddim_scheduler":
                    cfg["clip_sample"] = False
                trajectories.append((kind, cls, cfg, 25, 0.0))
    trajectories += [
        ("ddim_scheduler", Ddim, dict(clip_sample=False), 50, 0.0),
        ("ddim_scheduler", Ddim, dict(clip_sample=False), 50, 0.5),
        ("ddim_scheduler", Ddim, dict(beta_schedule="scaled_linear",
                                      beta_start=0.00085, beta_end=0.012,
                                      steps_offset=1,
                                      set_alpha_to_one=False), 30, 0.0),
        ("euler_scheduler", Euler, dict(beta_schedule="scaled_linear",
                                        beta_start=0.00085, beta_end=0.012,
                                        timestep_spacing="leading",
                                        steps_offset=1), 30, 0.0),
    ]
    for index, (kind, cls, cfg, n, eta) in enumerate(trajectories):
        s = schedule_case(f"trajectory{index}/{kind}", kind, cls, cfg, n)
        generator = torch.Generator().manual_seed(1234)
        unit = torch.randn((1, 4, 8, 8), generator=generator,
                           dtype=torch.float32)
        out.append(f"eta {eta!r}")
        out.append("seed 1234")
        out.append("unit_noise " + fmt(unit.flatten()))
        x = unit * s.init_noise_sigma
        denoised = None
        for i in range(n):
            inp = s.scale_model_input(x, i)
            eps = model(inp, s.timesteps[i])
            x, denoised = s.step(eps, i, x, eta=eta, generator=generator)
        out.append("final " + fmt(x.flatten()))
        out.append("denoised " + fmt(denoised.flatten()))
        out.append("end")

    with open(sys.argv[1], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
