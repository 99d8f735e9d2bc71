"""Random LoRAs for tiny pipelines, written in kohya or peft/diffusers format, and the hand merge
W + w * (alpha / rank) * up @ down that a correctly applied LoRA must equal."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from app.engine.lora_keys import TEXT_ENCODER_PREFIXES, kohya_text_encoder_name, kohya_unet_name

ATTENTION_PARTS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                   "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
TEXT_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


@dataclass
class LoraLayer:
    component: str  # "unet", "text_encoder", "text_encoder_2"
    path: str  # module path inside the component
    down: torch.Tensor
    up: torch.Tensor
    alpha: float


def random_layers(pipe, rank: int, alpha: float, *, seed: int = 0, text_encoder: bool = True, conv: bool = False,
                  scale: float = 0.2) -> list[LoraLayer]:
    """One random LoRA layer on every attention/MLP Linear (and resnet conv1 with ``conv``)."""
    generator = torch.Generator().manual_seed(seed)
    layers: list[LoraLayer] = []
    components = [("unet", pipe.unet)]
    if text_encoder:
        components += [(name, getattr(pipe, name)) for name in ("text_encoder", "text_encoder_2")
                       if getattr(pipe, name, None) is not None]
    for component, model in components:
        parts = ATTENTION_PARTS if component == "unet" else TEXT_PARTS
        for path, module in model.named_modules():
            wanted = path.endswith(parts) or (conv and component == "unet" and path.endswith("resnets.0.conv1"))
            if not wanted:
                continue
            if isinstance(module, torch.nn.Linear):
                down = torch.randn(rank, module.in_features, generator=generator) * scale
                up = torch.randn(module.out_features, rank, generator=generator) * scale
            elif isinstance(module, torch.nn.Conv2d):
                down = torch.randn(rank, module.in_channels, *module.kernel_size, generator=generator) * scale
                up = torch.randn(module.out_channels, rank, 1, 1, generator=generator) * scale
            else:
                continue
            layers.append(LoraLayer(component, path, down, up, alpha))
    return layers


def write_kohya(layers: list[LoraLayer], path: Path, family: str, layers_per_block: int,
                metadata: dict[str, str] | None = None, alpha_tensors: bool = True) -> Path:
    te_prefixes = TEXT_ENCODER_PREFIXES[family]
    tensors: dict[str, torch.Tensor] = {}
    for layer in layers:
        if layer.component == "unet":
            name = kohya_unet_name(layer.path, family, layers_per_block)
        else:
            prefix = te_prefixes[1] if layer.component == "text_encoder_2" else te_prefixes[0]
            name = kohya_text_encoder_name(layer.path, prefix)
        tensors[f"{name}.lora_down.weight"] = layer.down.contiguous()
        tensors[f"{name}.lora_up.weight"] = layer.up.contiguous()
        if alpha_tensors:
            tensors[f"{name}.alpha"] = torch.tensor(float(layer.alpha))
    save_file(tensors, str(path), metadata=metadata or {})
    return path


def write_peft(pipe, layers: list[LoraLayer], folder: Path) -> Path:
    """The diffusers/peft format as diffusers writes it: a peft adapter on a copy of the UNet, saved
    with ``save_lora_weights`` (keys ``unet.<path>.lora_A.weight``, alpha in the adapter metadata)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet_layers = [layer for layer in layers if layer.component == "unet"]
    unet = copy.deepcopy(pipe.unet)
    config = LoraConfig(r=unet_layers[0].down.shape[0], lora_alpha=unet_layers[0].alpha,
                        target_modules=[layer.path for layer in unet_layers], init_lora_weights=False)
    unet.add_adapter(config)
    with torch.no_grad():
        for layer in unet_layers:
            module = unet.get_submodule(layer.path)
            module.lora_A["default"].weight.copy_(layer.down)
            module.lora_B["default"].weight.copy_(layer.up)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                              unet_lora_adapter_metadata=config.to_dict(), safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


def hand_merged(pipe, loras: list[tuple[list[LoraLayer], float]]):
    """A deep copy of ``pipe`` (which must carry no adapters) with each LoRA merged into its weights."""
    merged = copy.deepcopy(pipe)
    with torch.no_grad():
        for layers, weight in loras:
            for layer in layers:
                module = getattr(merged, layer.component).get_submodule(layer.path)
                rank = layer.down.shape[0]
                delta = (layer.up.flatten(1) @ layer.down.flatten(1)).reshape(module.weight.shape)
                module.weight += weight * (layer.alpha / rank) * delta
    return merged
