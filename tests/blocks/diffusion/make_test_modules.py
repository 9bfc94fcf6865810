#!/usr/bin/env python3
"""Writes the TorchScript modules the denoising tests load:

  cond_denoiser.pt   forward(sample, timestep, encoder_hidden_states): a
                     conditioned 'denoiser' whose output depends on all three,
                     for the classifier-free guidance tests.
  decoder.pt         forward(latents) -> [B,3,2H,2W] in [-1, 1]: a
                     'VAE decoder' for the Decode tests.

    make_test_modules.py OUT_DIR
"""
import os
import sys

import torch


class CondDenoiser(torch.nn.Module):
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        cond = encoder_hidden_states.mean(dim=[1, 2]).reshape(-1, 1, 1, 1)
        return (torch.sin(sample) * 0.5 + cond * 0.25 +
                timestep.to(torch.float32) / 1000.0)


class Decoder(torch.nn.Module):
    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        rgb = torch.tanh(latents[:, :3])
        return torch.nn.functional.interpolate(rgb, scale_factor=2.0,
                                               mode="nearest")


os.makedirs(sys.argv[1], exist_ok=True)
torch.jit.script(CondDenoiser()).save(f"{sys.argv[1]}/cond_denoiser.pt")
torch.jit.script(Decoder()).save(f"{sys.argv[1]}/decoder.pt")
