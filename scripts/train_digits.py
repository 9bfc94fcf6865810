#!/usr/bin/env python3
"""Trains loopserve's shipped model: a small class-conditional UNet-style
denoiser on the 8x8 handwritten digits that scikit-learn ships, the text
encoder that turns prompts into its conditioning, and a small classifier
that tells whether generated samples are digits. All are saved as
TorchScript.

    .venv/bin/python scripts/train_digits.py --out deploy/models/digits

CPU only, deterministic (seeded), about half an hour on two cores. The
denoiser predicts epsilon under diffusers' default DDPM schedule (1000
steps, linear betas 1e-4 .. 0.02):

    forward(sample [B,1,8,8] in [-1, 1], timestep (one per sample, or one
            for all), encoder_hidden_states [B,1,10]) -> epsilon [B,1,8,8]

as diffusers passes them to a UNet. The conditioning is the digit one-hot;
all zeros is the null conditioning (no digit), which training uses for a
fifth of the samples (label dropout), so classifier-free guidance works and
an empty prompt still makes digits. The text encoder maps "7", "seven" or
"a handwritten seven" to the one-hot of 7, and text naming no digit to
zeros. The model card (MODEL_CARD.md) records the data, the command and the
figures this script prints.
"""
import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from typing import List

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven",
               "eight", "nine"]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) *
                      torch.arange(half, dtype=torch.float32,
                                   device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class DigitsUNet(nn.Module):
    """8x8 -> 4x4 -> 8x8 with a skip connection, conditioned on time and on
    the digit (a one-hot, zeros for none) added to the time embedding."""

    def __init__(self, ch: int = 32, tdim: int = 128):
        super().__init__()
        self.tdim = tdim
        self.time = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(),
                                  nn.Linear(tdim, tdim))
        # No bias: the null conditioning (zeros) adds nothing.
        self.label = nn.Linear(10, tdim, bias=False)
        self.inp = nn.Conv2d(1, ch, 3, padding=1)
        self.down1 = ResBlock(ch, ch, tdim)
        self.downsample = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * ch, 2 * ch, tdim)
        self.mid2 = ResBlock(2 * ch, 2 * ch, tdim)
        self.upsample = nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1)
        self.up1 = ResBlock(2 * ch, ch, tdim)
        self.up2 = ResBlock(ch, ch, tdim)
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(),
                                 nn.Conv2d(ch, 1, 3, padding=1))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        t = timestep.reshape(-1)
        if t.numel() == 1:
            t = t.expand(sample.shape[0])
        temb = self.time(timestep_embedding(t, self.tdim))
        temb = temb + self.label(encoder_hidden_states.reshape(-1, 10))
        h0 = self.down1(self.inp(sample), temb)
        h = self.downsample(h0)
        h = self.mid2(self.mid1(h, temb), temb)
        h = self.upsample(h)
        h = self.up1(torch.cat([h, h0], dim=1), temb)
        h = self.up2(h, temb)
        return self.out(h)


