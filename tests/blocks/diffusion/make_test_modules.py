#!/usr/bin/env python3
"""Writes the TorchScript modules the denoising tests load:

  cond_denoiser.pt   forward(sample, timestep, encoder_hidden_states): a
                     conditioned 'denoiser' whose output depends on all three,
                     for the classifier-free guidance tests.
  decoder.pt         forward(latents) -> [B,3,2H,2W] in [-1, 1]: a
                     'VAE decoder' for the Decode tests.
  sdxl_like.pt, sd3_like.pt, flux_like.pt
                     denoisers with the signatures of diffusers' SDXL UNet,
                     SD3 transformer and Flux transformer (return_dict=False
                     tuples, or a dict), whose output adds up each argument
                     with its own weight, and which assert the shapes they
                     receive: a batched value and the timestep have a row per
                     sample; Flux's ids and guidance are not batched.
  encoder.pt         forward(image [B,3,H,W]) -> moments [B,8,H/2,W/2]: a
                     'VAE encoder' (mean, then log-variance).
  text_encoder.pt    forward(List[str]) -> (encoder_hidden_states [B,4,3],
                     text_embeds [B,5]): row b holds len(texts[b]) and the
                     code of its first character.

    make_test_modules.py OUT_DIR
"""
import os
import sys
from typing import Dict, List, Tuple

import torch


def per_row(x: torch.Tensor) -> torch.Tensor:
    """The mean of each row, shaped to broadcast over [B,C,H,W]."""
    return x.to(torch.float32).reshape(x.shape[0], -1).mean(1).reshape(
        -1, 1, 1, 1)


def check_rows(sample: torch.Tensor, timestep: torch.Tensor):
    assert timestep.dim() == 1 and timestep.shape[0] == sample.shape[0], \
        "timestep must be [B]"


class CondDenoiser(torch.nn.Module):
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        cond = encoder_hidden_states.mean(dim=[1, 2]).reshape(-1, 1, 1, 1)
        return (torch.sin(sample) * 0.5 + cond * 0.25 +
                timestep.to(torch.float32).reshape(-1, 1, 1, 1) / 1000.0)


class SdxlLike(torch.nn.Module):
    """UNet2DConditionModel(sample, timestep, encoder_hidden_states,
    added_cond_kwargs={text_embeds, time_ids}), flattened."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor, text_embeds: torch.Tensor,
                time_ids: torch.Tensor) -> Tuple[torch.Tensor]:
        check_rows(sample, timestep)
        assert encoder_hidden_states.shape[0] == sample.shape[0]
        assert text_embeds.shape[0] == sample.shape[0]
        assert time_ids.shape[0] == sample.shape[0]
        out = (sample * 0.5 + timestep.to(torch.float32).reshape(-1, 1, 1, 1)
               / 1000.0 + per_row(encoder_hidden_states) +
               2.0 * per_row(text_embeds) + 3.0 * per_row(time_ids))
        return (out,)


class Sd3Like(torch.nn.Module):
    """SD3Transformer2DModel(hidden_states, encoder_hidden_states,
    pooled_projections, timestep) -> {"sample": ...}."""

    def forward(self, hidden_states: torch.Tensor,
                encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor,
                timestep: torch.Tensor) -> Dict[str, torch.Tensor]:
        check_rows(hidden_states, timestep)
        out = (hidden_states * 0.5 + timestep.reshape(-1, 1, 1, 1) / 1000.0 +
               per_row(encoder_hidden_states) +
               2.0 * per_row(pooled_projections))
        return {"sample": out, "other": out * 0}


class FluxLike(torch.nn.Module):
    """FluxTransformer2DModel(hidden_states, timestep / 1000, guidance,
    pooled_projections, encoder_hidden_states, txt_ids, img_ids)."""

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor,
                guidance: torch.Tensor, pooled_projections: torch.Tensor,
                encoder_hidden_states: torch.Tensor, txt_ids: torch.Tensor,
                img_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        check_rows(hidden_states, timestep)
        assert timestep.dtype == torch.float32, "timestep must be float32"
        assert bool((timestep <= 1.0).all()), "timestep must be t / 1000"
        assert txt_ids.dim() == 2 and img_ids.dim() == 2, "ids are [n,3]"
        assert guidance.shape == (1,), "guidance is shared, [1]"
        out = (hidden_states * 0.5 + timestep.reshape(-1, 1, 1, 1) +
               per_row(encoder_hidden_states) +
               2.0 * per_row(pooled_projections) + guidance * 10.0 +
               (txt_ids.sum() + img_ids.sum()) * 100.0)
        return (out, out * 0)


class Decoder(torch.nn.Module):
    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        rgb = torch.tanh(latents[:, :3])
        return torch.nn.functional.interpolate(rgb, scale_factor=2.0,
                                               mode="nearest")


class Encoder(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.nn.functional.avg_pool2d(image, 2)
        mean = torch.cat([mean, mean[:, :1]], dim=1)  # 4 latent channels
        return torch.cat([mean, torch.full_like(mean, -30.0)], dim=1)


class TextEncoder(torch.nn.Module):
    def forward(self, texts: List[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.zeros(len(texts), 4, 3)
        pooled = torch.zeros(len(texts), 5)
        for b, text in enumerate(texts):
            hidden[b, :, 0] = float(len(text))
            if len(text) > 0:
                hidden[b, :, 1] = float(ord(text[0]))
            pooled[b, :] = float(len(text)) + 0.5
        return hidden, pooled


out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, module in [("cond_denoiser", CondDenoiser()), ("decoder", Decoder()),
                     ("sdxl_like", SdxlLike()), ("sd3_like", Sd3Like()),
                     ("flux_like", FluxLike()), ("encoder", Encoder()),
                     ("text_encoder", TextEncoder())]:
    torch.jit.script(module).save(f"{out}/{name}.pt")
