"""loopserve-export: a diffusers pipeline folder -> a folder loopserve serves.

    loopserve-export MODEL_DIR OUT_DIR [--name NAME]
    python -m loopserve.export MODEL_DIR OUT_DIR [--name NAME]

MODEL_DIR is a folder as diffusers' `save_pretrained` writes it
(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/, and
text_encoder_2/, tokenizer_2/ for SDXL). OUT_DIR receives the models as
TorchScript, the tokenizers, the scheduler's config and pipeline.pbtxt, which

    loopserve --config OUT_DIR/pipeline.pbtxt

serves as pipeline NAME (default: MODEL_DIR's name), text to image, and
NAME-img2img, image to image (for the SDXL refiner, NAME alone: it is an
image-to-image pipeline; for the unconditional ones, NAME alone).
Families: StableDiffusionPipeline (SD 1.x and 2.x, epsilon or
v-prediction), StableDiffusionXLPipeline and the refiner's
StableDiffusionXLImg2ImgPipeline, and the unconditional DDPMPipeline and
DDIMPipeline (a UNet2DModel in pixel space). Another `_class_name` is
refused, naming the supported ones.

The modules hide each family's plumbing behind the server's generic
signatures: the UNet takes (sample, timestep, encoder_hidden_states[,
text_embeds, time_ids]) and returns the prediction; the text encoder takes
one ids tensor per tokenizer and clip_skip, and returns the conditioning
(SDXL: the two encoders' penultimate states side by side, and the pooled
projection); the VAE's encoder returns its latent distribution's moments,
its decoder an image in [-1, 1]. Tokenization, guidance, the samplers, the
micro-conditioning and the image's noise run in the server.

Needs torch, diffusers and transformers: pip install "./client/python[export]".
"""

import argparse
import json
import os
import sys

from google.protobuf import text_format

from loopserve.client import to_value
from loopserve.v1 import config_pb2

FAMILIES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl-refiner",
    "DDPMPipeline": "unconditional",
    "DDIMPipeline": "unconditional",
}

