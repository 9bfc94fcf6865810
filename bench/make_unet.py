#!/usr/bin/env python3
"""Writes a UNet-like denoiser with random weights as TorchScript, for the
GPU benchmark (bench/gpu_bench.cc, run by scripts/gpu-check).

Its shape is Stable Diffusion's UNet in small: a timestep embedding, ResNet
blocks with GroupNorm and SiLU at three resolutions, self-attention at the
lowest, skip connections, forward(sample [B,4,H,W], timestep [B]) -> the
noise prediction of sample's shape. Weights are random: the figures are
about the serving path, not the pictures. Its cost per step is printed
(multiply-adds x 2 at [1,4,64,64]) and written next to the model.

    python3 bench/make_unet.py OUT.pt [--channels 64] [--device cuda]
"""
import argparse
import json
import math

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.temb(t)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    def __init__(self, channels: int = 64):
        super().__init__()
        c1, c2, c3 = channels, 2 * channels, 4 * channels
        temb = 4 * channels
        self.freq = channels
        self.time = nn.Sequential(nn.Linear(channels, temb), nn.SiLU(),
                                  nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(4, c1, 3, padding=1)
        self.down1 = ResBlock(c1, c1, temb)
        self.pool1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.down2 = ResBlock(c1, c2, temb)
        self.pool2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)
        self.mid1 = ResBlock(c2, c3, temb)
        self.mid_attn = Attention(c3)
        self.mid2 = ResBlock(c3, c3, temb)
        self.up2 = ResBlock(c3 + c2, c2, temb)
        self.up1 = ResBlock(c2 + c1, c1, temb)
        self.norm_out = nn.GroupNorm(8, c1)
        self.conv_out = nn.Conv2d(c1, 4, 3, padding=1)

    def embed(self, timestep: torch.Tensor) -> torch.Tensor:
        half = self.freq // 2
        scale = -math.log(10000.0) / half
        freqs = torch.exp(torch.arange(half, device=timestep.device,
                                       dtype=torch.float32) * scale)
        args = timestep.float()[:, None] * freqs[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)

    def forward(self, sample: torch.Tensor,
                timestep: torch.Tensor) -> torch.Tensor:
        if timestep.dim() == 0:
            timestep = timestep.expand(sample.shape[0])
        t = self.time(self.embed(timestep).to(sample.dtype))
        h1 = self.down1(self.conv_in(sample), t)
        h2 = self.down2(self.pool1(h1), t)
        h = self.mid2(self.mid_attn(self.mid1(self.pool2(h2), t)), t)
        h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.up2(torch.cat([h, h2], dim=1), t)
        h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.up1(torch.cat([h, h1], dim=1), t)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


def gflops(model: nn.Module, shape) -> float:
    """Multiply-adds x 2 of the convolutions, linears and attention."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2 * output.numel() * module.in_channels * k

    def linear_hook(module, inputs, output):
        nonlocal total
        total += 2 * output.numel() * module.in_features

    def attn_hook(module, inputs, output):
        nonlocal total
        b, n, c = inputs[0].shape
        total += 2 * b * (4 * n * c * c + 2 * n * n * c)

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.MultiheadAttention):
            hooks.append(m.register_forward_hook(attn_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(torch.zeros(shape), torch.tensor([500.0]))
    for h in hooks:
        h.remove()
    return total / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = UNet(args.channels).eval()
    cost = gflops(model, (1, 4, 64, 64))
    scripted = torch.jit.script(model)
    scripted.save(args.out)
    info = {"channels": args.channels, "gflop_per_step_1x4x64x64": cost,
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__}
    with open(args.out + ".json", "w") as f:
        json.dump(info, f)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
