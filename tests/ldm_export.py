"""Test-only writer of the original ("LDM" / "SGM") single-file checkpoint layout.

It turns a diffusers Stable Diffusion pipeline (in the tests: a tiny one from
``app.engine.tiny.build_tiny_pipeline``) into the state dict an A1111 / civitai checkpoint
holds, so the single-file loader can be tested offline against a known original:

* UNet: ``model.diffusion_model.{input_blocks,middle_block,output_blocks,time_embed,out,label_emb}``
* VAE: ``first_stage_model.{encoder,decoder}.{down,mid,up}...`` (attention as 1x1 convolutions)
* SD 1.x text encoder: ``cond_stage_model.transformer.text_model.*`` (Hugging Face CLIP names)
* SD 2.x text encoder: OpenCLIP ``cond_stage_model.model.*`` (fused ``attn.in_proj_*``)
* SDXL: ``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L) and
  ``conditioner.embedders.1.model.*`` (OpenCLIP bigG, with ``text_projection``)

Like real files it also carries the keys loaders must ignore: the text encoder's
``position_ids``, OpenCLIP's ``logit_scale`` and the DDPM schedule buffers.

transformers 5's ``CLIPTextModel`` has no ``text_model.`` level in its state dict while
``CLIPTextModelWithProjection`` keeps one; original checkpoints always have it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from torch import Tensor, nn

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

_RESNET_NAMES = {  # diffusers ResnetBlock2D -> LDM ResBlock (UNet)
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


# ----- helpers -----------------------------------------------------------------------------
def _text_state(model: nn.Module) -> dict[str, Tensor]:
    """The encoder's weights with keys starting at ``text_model.`` whatever transformers does."""
    state = model.state_dict()
    return {(k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}"): v for k, v in state.items()}


def _rename_sub(state: dict[str, Tensor], old_prefix: str, new_prefix: str, names: dict[str, str]) -> dict[str, Tensor]:
    """Keys under ``old_prefix`` moved under ``new_prefix``, with their first part renamed by ``names``."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(old_prefix):
            continue
        rest = key[len(old_prefix):]
        for old, new in names.items():
            if rest.startswith(old + "."):
                rest = new + rest[len(old):]
                break
        out[new_prefix + rest] = value
    return out


# ----- UNet ------------------------------------------------------------------------------------
def unet_to_ldm(unet: UNet2DConditionModel) -> dict[str, Tensor]:
    """UNet weights in the ``model.diffusion_model.*`` layout (SD 1.x, 2.x and SDXL)."""
    state = unet.state_dict()
    config = unet.config
    layers = config.layers_per_block
    out: dict[str, Tensor] = {}

    def move(old: str, new: str, names: dict[str, str] | None = None) -> None:
        out.update(_rename_sub(state, old, UNET_PREFIX + new, names or {}))

    move("time_embedding.linear_1.", "time_embed.0.")
    move("time_embedding.linear_2.", "time_embed.2.")
    if config.addition_embed_type == "text_time":
        move("add_embedding.linear_1.", "label_emb.0.0.")
        move("add_embedding.linear_2.", "label_emb.0.2.")
    move("conv_in.", "input_blocks.0.0.")

    n_blocks = len(config.down_block_types)
    for i in range(n_blocks):
        for j in range(layers):
            index = 1 + i * (layers + 1) + j
            move(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{index}.0.", _RESNET_NAMES)
            move(f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{index}.1.")
        if i < n_blocks - 1:
            move(f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (layers + 1)}.0.op.")

    move("mid_block.resnets.0.", "middle_block.0.", _RESNET_NAMES)
    move("mid_block.attentions.0.", "middle_block.1.")
    move("mid_block.resnets.1.", "middle_block.2.", _RESNET_NAMES)

    for i in range(len(config.up_block_types)):
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
        for j in range(layers + 1):
            index = i * (layers + 1) + j
            move(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{index}.0.", _RESNET_NAMES)
            move(f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{index}.1.")
        last = i * (layers + 1) + layers
        move(f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{last}.{2 if has_attention else 1}.conv.")

    move("conv_norm_out.", "out.0.")
    move("conv_out.", "out.2.")
    missing = len(state) - len(out)
    if missing:
        raise AssertionError(f"{missing} UNet weights were not mapped to the LDM layout")
    return out


# ----- VAE -------------------------------------------------------------------------------------
def vae_to_ldm(vae: AutoencoderKL) -> dict[str, Tensor]:
    """VAE weights in the ``first_stage_model.*`` layout (mid-block attention as 1x1 convs)."""
    state = vae.state_dict()
    out: dict[str, Tensor] = {}

    def move(old: str, new: str, names: dict[str, str] | None = None) -> None:
        out.update(_rename_sub(state, old, VAE_PREFIX + new, names or {}))

    n_blocks = len(vae.config.down_block_types)
    for side in ("encoder", "decoder"):
        move(f"{side}.conv_in.", f"{side}.conv_in.")
        move(f"{side}.conv_out.", f"{side}.conv_out.")
        move(f"{side}.conv_norm_out.", f"{side}.norm_out.")
        move(f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.")
        move(f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.")
        attention = _rename_sub(state, f"{side}.mid_block.attentions.0.", f"{VAE_PREFIX}{side}.mid.attn_1.", _VAE_ATTENTION_NAMES)
        for key, value in attention.items():  # LDM's attention projections are 1x1 convolutions
            out[key] = value[:, :, None, None] if value.ndim == 2 else value
    for i in range(n_blocks):
        move(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
        move(f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv.")
        ldm_i = n_blocks - 1 - i  # LDM numbers decoder blocks from the lowest resolution up
        move(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{ldm_i}.block.")
        move(f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{ldm_i}.upsample.conv.")
    out = {k.replace(".conv_shortcut.", ".nin_shortcut."): v for k, v in out.items()}  # ResnetBlock names
    move("quant_conv.", "quant_conv.")
    move("post_quant_conv.", "post_quant_conv.")
    missing = len(state) - len(out)
    if missing:
        raise AssertionError(f"{missing} VAE weights were not mapped to the LDM layout")
    return out


# ----- text encoders ---------------------------------------------------------------------------
def clip_to_ldm(text_encoder: nn.Module, prefix: str) -> dict[str, Tensor]:
    """A Hugging Face CLIP text encoder under ``prefix`` (which ends in ``text_model.``)."""
    state = _text_state(text_encoder)
    out = {prefix + k.removeprefix("text_model."): v for k, v in state.items() if k.startswith("text_model.")}
    positions = text_encoder.config.max_position_embeddings
    out[prefix + "embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return out


def openclip_to_ldm(text_encoder: nn.Module, prefix: str) -> dict[str, Tensor]:
    """A CLIP text encoder in OpenCLIP's layout (fused q/k/v, ``resblocks``, ``ln_final``)."""
    state = _text_state(text_encoder)
    out: dict[str, Tensor] = {
        prefix + "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        prefix + "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": state["text_model.final_layer_norm.weight"],
        prefix + "ln_final.bias": state["text_model.final_layer_norm.bias"],
        prefix + "logit_scale": torch.tensor(4.6052),
    }
    if "text_projection.weight" in state:  # OpenCLIP stores x @ P, nn.Linear stores P.T
        out[prefix + "text_projection"] = state["text_projection.weight"].T.contiguous()
    else:  # SD 2.x checkpoints carry OpenCLIP's projection although SD never uses it
        hidden = text_encoder.config.hidden_size
        out[prefix + "text_projection"] = torch.eye(hidden)
    for i in range(text_encoder.config.num_hidden_layers):
        src = f"text_model.encoder.layers.{i}."
        dst = f"{prefix}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = torch.cat(
                [state[src + f"self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")], dim=0
            )
            out[dst + f"attn.out_proj.{part}"] = state[src + f"self_attn.out_proj.{part}"]
            out[dst + f"ln_1.{part}"] = state[src + f"layer_norm1.{part}"]
            out[dst + f"ln_2.{part}"] = state[src + f"layer_norm2.{part}"]
            out[dst + f"mlp.c_fc.{part}"] = state[src + f"mlp.fc1.{part}"]
            out[dst + f"mlp.c_proj.{part}"] = state[src + f"mlp.fc2.{part}"]
    return out


