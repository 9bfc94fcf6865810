#!/usr/bin/env python3
"""A reference of diffusers' schedulers, written from diffusers' own code
(schedulers/scheduling_*.py) with numpy and torch, float32 where diffusers
computes on 0-d float32 tensors and float64 where it computes in numpy:

    DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
    DPMSolverMultistepScheduler, UniPCMultistepScheduler, LCMScheduler,
    FlowMatchEulerDiscreteScheduler

Writes the cases scheduler_parity_test.cc checks loopserve's C++ schedulers
against: for every scheduler and option listed in CASES, at 1, 2, 10, 25 and
50 steps, the schedule (timesteps, sigmas, init_noise_sigma) and the whole
trajectory under a fixed analytic model, stochastic steps drawing from one
torch.Generator seeded 1234 after the initial noise, as a diffusers pipeline
does with generator=.

    scheduler_reference.py OUT_FILE
"""
import math
import sys

import numpy as np
import torch

STEP_COUNTS = (1, 2, 10, 25, 50)


def betas_for(cfg):
    n = cfg["num_train_timesteps"]
    if cfg["beta_schedule"] == "linear":
        return torch.linspace(cfg["beta_start"], cfg["beta_end"], n,
                              dtype=torch.float32)
    return torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n,
                          dtype=torch.float32) ** 2


NOISE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
             beta_schedule="linear")


class Base:
    defaults = {}
    init_noise_sigma = 1.0

    def __init__(self, **kw):
        unknown = set(kw) - set(self.defaults)
        assert not unknown, unknown
        self.cfg = dict(self.defaults, **kw)
        if "beta_schedule" in self.cfg:
            self.alphas_cumprod = torch.cumprod(1.0 - betas_for(self.cfg),
                                                dim=0)
        if "set_alpha_to_one" in self.cfg:  # DDIM, LCM
            self.final_alpha_cumprod = (torch.tensor(1.0)
                                        if self.cfg["set_alpha_to_one"]
                                        else self.alphas_cumprod[0])

    def scale_model_input(self, sample, i):
        return sample

    def set_timesteps(self, n, mu=None, sigmas=None):
        raise NotImplementedError

    def add_noise(self, original, noise, begin):
        """DDPM's add_noise at the begin index's timestep (DDIM, LCM)."""
        a = self.alphas_cumprod[self.timesteps[begin]]
        return a ** 0.5 * original + (1 - a) ** 0.5 * noise


def convert_to_karras(in_sigmas, n):
    sigma_min = in_sigmas[-1].item()
    sigma_max = in_sigmas[0].item()
    rho = 7.0
    ramp = np.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def sigma_to_t(sigma, log_sigmas):
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low_idx = np.cumsum((dists >= 0), axis=0).argmax(axis=0).clip(
        max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low = log_sigmas[low_idx]
    high = log_sigmas[high_idx]
    w = (low - log_sigma) / (low - high)
    w = np.clip(w, 0, 1)
    t = (1 - w) * low_idx + w * high_idx
    return t.reshape(sigma.shape)


class Ddim(Base):
    defaults = dict(NOISE, prediction_type="epsilon",
                    timestep_spacing="leading", steps_offset=0,
                    set_alpha_to_one=True, clip_sample=True,
                    clip_sample_range=1.0)

    def set_timesteps(self, n, mu=None, sigmas=None):
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


class Euler(Base):
    defaults = dict(NOISE, prediction_type="epsilon",
                    timestep_spacing="linspace", steps_offset=0,
                    use_karras_sigmas=False)
    ancestral = False

    def set_timesteps(self, n, mu=None, sigmas=None):
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
        log_sigmas = np.log(sigmas)
        sigmas = np.interp(t, np.arange(0, len(sigmas)), sigmas)
        if self.cfg["use_karras_sigmas"]:
            sigmas = convert_to_karras(sigmas, n)
            t = np.array([sigma_to_t(s, log_sigmas) for s in sigmas])
        sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas)
        self.timesteps = torch.from_numpy(t.astype(np.float32))
        max_sigma = self.sigmas.max()
        if spacing in ("linspace", "trailing"):
            self.init_noise_sigma = max_sigma
        else:
            self.init_noise_sigma = (max_sigma ** 2 + 1) ** 0.5

    def add_noise(self, original, noise, begin):
        return original + noise * self.sigmas[begin]

    def scale_model_input(self, sample, i):
        sigma = self.sigmas[i]
        return sample / ((sigma ** 2 + 1) ** 0.5)

    def step(self, model_output, i, sample, eta=0.0, generator=None):
        sample = sample.to(torch.float32)
        sigma = self.sigmas[i]
        kind = self.cfg["prediction_type"]
        if kind == "epsilon":
            x0 = sample - sigma * model_output
        elif kind == "v_prediction":
            x0 = model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + (
                sample / (sigma ** 2 + 1))
        else:
            x0 = model_output
        if not self.ancestral:
            # s_churn = 0: gamma = 0, sigma_hat = sigma.
            derivative = (sample - x0) / sigma
            dt = self.sigmas[i + 1] - sigma
            return (sample + derivative * dt).to(model_output.dtype), x0
        sigma_from = self.sigmas[i]
        sigma_to = self.sigmas[i + 1]
        sigma_up = (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) /
                    sigma_from ** 2) ** 0.5
        sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
        derivative = (sample - x0) / sigma
        dt = sigma_down - sigma
        prev_sample = sample + derivative * dt
        noise = torch.randn(model_output.shape, dtype=model_output.dtype,
                            generator=generator)
        prev_sample = prev_sample + noise * sigma_up
        return prev_sample.to(model_output.dtype), x0


