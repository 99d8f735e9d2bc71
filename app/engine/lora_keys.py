"""kohya / A1111 LoRA layer names for diffusers modules (see shared/reference/formats.md, part B).

A kohya name is a prefix plus the module path with every "." replaced by "_". SD 1.x/2.x UNet
paths are diffusers paths; SDXL UNet paths are the original (SGM) block names. Text-encoder
paths keep CLIP's ``text_model.`` level, which transformers 5 dropped from ``CLIPTextModel``.
"""

from __future__ import annotations

import re

UNET_PREFIX = "lora_unet_"
TEXT_ENCODER_PREFIXES = {"sd1": ("lora_te_",), "sd2": ("lora_te_",), "sdxl": ("lora_te1_", "lora_te2_")}

_RESNET_PARTS = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
                 "conv_shortcut": "skip_connection", "norm1": "in_layers.0", "norm2": "out_layers.0"}


def kohya_unet_name(path: str, family: str, layers_per_block: int) -> str:
    """``lora_unet_...`` for a UNet module path (SGM block names for SDXL)."""
    if family == "sdxl":
        path = sgm_path(path, layers_per_block)
    return UNET_PREFIX + path.replace(".", "_")


def kohya_text_encoder_name(path: str, prefix: str) -> str:
    """``lora_te_...`` (or ``lora_te1_`` / ``lora_te2_``) for a CLIP text-encoder module path."""
    if not path.startswith("text_model."):
        path = "text_model." + path
    return prefix + path.replace(".", "_")


def sgm_path(path: str, layers_per_block: int) -> str:
    """The original-SD (SGM) name of a diffusers UNet module path; other paths come back unchanged.

    Input block n counts the conv_in (0), then per down block its layers and its downsampler;
    output blocks count per up block its layers + 1, the upsampler sitting in the last of them.
    """
    per_down = layers_per_block + 1
    per_up = layers_per_block + 1
    match = re.match(r"down_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)", path)
    if match:
        block, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        index = 1 + block * per_down + layer
        return f"input_blocks.{index}.{1 if kind == 'attentions' else 0}.{_resnet_rest(kind, rest)}"
    match = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv(.*)", path)
    if match:
        return f"input_blocks.{(int(match[1]) + 1) * per_down}.0.op{match[2]}"
    match = re.match(r"mid_block\.(attentions|resnets)\.(\d+)\.(.+)", path)
    if match:
        kind, layer, rest = match[1], int(match[2]), match[3]
        index = 1 if kind == "attentions" else 2 * layer
        return f"middle_block.{index}.{_resnet_rest(kind, rest)}"
    match = re.match(r"up_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)", path)
    if match:
        block, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        return f"output_blocks.{block * per_up + layer}.{1 if kind == 'attentions' else 0}.{_resnet_rest(kind, rest)}"
    if path.startswith("up_blocks.") and ".upsamplers." in path:
        # Its SGM index depends on whether the up block has attentions; nothing writes it yet.
        raise ValueError(f"No SGM name is known here for the upsampler {path!r}.")
    return path


def _resnet_rest(kind: str, rest: str) -> str:
    if kind != "resnets":
        return rest
    head, _, tail = rest.partition(".")
    mapped = _RESNET_PARTS.get(head, head)
    return f"{mapped}.{tail}" if tail else mapped