# The samplers every exported pipeline offers, named as loopserve's embedded
# configuration names them: (name, loopserve type, diffusers class, the
# options given to diffusers' from_config(folder's scheduler config)).
SAMPLERS = [
    ("ddim", "ddim_scheduler", "DDIMScheduler", {}),
    ("ddpm", "ddpm_scheduler", "DDPMScheduler", {}),
    ("euler", "euler_scheduler", "EulerDiscreteScheduler", {}),
    ("euler-karras", "euler_scheduler", "EulerDiscreteScheduler",
     {"use_karras_sigmas": True}),
    ("euler-a", "euler_ancestral_scheduler",
     "EulerAncestralDiscreteScheduler", {}),
    ("dpmpp-2m", "dpm_solver_multistep_scheduler",
     "DPMSolverMultistepScheduler", {}),
    ("dpmpp-2m-karras", "dpm_solver_multistep_scheduler",
     "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("dpmpp-2m-sde-karras", "dpm_solver_multistep_scheduler",
     "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    ("dpmpp-3m", "dpm_solver_multistep_scheduler",
     "DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("unipc", "unipc_multistep_scheduler", "UniPCMultistepScheduler", {}),
]

# SD 1.x/2.x's latent -> RGB factors, for the per-step previews of 4-channel
# latents.
PREVIEW_FACTORS = [0.3512, 0.2297, 0.3227, 0.3250, 0.4974, 0.2350,
                   -0.2829, 0.1762, 0.2721, -0.2120, -0.2616, -0.7177]


class ExportError(Exception):
    pass


def sampler_name(scheduler):
    """The SAMPLERS name of a diffusers scheduler object, or None when
    loopserve has no sampler equal to it."""
    config = scheduler.config
    for name, _, cls, options in SAMPLERS:
        if type(scheduler).__name__ != cls:
            continue
        defaults = {"use_karras_sigmas": False, "solver_order": 2,
                    "algorithm_type": "dpmsolver++"}
        wanted = {k: options.get(k, v) for k, v in defaults.items()
                  if k in config}
        if all(config.get(k) == v for k, v in wanted.items()):
            return name
    return None


# ---- the modules ----

def _modules():
    """The wrapper classes (torch is imported only when exporting)."""
    import torch

    class UNet(torch.nn.Module):
        """forward(sample, timestep, encoder_hidden_states) -> prediction."""

        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states,
                             return_dict=False)[0]

    class UNetUnconditional(torch.nn.Module):
        """A UNet2DModel: forward(sample, timestep) -> prediction."""

        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep):
            return self.unet(sample, timestep, return_dict=False)[0]

    class UNetXL(torch.nn.Module):
        """SDXL: forward(sample, timestep, encoder_hidden_states,
        text_embeds, time_ids), the added conditions as diffusers'
        added_cond_kwargs."""

        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states,
                    text_embeds, time_ids):
            return self.unet(
                sample, timestep, encoder_hidden_states,
                added_cond_kwargs={"text_embeds": text_embeds,
                                   "time_ids": time_ids},
                return_dict=False)[0]

    class HiddenStates(torch.nn.Module):
        """A CLIP text model's every hidden state [L+1,B,S,D], and its first
        output (last_hidden_state, or a projection model's text_embeds)."""

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids):
            out = self.encoder(input_ids, output_hidden_states=True,
                               return_dict=True)
            return torch.stack(out.hidden_states), out[0]

    # Each text module's max_clip_skip: the largest clip_skip whose hidden
    # state exists, which the server takes as the input's maximum.

    class TextSD(torch.nn.Module):
        """SD 1.x/2.x: forward(input_ids_1, clip_skip) -> the final layer
        norm of hidden state -(clip_skip + 1), as encode_prompt (clip_skip 0:
        the last hidden state)."""
        max_clip_skip: int

        def __init__(self, hidden, final_layer_norm, layers):
            super().__init__()
            self.hidden = hidden
            self.final_layer_norm = final_layer_norm
            self.max_clip_skip = layers

        def forward(self, input_ids_1, clip_skip: int):
            states, _ = self.hidden(input_ids_1)
            return self.final_layer_norm(states[-(clip_skip + 1)])

    class TextXL(torch.nn.Module):
        """SDXL: forward(input_ids_1, input_ids_2, clip_skip) ->
        (both encoders' hidden state -(clip_skip + 2) side by side, the
        second's pooled projection)."""
        max_clip_skip: int

        def __init__(self, hidden_1, hidden_2, layers):
            super().__init__()
            self.hidden_1 = hidden_1
            self.hidden_2 = hidden_2
            self.max_clip_skip = layers - 1

        def forward(self, input_ids_1, input_ids_2, clip_skip: int):
            states_1, _ = self.hidden_1(input_ids_1)
            states_2, pooled = self.hidden_2(input_ids_2)
            return (torch.cat([states_1[-(clip_skip + 2)],
                               states_2[-(clip_skip + 2)]], -1), pooled)

    class TextXLRefiner(torch.nn.Module):
        """The refiner's one encoder: forward(input_ids_1, clip_skip)."""
        max_clip_skip: int

        def __init__(self, hidden, layers):
            super().__init__()
            self.hidden = hidden
            self.max_clip_skip = layers - 1

        def forward(self, input_ids_1, clip_skip: int):
            states, pooled = self.hidden(input_ids_1)
            return states[-(clip_skip + 2)], pooled

    class VaeEncoder(torch.nn.Module):
        """forward(image in [-1, 1]) -> moments [B,2C,h,w] (mean, logvar)."""

        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, image):
            return self.vae.encode(image).latent_dist.parameters

    class VaeDecoder(torch.nn.Module):
        """forward(latents / scaling_factor) -> image in [-1, 1]."""

        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, latents):
            return self.vae.decode(latents, return_dict=False)[0]

    return dict(UNet=UNet, UNetUnconditional=UNetUnconditional,
                UNetXL=UNetXL, HiddenStates=HiddenStates,
                TextSD=TextSD, TextXL=TextXL, TextXLRefiner=TextXLRefiner,
                VaeEncoder=VaeEncoder, VaeDecoder=VaeDecoder)


def _trace(module, example):
    import torch
    import warnings
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's shape warnings
        return torch.jit.trace(module.eval(), example, check_trace=False)