class EulerAncestral(Euler):
    defaults = dict(NOISE, prediction_type="epsilon",
                    timestep_spacing="linspace", steps_offset=0)
    ancestral = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.cfg["use_karras_sigmas"] = False


def multistep_timesteps(cfg, n, alphas_cumprod, karras_last_is_sigma_min):
    """DPMSolverMultistepScheduler's (and UniPC's) set_timesteps."""
    N = cfg["num_train_timesteps"]
    last_timestep = N  # lambda_min_clipped = -inf
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        t = (np.linspace(0, last_timestep - 1, n + 1).round()[::-1][:-1]
             .copy().astype(np.int64))
    elif spacing == "leading":
        step_ratio = last_timestep // (n + 1)
        t = ((np.arange(0, n + 1) * step_ratio).round()[::-1][:-1]
             .copy().astype(np.int64))
        t += cfg["steps_offset"]
    else:
        step_ratio = N / n
        t = np.arange(last_timestep, 0, -step_ratio).round().copy().astype(
            np.int64)
        t -= 1
    sigmas = np.array(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)
    log_sigmas = np.log(sigmas)
    if cfg["use_karras_sigmas"]:
        sigmas = np.flip(sigmas).copy()
        sigmas = convert_to_karras(sigmas, n)
        t = np.array([sigma_to_t(s, log_sigmas) for s in sigmas]).round()
        karras = True
    else:
        sigmas = np.interp(t, np.arange(0, len(sigmas)), sigmas)
        karras = False
    if cfg["final_sigmas_type"] == "sigma_min":
        if karras and karras_last_is_sigma_min:
            sigma_last = sigmas[-1]
        else:
            sigma_last = ((1 - alphas_cumprod[0]) / alphas_cumprod[0]) ** 0.5
    else:
        sigma_last = 0
    sigmas = np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
    return (torch.from_numpy(t).to(dtype=torch.int64),
            torch.from_numpy(sigmas))


def sigma_to_alpha_sigma_t(sigma):
    alpha_t = 1 / ((sigma ** 2 + 1) ** 0.5)
    sigma_t = sigma * alpha_t
    return alpha_t, sigma_t


def multistep_add_noise(self, original, noise, begin):
    """DPMSolverMultistep's and UniPCMultistep's add_noise."""
    alpha_t, sigma_t = sigma_to_alpha_sigma_t(self.sigmas[begin])
    return alpha_t * original + sigma_t * noise