def ddpm_buffers(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> dict[str, Tensor]:
    """The schedule buffers LDM's DDPM wrapper saves at the top level (loaders ignore them)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
    }
    return {k: v.float() for k, v in buffers.items()}


# ----- whole pipelines -------------------------------------------------------------------------
def pipeline_family(pipe: DiffusionPipeline) -> str:
    """"sdxl", "sd2" or "sd1", from the pipeline's modules (SD 2.x pads prompts with "!")."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    return "sd2" if pipe.tokenizer.pad_token == "!" else "sd1"


def pipeline_to_ldm(pipe: DiffusionPipeline, *, family: str | None = None, extras: bool = True) -> dict[str, Tensor]:
    """The whole pipeline as one original-layout state dict."""
    family = family or pipeline_family(pipe)
    state = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae)}
    if family == "sd1":
        state.update(clip_to_ldm(pipe.text_encoder, SD1_CLIP_PREFIX))
    elif family == "sd2":
        state.update(openclip_to_ldm(pipe.text_encoder, SD2_OPENCLIP_PREFIX))
    elif family == "sdxl":
        state.update(clip_to_ldm(pipe.text_encoder, SDXL_CLIP_PREFIX))
        state.update(openclip_to_ldm(pipe.text_encoder_2, SDXL_OPENCLIP_PREFIX))
    else:
        raise ValueError(f"unknown family {family!r}")
    if not extras:
        state = {k: v for k, v in state.items() if not k.endswith(("position_ids", "logit_scale"))}
    elif family != "sdxl":  # SGM checkpoints do not carry the DDPM buffers
        state.update(ddpm_buffers())
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def export_single_file(pipe: DiffusionPipeline, path: Path | str, *, family: str | None = None,
                       metadata: dict[str, str] | None = None) -> Path:
    """Write ``pipe`` as one original-layout ``.safetensors`` (or pickled ``.ckpt``) file."""
    path = Path(path)
    state = pipeline_to_ldm(pipe, family=family)
    if path.suffix == ".safetensors":
        save_file(state, str(path), metadata=metadata or {"format": "pt"})
    else:  # A1111-era pickles wrap the weights in {"state_dict": ...}
        torch.save({"state_dict": state, "global_step": 0}, path)
    return path
