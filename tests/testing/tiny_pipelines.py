"""Tiny random-weight diffusers pipelines of each family loopserve-export
takes, built from diffusers' and transformers' config classes (seeded) and
CLIP's real tokenizer (clip_vocab.py), saved with save_pretrained. Nothing
is downloaded.

    python tiny_pipelines.py OUT_DIR      # every family, OUT_DIR/<family>
"""

import os
import sys

import diffusers
import torch
from transformers import (CLIPTextConfig, CLIPTextModel,
                          CLIPTextModelWithProjection, CLIPTokenizer)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_vocab import clip_vocab  # noqa: E402


def _tokenizer(pad_token="<|endoftext|>"):
    vocab, merges = clip_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token,
                         model_max_length=77)


def _text_config(hidden=32, projection=32):
    return CLIPTextConfig(bos_token_id=49406, eos_token_id=49407,
                          pad_token_id=1, hidden_size=hidden,
                          projection_dim=projection, intermediate_size=37,
                          layer_norm_eps=1e-5, num_attention_heads=4,
                          num_hidden_layers=5, hidden_act="gelu",
                          vocab_size=49408)


def _vae():
    return diffusers.AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4,
        norm_num_groups=32, sample_size=32)


def sd(prediction_type="epsilon", scheduler=None, version=1):
    """SD 1.x (version 1) or 2.x (2: linear projections, head dims per
    block, the tokenizer that pads with "!")."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16,
        in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
        attention_head_dim=(2, 4) if version == 2 else 8,
        use_linear_projection=version == 2)
    torch.manual_seed(1)
    vae = _vae()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(_text_config())
    scheduler = scheduler or diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        prediction_type=prediction_type)
    return diffusers.StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder,
        tokenizer=_tokenizer("!" if version == 2 else "<|endoftext|>"),
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def _xl_unet(time_ids, cross_attention_dim, text_embeds=32):
    return diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16,
        in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=time_ids * 8 + text_embeds,
        cross_attention_dim=cross_attention_dim, norm_num_groups=1)


def _xl_scheduler():
    return diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading")


def sdxl():
    torch.manual_seed(0)
    unet = _xl_unet(6, 64)
    torch.manual_seed(1)
    vae = _vae()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(_text_config())
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config())
    return diffusers.StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder,
        text_encoder_2=text_encoder_2, tokenizer=_tokenizer(),
        tokenizer_2=_tokenizer("!"), scheduler=_xl_scheduler())


def sdxl_refiner():
    torch.manual_seed(4)
    unet = _xl_unet(5, 32)
    torch.manual_seed(1)
    vae = _vae()
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config())
    return diffusers.StableDiffusionXLImg2ImgPipeline(
        unet=unet, vae=vae, text_encoder=None, text_encoder_2=text_encoder_2,
        tokenizer=None, tokenizer_2=_tokenizer("!"),
        scheduler=_xl_scheduler(), requires_aesthetics_score=True)


def unconditional(cls):
    """DDPMPipeline (its DDPMScheduler) or DDIMPipeline over a pixel-space
    UNet2DModel."""
    torch.manual_seed(5)
    unet = diffusers.UNet2DModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16,
        in_channels=3, out_channels=3,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    scheduler = (diffusers.DDPMScheduler() if cls is diffusers.DDPMPipeline
                 else diffusers.DDIMScheduler())
    return cls(unet=unet, scheduler=scheduler)


FAMILIES = {"sd15": sd, "sd2-v": lambda: sd("v_prediction", version=2),
            "sdxl": sdxl, "sdxl-refiner": sdxl_refiner,
            "ddpm": lambda: unconditional(diffusers.DDPMPipeline),
            "ddim": lambda: unconditional(diffusers.DDIMPipeline)}


def main():
    out = sys.argv[1]
    for name, build in FAMILIES.items():
        build().save_pretrained(os.path.join(out, name))
        print(f"{name} -> {os.path.join(out, name)}")


if __name__ == "__main__":
    main()