class DpmSolver(Base):
    defaults = dict(NOISE, solver_order=2, prediction_type="epsilon",
                    algorithm_type="dpmsolver++", solver_type="midpoint",
                    lower_order_final=True, euler_at_final=False,
                    use_karras_sigmas=False, final_sigmas_type="zero",
                    timestep_spacing="linspace", steps_offset=0)

    add_noise = multistep_add_noise

    def set_timesteps(self, n, mu=None, sigmas=None):
        self.timesteps, self.sigmas = multistep_timesteps(
            self.cfg, n, self.alphas_cumprod, False)
        self.model_outputs = [None] * self.cfg["solver_order"]
        self.lower_order_nums = 0

    def convert_model_output(self, model_output, sample):
        sigma = self.sigmas[self.step_index]
        alpha_t, sigma_t = sigma_to_alpha_sigma_t(sigma)
        kind = self.cfg["prediction_type"]
        if kind == "epsilon":
            return (sample - sigma_t * model_output) / alpha_t
        if kind == "sample":
            return model_output
        return alpha_t * sample - sigma_t * model_output

    def first_order(self, model_output, sample, noise):
        sigma_t, sigma_s = (self.sigmas[self.step_index + 1],
                            self.sigmas[self.step_index])
        alpha_t, sigma_t = sigma_to_alpha_sigma_t(sigma_t)
        alpha_s, sigma_s = sigma_to_alpha_sigma_t(sigma_s)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s = torch.log(alpha_s) - torch.log(sigma_s)
        h = lambda_t - lambda_s
        if self.cfg["algorithm_type"] == "dpmsolver++":
            return ((sigma_t / sigma_s) * sample -
                    (alpha_t * (torch.exp(-h) - 1.0)) * model_output)
        return ((sigma_t / sigma_s * torch.exp(-h)) * sample +
                (alpha_t * (1 - torch.exp(-2.0 * h))) * model_output +
                sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h)) * noise)

    def second_order(self, model_output_list, sample, noise):
        i = self.step_index
        sigma_t, sigma_s0, sigma_s1 = (self.sigmas[i + 1], self.sigmas[i],
                                       self.sigmas[i - 1])
        alpha_t, sigma_t = sigma_to_alpha_sigma_t(sigma_t)
        alpha_s0, sigma_s0 = sigma_to_alpha_sigma_t(sigma_s0)
        alpha_s1, sigma_s1 = sigma_to_alpha_sigma_t(sigma_s1)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        lambda_s1 = torch.log(alpha_s1) - torch.log(sigma_s1)
        m0, m1 = model_output_list[-1], model_output_list[-2]
        h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
        r0 = h_0 / h
        D0, D1 = m0, (1.0 / r0) * (m0 - m1)
        midpoint = self.cfg["solver_type"] == "midpoint"
        if self.cfg["algorithm_type"] == "dpmsolver++":
            if midpoint:
                return ((sigma_t / sigma_s0) * sample
                        - (alpha_t * (torch.exp(-h) - 1.0)) * D0
                        - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * D1)
            return ((sigma_t / sigma_s0) * sample
                    - (alpha_t * (torch.exp(-h) - 1.0)) * D0
                    + (alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0)) * D1)
        if midpoint:
            return ((sigma_t / sigma_s0 * torch.exp(-h)) * sample
                    + (alpha_t * (1 - torch.exp(-2.0 * h))) * D0
                    + 0.5 * (alpha_t * (1 - torch.exp(-2.0 * h))) * D1
                    + sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h)) * noise)
        return ((sigma_t / sigma_s0 * torch.exp(-h)) * sample
                + (alpha_t * (1 - torch.exp(-2.0 * h))) * D0
                + (alpha_t * ((1.0 - torch.exp(-2.0 * h)) / (-2.0 * h) + 1.0))
                * D1
                + sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h)) * noise)

    def third_order(self, model_output_list, sample):
        i = self.step_index
        sigma_t, sigma_s0, sigma_s1, sigma_s2 = (
            self.sigmas[i + 1], self.sigmas[i], self.sigmas[i - 1],
            self.sigmas[i - 2])
        alpha_t, sigma_t = sigma_to_alpha_sigma_t(sigma_t)
        alpha_s0, sigma_s0 = sigma_to_alpha_sigma_t(sigma_s0)
        alpha_s1, sigma_s1 = sigma_to_alpha_sigma_t(sigma_s1)
        alpha_s2, sigma_s2 = sigma_to_alpha_sigma_t(sigma_s2)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        lambda_s1 = torch.log(alpha_s1) - torch.log(sigma_s1)
        lambda_s2 = torch.log(alpha_s2) - torch.log(sigma_s2)
        m0, m1, m2 = (model_output_list[-1], model_output_list[-2],
                      model_output_list[-3])
        h, h_0, h_1 = (lambda_t - lambda_s0, lambda_s0 - lambda_s1,
                       lambda_s1 - lambda_s2)
        r0, r1 = h_0 / h, h_1 / h
        D0 = m0
        D1_0, D1_1 = (1.0 / r0) * (m0 - m1), (1.0 / r1) * (m1 - m2)
        D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
        D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
        return ((sigma_t / sigma_s0) * sample
                - (alpha_t * (torch.exp(-h) - 1.0)) * D0
                + (alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0)) * D1
                - (alpha_t * ((torch.exp(-h) - 1.0 + h) / h ** 2 - 0.5)) * D2)

    def step(self, model_output, i, sample, eta=0.0, generator=None):
        self.step_index = i
        cfg = self.cfg
        n = len(self.timesteps)
        lower_order_final = (i == n - 1) and (
            cfg["euler_at_final"] or (cfg["lower_order_final"] and n < 15)
            or cfg["final_sigmas_type"] == "zero")
        lower_order_second = ((i == n - 2) and cfg["lower_order_final"]
                              and n < 15)
        model_output = self.convert_model_output(model_output, sample)
        order = cfg["solver_order"]
        for k in range(order - 1):
            self.model_outputs[k] = self.model_outputs[k + 1]
        self.model_outputs[-1] = model_output
        sample = sample.to(torch.float32)
        noise = None
        if cfg["algorithm_type"] == "sde-dpmsolver++":
            noise = torch.randn(model_output.shape, generator=generator,
                                dtype=torch.float32)
        if order == 1 or self.lower_order_nums < 1 or lower_order_final:
            prev = self.first_order(model_output, sample, noise)
        elif order == 2 or self.lower_order_nums < 2 or lower_order_second:
            prev = self.second_order(self.model_outputs, sample, noise)
        else:
            prev = self.third_order(self.model_outputs, sample)
        if self.lower_order_nums < order:
            self.lower_order_nums += 1
        return prev.to(model_output.dtype), model_output