def _export_text(family, pipe, m, out):
    import torch
    ids = torch.zeros(2, 77, dtype=torch.long)
    if family == "sd":
        hidden = _trace(m["HiddenStates"](pipe.text_encoder), (ids,))
        # transformers 5's CLIPTextModel holds the norm itself; 4's in
        # .text_model.
        text_model = getattr(pipe.text_encoder, "text_model",
                             pipe.text_encoder)
        module = m["TextSD"](hidden, text_model.final_layer_norm,
                             pipe.text_encoder.config.num_hidden_layers)
        tokenizers = [("tokenizer", pipe.tokenizer)]
        outputs = ["encoder_hidden_states"]
    elif family == "sdxl":
        module = m["TextXL"](
            _trace(m["HiddenStates"](pipe.text_encoder), (ids,)),
            _trace(m["HiddenStates"](pipe.text_encoder_2), (ids,)),
            min(pipe.text_encoder.config.num_hidden_layers,
                pipe.text_encoder_2.config.num_hidden_layers))
        tokenizers = [("tokenizer", pipe.tokenizer),
                      ("tokenizer_2", pipe.tokenizer_2)]
        outputs = ["encoder_hidden_states", "text_embeds"]
    else:
        module = m["TextXLRefiner"](
            _trace(m["HiddenStates"](pipe.text_encoder_2), (ids,)),
            pipe.text_encoder_2.config.num_hidden_layers)
        tokenizers = [("tokenizer_2", pipe.tokenizer_2)]
        outputs = ["encoder_hidden_states", "text_embeds"]
    torch.jit.script(module.eval()).save(os.path.join(out, "text_encoder.pt"))
    for folder, tokenizer in tokenizers:
        # Saved as transformers loads it: tokenizer.json, which is what
        # loopserve reads, whatever the folder held.
        tokenizer.save_pretrained(os.path.join(out, folder))
    return [folder for folder, _ in tokenizers], outputs


def export(model_dir, out, name=None):
    """Exports the pipeline at `model_dir` into `out`; returns the path of
    the configuration written."""
    index_path = os.path.join(model_dir, "model_index.json")
    try:
        with open(index_path) as f:
            class_name = json.load(f).get("_class_name", "")
    except (OSError, ValueError) as e:
        raise ExportError(f"{index_path}: cannot read it ({e}); MODEL_DIR "
                          "must be a folder diffusers' save_pretrained wrote")
    family = FAMILIES.get(class_name)
    if family is None:
        raise ExportError(
            f"{model_dir}: _class_name '{class_name}' is not supported; "
            f"supported: {', '.join(FAMILIES)}")

    import diffusers
    import torch
    pipe = diffusers.DiffusionPipeline.from_pretrained(
        model_dir, dtype=torch.float32)
    name = name or os.path.basename(os.path.normpath(model_dir))
    os.makedirs(out, exist_ok=True)
    m = _modules()

    unet = pipe.unet
    if family == "unconditional":
        return _export_unconditional(pipe, name, out, m)
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    # A traced UNet takes latents whose sides divide by each down-sampling.
    size_multiple = vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
    if getattr(pipe.vae.config, "latents_mean", None) is not None:
        raise ExportError(f"{model_dir}: a VAE with latents_mean is not "
                          "supported yet")
    if unet.config.time_cond_proj_dim is not None:
        raise ExportError(f"{model_dir}: a UNet with time_cond_proj_dim "
                          "(guidance-distilled) is not supported yet")
    latent = size_multiple // vae_scale
    sample = torch.randn(2, unet.config.in_channels, latent, latent)
    timestep = torch.tensor([1, 1])
    tokenizer_folders, text_outputs = _export_text(family, pipe, m, out)
    with torch.no_grad():
        states = torch.jit.load(os.path.join(out, "text_encoder.pt"))(
            *[torch.zeros(2, 77, dtype=torch.long)] * len(tokenizer_folders),
            0)
    states = states if isinstance(states, tuple) else (states,)
    hidden_size = states[0].shape[-1]
    if family == "sd":
        unet_module = _trace(m["UNet"](unet), (sample, timestep, states[0]))
    else:
        time_ids = torch.zeros(2, 5 if family == "sdxl-refiner" else 6)
        unet_module = _trace(m["UNetXL"](unet),
                             (sample, timestep, states[0], states[1],
                              time_ids))
    unet_module.save(os.path.join(out, "unet.pt"))
    image = torch.zeros(1, 3, size_multiple, size_multiple)
    _trace(m["VaeEncoder"](pipe.vae), (image,)).save(
        os.path.join(out, "vae_encoder.pt"))
    _trace(m["VaeDecoder"](pipe.vae), (sample[:1],)).save(
        os.path.join(out, "vae_decoder.pt"))
    pipe.scheduler.save_config(os.path.join(out, "scheduler"))

    samplers = _samplers(pipe.scheduler)
    size = (unet.config.sample_size or 64) * vae_scale
    config = _pipeline_config(
        family=family, name=name, samplers=samplers,
        tokenizers=tokenizer_folders, text_outputs=text_outputs,
        hidden_size=hidden_size, pooled_size=(
            states[1].shape[-1] if len(states) > 1 else None),
        channels=unet.config.in_channels, size=size, vae_scale=vae_scale,
        size_multiple=size_multiple,
        scaling_factor=pipe.vae.config.scaling_factor,
        force_zeros=bool(pipe.config.get("force_zeros_for_empty_prompt",
                                         False)))
    return _write(config, out)