class DigitsClassifier(nn.Module):
    """[B,1,8,8] in [-1, 1] -> logits over the 10 digits."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 16, 128), nn.ReLU(),
            nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsTextEncoder(nn.Module):
    """Prompts -> the denoiser's conditioning [B,1,10]: the one-hot of the
    first digit the text names ("7", "seven", "a handwritten seven"), zeros
    when it names none (the null conditioning)."""

    def __init__(self):
        super().__init__()
        self.words = DIGIT_WORDS

    def forward(self, prompts: List[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), 1, 10)
        for b, prompt in enumerate(prompts):
            text = prompt.lower()
            for mark in [",", ".", "!", "?", ";", ":", "-", "_", "'", '"']:
                text = text.replace(mark, " ")
            label = -1
            for token in text.split():
                if label < 0:
                    for d, word in enumerate(self.words):
                        if token == word or token == str(d):
                            label = d
            if label >= 0:
                out[b, 0, label] = 1.0
        return out


def one_hot(y: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y, 10).to(torch.float32)[:, None, :]


def load_data():
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    y = torch.tensor(digits.target, dtype=torch.long)
    return x, y


def ddim_sample(model, alphas_cumprod, cond, steps, generator,
                guidance_scale=1.0, clip=True):
    """50-step DDIM (eta 0, leading spacing, set_alpha_to_one), as loopserve
    runs digits-ddim (x0 clipped to [-1, 1]) and digits-text (guided against
    the null conditioning, not clipped: clipping x0 while keeping the guided
    epsilon pulls the samples off the digits): for the figures this script
    prints."""
    n = cond.shape[0]
    x = torch.randn((n, 1, 8, 8), generator=generator)
    ratio = 1000 // steps
    for t in reversed(range(0, 1000, ratio)):
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[t - ratio] if t - ratio >= 0 else \
            torch.tensor(1.0)
        if guidance_scale > 1:
            both = model(torch.cat([x, x]), torch.tensor(t),
                         torch.cat([torch.zeros_like(cond), cond]))
            uncond, c = both.chunk(2)
            eps = uncond + guidance_scale * (c - uncond)
        else:
            eps = model(x, torch.tensor(t), cond)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def confident_fraction(classifier, x, threshold=0.8):
    p = F.softmax(classifier(x), dim=1)
    return (p.max(dim=1).values >= threshold).float().mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--classifier_steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label_dropout", type=float, default=0.2)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)  # before the half hour, not after

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    x, y = load_data()
    n = x.shape[0]
    perm = torch.randperm(n)
    test_idx, train_idx = perm[:300], perm[300:]

    # The classifier: trained on the training split, checked on the rest.
    classifier = DigitsClassifier()
    opt = torch.optim.AdamW(classifier.parameters(), lr=2e-3,
                            weight_decay=1e-4)
    for step in range(args.classifier_steps):
        idx = train_idx[torch.randint(0, len(train_idx), (args.batch,))]
        # Label smoothing keeps the classifier calibrated: confident on
        # digits, not on noise (without it, it is >= 0.8 sure of most noise).
        loss = F.cross_entropy(classifier(x[idx]), y[idx],
                               label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    classifier.eval()
    with torch.no_grad():
        acc = (classifier(x[test_idx]).argmax(1) == y[test_idx]).float().mean()
    print(f"classifier: held-out accuracy {acc.item():.3f} on "
          f"{len(test_idx)} digits")

    # The denoiser: epsilon prediction under diffusers' default schedule.
    betas = torch.linspace(0.0001, 0.02, 1000, dtype=torch.float32)
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    model = DigitsUNet()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3,
                                                total_steps=args.steps)
    ema = DigitsUNet()
    ema.load_state_dict(model.state_dict())
    start = time.time()
    running = 0.0
    for step in range(args.steps):
        idx = torch.randint(0, n, (args.batch,))
        x0 = x[idx]
        t = torch.randint(0, 1000, (args.batch,))
        noise = torch.randn_like(x0)
        a = alphas_cumprod[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        keep = (torch.rand(args.batch) >= args.label_dropout).to(
            torch.float32)[:, None, None]
        loss = F.mse_loss(model(xt, t, one_hot(y[idx]) * keep), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(0.999).add_(pm, alpha=0.001)
        running = 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 500 == 0:
            print(f"denoiser: step {step + 1}/{args.steps} loss "
                  f"{running:.4f} ({time.time() - start:.0f} s)", flush=True)
    ema.eval()

    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        samples = ddim_sample(ema, alphas_cumprod, torch.zeros(64, 1, 10), 50,
                              g)
        noise = torch.randn((64, 1, 8, 8), generator=g).clamp(-1, 1)
        print(f"denoiser: {params} parameters, final loss {running:.4f}")
        print(f"check: confident (>= 0.8) on 64 unconditional DDIM samples: "
              f"{confident_fraction(classifier, samples):.3f}; "
              f"on 64 noise images: "
              f"{confident_fraction(classifier, noise):.3f}")
        labels = torch.arange(10).repeat(20)
        for scale in (1.0, 2.0, 3.0, 5.0):
            g = torch.Generator().manual_seed(7)
            x = ddim_sample(ema, alphas_cumprod, one_hot(labels), 50, g,
                            scale, clip=False)
            hit = (classifier(x).argmax(1) == labels).float().mean().item()
            print(f"check: guidance {scale}: {hit:.3f} of 200 samples are "
                  f"the prompted digit")

    torch.jit.script(ema).save(f"{args.out}/unet.pt")
    torch.jit.script(DigitsTextEncoder()).save(
        f"{args.out}/text_encoder.pt")
    torch.jit.script(classifier).save(f"{args.out}/classifier.pt")
    print(f"saved {args.out}/unet.pt, text_encoder.pt and classifier.pt")


if __name__ == "__main__":
    main()