class UniPc(Base):
    defaults = dict(NOISE, solver_order=2, prediction_type="epsilon",
                    predict_x0=True, solver_type="bh2",
                    lower_order_final=True, disable_corrector=[],
                    use_karras_sigmas=False, timestep_spacing="linspace",
                    steps_offset=0, final_sigmas_type="zero")

    add_noise = multistep_add_noise

    def set_timesteps(self, n, mu=None, sigmas=None):
        self.timesteps, self.sigmas = multistep_timesteps(
            self.cfg, n, self.alphas_cumprod, True)
        self.model_outputs = [None] * self.cfg["solver_order"]
        self.lower_order_nums = 0
        self.last_sample = None

    def convert_model_output(self, model_output, sample):
        sigma = self.sigmas[self.step_index]
        alpha_t, sigma_t = sigma_to_alpha_sigma_t(sigma)
        kind = self.cfg["prediction_type"]
        if self.cfg["predict_x0"]:
            if kind == "epsilon":
                return (sample - sigma_t * model_output) / alpha_t
            if kind == "sample":
                return model_output
            return alpha_t * sample - sigma_t * model_output
        if kind == "epsilon":
            return model_output
        if kind == "sample":
            return (sample - alpha_t * model_output) / sigma_t
        return alpha_t * model_output + sigma_t * sample

    def uni_base(self, frm, to, x, order):
        """What diffusers' multistep_uni_p_bh_update and
        multistep_uni_c_bh_update share: the B(h) update of x from
        sigmas[frm] to sigmas[to], with the history's differences (the k-th
        before m0 at frm - k). Returns the first-order part x_t_, the scale
        of the correction ((alpha_t or sigma_t) * B_h), R, b and D1s."""
        model_output_list = self.model_outputs
        m0 = model_output_list[-1]
        sigma_t, sigma_s0 = self.sigmas[to], self.sigmas[frm]
        alpha_t, sigma_t = sigma_to_alpha_sigma_t(sigma_t)
        alpha_s0, sigma_s0 = sigma_to_alpha_sigma_t(sigma_s0)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        h = lambda_t - lambda_s0
        rks = []
        D1s = []
        for k in range(1, order):
            mi = model_output_list[-(k + 1)]
            alpha_si, sigma_si = sigma_to_alpha_sigma_t(self.sigmas[frm - k])
            lambda_si = torch.log(alpha_si) - torch.log(sigma_si)
            rk = (lambda_si - lambda_s0) / h
            rks.append(rk)
            D1s.append((mi - m0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)
        R = []
        b = []
        hh = -h if self.cfg["predict_x0"] else h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        if self.cfg["solver_type"] == "bh1":
            B_h = hh
        else:
            B_h = torch.expm1(hh)
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        if self.cfg["predict_x0"]:
            x_t_ = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
            scale = alpha_t * B_h
        else:
            x_t_ = alpha_t / alpha_s0 * x - sigma_t * h_phi_1 * m0
            scale = sigma_t * B_h
        D1s = torch.stack(D1s, dim=1) if len(D1s) > 0 else None
        return (x_t_, scale, torch.stack(R), torch.tensor(b, device=x.device),
                D1s)

    def uni_p(self, x, order):
        i = self.step_index
        x_t_, scale, R, b, D1s = self.uni_base(i, i + 1, x, order)
        pred_res = 0
        if D1s is not None:
            if order == 2:
                rhos_p = torch.tensor([0.5], dtype=x.dtype)
            else:
                rhos_p = torch.linalg.solve(R[:-1, :-1], b[:-1]).to(x.dtype)
            pred_res = torch.einsum("k,bkc...->bc...", rhos_p, D1s)
        return (x_t_ - scale * pred_res).to(x.dtype)

    def uni_c(self, model_t, x, order):
        i = self.step_index
        x_t_, scale, R, b, D1s = self.uni_base(i - 1, i, x, order)
        if order == 1:
            rhos_c = torch.tensor([0.5], dtype=x.dtype)
        else:
            rhos_c = torch.linalg.solve(R, b).to(x.dtype)
        corr_res = (torch.einsum("k,bkc...->bc...", rhos_c[:-1], D1s)
                    if D1s is not None else 0)
        D1_t = model_t - self.model_outputs[-1]
        return (x_t_ - scale * (corr_res + rhos_c[-1] * D1_t)).to(x.dtype)

    def step(self, model_output, i, sample, eta=0.0, generator=None):
        self.step_index = i
        cfg = self.cfg
        use_corrector = (i > 0 and i - 1 not in cfg["disable_corrector"]
                         and self.last_sample is not None)
        converted = self.convert_model_output(model_output, sample)
        original = sample
        if use_corrector:
            sample = self.uni_c(converted, self.last_sample, self.this_order)
        order = cfg["solver_order"]
        for k in range(order - 1):
            self.model_outputs[k] = self.model_outputs[k + 1]
        self.model_outputs[-1] = converted
        if cfg["lower_order_final"]:
            this_order = min(order, len(self.timesteps) - i)
        else:
            this_order = order
        self.this_order = min(this_order, self.lower_order_nums + 1)
        self.last_sample = sample
        prev = self.uni_p(sample, self.this_order)
        if self.lower_order_nums < order:
            self.lower_order_nums += 1
        x0 = converted
        if not cfg["predict_x0"]:
            alpha_t, sigma_t = sigma_to_alpha_sigma_t(self.sigmas[i])
            x0 = (original - sigma_t * converted) / alpha_t
        return prev, x0


class Lcm(Base):
    defaults = dict(num_train_timesteps=1000, beta_start=0.00085,
                    beta_end=0.012, beta_schedule="scaled_linear",
                    original_inference_steps=50, clip_sample=False,
                    clip_sample_range=1.0, set_alpha_to_one=True,
                    steps_offset=0, prediction_type="epsilon",
                    timestep_spacing="leading", timestep_scaling=10.0)

    def set_timesteps(self, n, mu=None, sigmas=None):
        N = self.cfg["num_train_timesteps"]
        original_steps = self.cfg["original_inference_steps"]
        k = N // original_steps
        lcm_origin = np.asarray(list(range(1, original_steps + 1))) * k - 1
        lcm_origin = lcm_origin[::-1].copy()
        indices = np.linspace(0, len(lcm_origin), num=n, endpoint=False)
        indices = np.floor(indices).astype(np.int64)
        self.timesteps = torch.from_numpy(lcm_origin[indices]).to(
            dtype=torch.long)
        self.num_inference_steps = n
        ts = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.sigmas = torch.cat([ts[self.timesteps], torch.zeros(1)])

    def step(self, model_output, i, sample, eta=0.0, generator=None):
        timestep = self.timesteps[i]
        prev_step_index = i + 1
        if prev_step_index < len(self.timesteps):
            prev_timestep = self.timesteps[prev_step_index]
        else:
            prev_timestep = timestep
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = (self.alphas_cumprod[prev_timestep]
                             if prev_timestep >= 0
                             else self.final_alpha_cumprod)
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        sigma_data = 0.5
        scaled_timestep = timestep * self.cfg["timestep_scaling"]
        c_skip = sigma_data ** 2 / (scaled_timestep ** 2 + sigma_data ** 2)
        c_out = scaled_timestep / (scaled_timestep ** 2 +
                                   sigma_data ** 2) ** 0.5
        kind = self.cfg["prediction_type"]
        if kind == "epsilon":
            x0 = (sample - beta_prod_t.sqrt() * model_output) / \
                alpha_prod_t.sqrt()
        elif kind == "sample":
            x0 = model_output
        else:
            x0 = alpha_prod_t.sqrt() * sample - beta_prod_t.sqrt() * \
                model_output
        if self.cfg["clip_sample"]:
            r = self.cfg["clip_sample_range"]
            x0 = x0.clamp(-r, r)
        denoised = c_out * x0 + c_skip * sample
        if i != self.num_inference_steps - 1:
            noise = torch.randn(model_output.shape, generator=generator,
                                dtype=denoised.dtype)
            prev_sample = (alpha_prod_t_prev.sqrt() * denoised +
                           beta_prod_t_prev.sqrt() * noise)
        else:
            prev_sample = denoised
        return prev_sample, denoised


class FlowMatchEuler(Base):
    defaults = dict(num_train_timesteps=1000, shift=1.0,
                    use_dynamic_shifting=False, base_shift=0.5,
                    max_shift=1.15, base_image_seq_len=256,
                    max_image_seq_len=4096)

    def __init__(self, **kw):
        super().__init__(**kw)
        N = self.cfg["num_train_timesteps"]
        shift = self.cfg["shift"]
        timesteps = np.linspace(1, N, N, dtype=np.float32)[::-1].copy()
        timesteps = torch.from_numpy(timesteps).to(dtype=torch.float32)
        sigmas = timesteps / N
        if not self.cfg["use_dynamic_shifting"]:
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        self.shift = shift
        self.sigma_min = sigmas[-1].item()
        self.sigma_max = sigmas[0].item()

    def calculate_shift(self, image_seq_len):
        cfg = self.cfg
        m = (cfg["max_shift"] - cfg["base_shift"]) / (
            cfg["max_image_seq_len"] - cfg["base_image_seq_len"])
        b = cfg["base_shift"] - m * cfg["base_image_seq_len"]
        return image_seq_len * m + b

    def set_timesteps(self, n, mu=None, sigmas=None):
        N = self.cfg["num_train_timesteps"]
        if sigmas is None:
            timesteps = np.linspace(self.sigma_max * N, self.sigma_min * N, n)
            sigmas = timesteps / N
        else:
            sigmas = np.array(sigmas).astype(np.float32)
        if self.cfg["use_dynamic_shifting"]:
            sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)
        else:
            sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        sigmas = torch.from_numpy(sigmas).to(dtype=torch.float32)
        self.timesteps = sigmas * N
        self.sigmas = torch.cat([sigmas, torch.zeros(1)])

    def step(self, model_output, i, sample, eta=0.0, generator=None):
        sample = sample.to(torch.float32)
        sigma = self.sigmas[i]
        sigma_next = self.sigmas[i + 1]
        prev_sample = sample + (sigma_next - sigma) * model_output
        return prev_sample.to(model_output.dtype), sample - sigma * model_output