def _export_unconditional(pipe, name, out, m):
    """DDPMPipeline, DDIMPipeline: a UNet2DModel denoising pixels, which the
    latent preview (identity factors) draws as diffusers' pipelines do,
    (x / 2 + 0.5) clamped."""
    import torch
    unet = pipe.unet
    if unet.config.num_class_embeds is not None:
        raise ExportError("a class-conditional UNet2DModel is not supported "
                          "yet")
    channels = unet.config.in_channels
    if channels not in (1, 3):
        raise ExportError(f"a UNet2DModel of {channels} channels: the "
                          "unconditional pipelines draw 1 or 3")
    multiple = 2 ** (len(unet.config.block_out_channels) - 1)
    size = unet.config.sample_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    sample = torch.randn(2, channels, size, size)
    _trace(m["UNetUnconditional"](unet), (sample, torch.tensor([1, 1]))).save(
        os.path.join(out, "unet.pt"))
    pipe.scheduler.save_config(os.path.join(out, "scheduler"))
    samplers = _samplers(pipe.scheduler)
    config = config_pb2.ServerConfig()
    _add_samplers(config, samplers)
    _component(config, "unet", "torchscript_denoiser", {"path": "unet.pt"})
    factors = ([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
               if channels == 3 else [1.0, 1.0, 1.0])
    _component(config, "pixels", "latent_preview", {"factors": factors})
    # DDPMPipeline's default is 1,000 steps, DDIMPipeline's 50.
    steps = 1000 if type(pipe).__name__ == "DDPMPipeline" else 50
    blocks = [
        _block("set_timesteps", "SetTimesteps", {"num_inference_steps": steps}),
        _block("prepare_latents", "PrepareLatents",
               {"channels": channels, "height": size, "width": size,
                "size_multiple": multiple}),
        _block("denoise", "DenoiseLoop"),
        _block("decode", "Decode")]
    roles = {"scheduler": " | ".join(s for s, _, _ in samplers),
             "denoiser": "unet", "decoder": "pixels", "preview": "pixels"}
    _add_pipeline(config, name, f"unconditional {type(pipe).__name__}", roles,
                  blocks)
    return _write(config, out)


def _samplers(scheduler):
    """[(name, type, params)]: the folder's own scheduler first (its config
    as it is), then every other sampler of SAMPLERS from its config."""
    own = sampler_name(scheduler)
    samplers = []
    if own is not None:
        samplers.append((own, "diffusers_scheduler", {}))
    else:
        print(f"loopserve-export: the folder's {type(scheduler).__name__} is "
              "not one loopserve has; its config serves the others",
              file=sys.stderr)
    for name, type_, _, options in SAMPLERS:
        if name != own:
            samplers.append((name, type_, options))
    return samplers


# ---- pipeline.pbtxt: a ServerConfig message ----

def _component(config, name, type_, params):
    component = config.components.add(name=name, type=type_)
    for key, value in params.items():
        component.params[key].CopyFrom(to_value(value))


def _block(name, type_, params=None, blocks=()):
    block = config_pb2.BlockConfig(name=name, type=type_, blocks=blocks)
    for key, value in (params or {}).items():
        block.params[key].CopyFrom(to_value(value))
    return block


def _add_samplers(config, samplers):
    """Each sampler as a component reading the folder's scheduler config."""
    for s, t, options in samplers:
        _component(config, s, t,
                   {"config_file": "scheduler/scheduler_config.json",
                    **options})


def _add_pipeline(config, name, what, roles, blocks):
    """A pipeline of `blocks` in a Sequential, its roles bound."""
    config.pipelines.add(
        name=name, description=f"{what}, exported by loopserve-export",
        components=roles,
        blocks=config_pb2.BlockConfig(type="Sequential", blocks=blocks))


def _write(config, out):
    path = os.path.join(out, "pipeline.pbtxt")
    with open(path, "w") as f:
        f.write(text_format.MessageToString(config))
    return path


def _pipeline_config(*, family, name, samplers, tokenizers, text_outputs,
                     hidden_size, pooled_size, channels, size, vae_scale,
                     size_multiple, scaling_factor, force_zeros):
    xl = family != "sd"
    config = config_pb2.ServerConfig()
    _add_samplers(config, samplers)
    shapes = {"shape.encoder_hidden_states": [-1, 77, hidden_size]}
    arguments = ["sample", "timestep", "encoder_hidden_states"]
    if xl:
        arguments += ["text_embeds", "time_ids"]
        shapes["shape.text_embeds"] = [-1, pooled_size]
        shapes["shape.time_ids"] = [-1, 5 if family == "sdxl-refiner" else 6]
    _component(config, "unet", "torchscript_denoiser",
               {"path": "unet.pt", "arguments": arguments, **shapes})
    _component(config, "text_encoder", "torchscript_text_encoder",
               {"path": "text_encoder.pt", "tokenizers": tokenizers,
                "outputs": text_outputs})
    _component(config, "vae_encoder", "torchscript_encoder",
               {"path": "vae_encoder.pt", "moments": True, "sample": True,
                "scaling_factor": scaling_factor})
    _component(config, "vae_decoder", "torchscript_decoder",
               {"path": "vae_decoder.pt", "scaling_factor": scaling_factor})
    if channels == 4:
        _component(config, "preview", "latent_preview",
                   {"factors": PREVIEW_FACTORS, "upscale": vae_scale})
    guidance = 5.0 if xl else 7.5
    img2img_only = family == "sdxl-refiner"
    for img2img in ([True] if img2img_only else [False, True]):
        pipeline = name if not img2img or img2img_only else f"{name}-img2img"
        roles = {"scheduler": " | ".join(s for s, _, _ in samplers),
                 "text_encoder": "text_encoder", "denoiser": "unet",
                 "decoder": "vae_decoder"}
        if img2img:
            roles["encoder"] = "vae_encoder"
        if channels == 4:
            roles["preview"] = "preview"
        blocks = [_block("encode_prompt", "EncodePrompt",
                         {"force_zeros_for_empty_prompt": True}
                         if force_zeros else None)]
        if img2img:
            blocks.append(_block("encode_image", "EncodeImage"))
        steps = {"num_inference_steps": 50}
        if img2img:
            steps["strength"] = 0.3 if img2img_only else 0.8
        blocks.append(_block("set_timesteps", "SetTimesteps", steps))
        blocks.append(_block("prepare_latents", "PrepareLatents",
                             {"channels": channels, "height": size,
                              "width": size, "vae_scale_factor": vae_scale,
                              "size_multiple": size_multiple}))
        if xl:
            blocks.append(_block("add_time_ids", "AddTimeIds",
                                 {"aesthetic_score": img2img_only,
                                  "vae_scale_factor": vae_scale}))
        blocks.append(_block("denoise", "DenoiseLoop", blocks=[_block(
            "denoiser", "PredictNoise", {"guidance_scale": guidance})]))
        blocks.append(_block("decode", "Decode"))
        _add_pipeline(
            config, pipeline,
            f"{family}{', image to image' if img2img else ''}", roles,
            blocks)
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="loopserve-export",
        description="Exports a diffusers pipeline folder for loopserve: "
                    "TorchScript models, tokenizers and pipeline.pbtxt.")
    parser.add_argument("model_dir", help="a folder diffusers' "
                        "save_pretrained wrote (model_index.json, unet/, ...)")
    parser.add_argument("out_dir", help="where the export goes")
    parser.add_argument("--name", help="the pipeline's name (default: "
                        "MODEL_DIR's name)")
    args = parser.parse_args(argv)
    try:
        path = export(args.model_dir, args.out_dir, args.name)
    except ExportError as e:
        print(f"loopserve-export: {e}", file=sys.stderr)
        return 1
    print(f"loopserve-export: wrote {path}; serve it with: "
          f"loopserve --config {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