KINDS = {
    "ddim_scheduler": Ddim,
    "euler_scheduler": Euler,
    "euler_ancestral_scheduler": EulerAncestral,
    "dpm_solver_multistep_scheduler": DpmSolver,
    "unipc_multistep_scheduler": UniPc,
    "lcm_scheduler": Lcm,
    "flow_match_euler_scheduler": FlowMatchEuler,
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
        elif isinstance(v, list):
            v = "[" + ",".join(str(x) for x in v) + "]"
        parts.append(f"{k}={v}")
    return "config " + " ".join(parts)


def main():
    out = []
    for index, (kind, cfg, request, eta) in enumerate(CASES):
        for n in STEP_COUNTS:
            s = KINDS[kind](**cfg)
            mu = request.get("mu")
            sigmas = request.get("sigmas")
            if sigmas == "flux":
                sigmas = list(np.linspace(1.0, 1 / n, n))
            seq_len = request.get("image_seq_len")
            if mu is None and seq_len is not None:
                mu = s.calculate_shift(seq_len)
            s.set_timesteps(n, mu=mu, sigmas=sigmas)
            out.append(f"case {index}/{kind}/{n}")
            out.append(config_line(kind, cfg))
            req = [f"steps={n}"]
            if "mu" in request:
                req.append(f"mu={request['mu']!r}")
            if seq_len is not None:
                req.append(f"image_seq_len={seq_len}")
            if sigmas is not None:
                req.append("sigmas=" + ",".join(repr(float(v))
                                                for v in sigmas))
            out.append("request " + " ".join(req))
            out.append("timesteps " + fmt(s.timesteps))
            out.append("sigmas " + fmt(s.sigmas))
            out.append(f"init_noise_sigma {float(s.init_noise_sigma)!r}")
            generator = torch.Generator().manual_seed(1234)
            unit = torch.randn((1, 4, 8, 8), generator=generator,
                               dtype=torch.float32)
            out.append(f"eta {eta!r}")
            out.append("seed 1234")
            out.append("unit_noise " + fmt(unit.flatten()))
            x = unit * s.init_noise_sigma
            denoised = None
            for i in range(len(s.timesteps)):
                inp = s.scale_model_input(x, i)
                eps = model(inp, s.timesteps[i])
                x, denoised = s.step(eps, i, x, eta=eta, generator=generator)
            out.append("final " + fmt(x.flatten()))
            out.append("denoised " + fmt(denoised.flatten()))
            out.append("end")

    for index, (kind, cfg, strength) in enumerate(IMG2IMG_CASES):
        for n in IMG2IMG_STEPS:
            s = KINDS[kind](**cfg)
            s.set_timesteps(n)
            init_timestep = min(int(n * strength), n)
            begin = max(n - init_timestep, 0)
            image = torch.randn((1, 4, 8, 8),
                                generator=torch.Generator().manual_seed(99))
            out.append(f"case img2img-{index}/{kind}/{n}")
            out.append(config_line(kind, cfg))
            out.append(f"request steps={n} strength={strength!r}")
            out.append("timesteps " + fmt(s.timesteps))
            out.append("sigmas " + fmt(s.sigmas))
            out.append(f"init_noise_sigma {float(s.init_noise_sigma)!r}")
            out.append("eta 0.0")
            out.append("seed 1234")
            out.append("image_latents " + fmt(image.flatten()))
            generator = torch.Generator().manual_seed(1234)
            noise = torch.randn((1, 4, 8, 8), generator=generator)
            x = s.add_noise(image, noise, begin)
            for i in range(begin, len(s.timesteps)):
                inp = s.scale_model_input(x, i)
                eps = model(inp, s.timesteps[i])
                x, denoised = s.step(eps, i, x, generator=generator)
            out.append("final " + fmt(x.flatten()))
            out.append("denoised " + fmt(denoised.flatten()))
            out.append("end")

    with open(sys.argv[1], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
