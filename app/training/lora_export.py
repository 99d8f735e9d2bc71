"""Writing a trained LoRA as the kohya ``.safetensors`` file A1111, ComfyUI, Forge and diffusers load.

Keys: ``lora_unet_<path>`` (SGM block names for SDXL), ``lora_te_`` / ``lora_te1_`` / ``lora_te2_``;
``.lora_down.weight`` / ``.lora_up.weight`` in fp16 and ``.alpha`` equal to the real alpha; kohya's
``ss_*`` metadata with ``sshs_model_hash`` / ``sshs_legacy_hash`` computed as kohya does, and
``modelspec.*``. Nothing but LoRA tensors (see shared/reference/formats.md, part B 2.4).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save as save_bytes

from app.engine.lora_keys import TEXT_ENCODER_PREFIXES, kohya_text_encoder_name, kohya_unet_name

BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURE = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512", "sdxl": "stable-diffusion-xl-v1-base"}


def kohya_tensors(component_states: dict[str, dict[str, torch.Tensor]], alphas: dict[str, float], family: str,
                  layers_per_block: int, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """kohya tensors from peft state dicts per component (``get_peft_model_state_dict`` keys,
    ``<module path>.lora_A.weight``); ``alphas`` holds each component's ``lora_alpha``, or a
    module-path-specific one under ``component:path``."""
    te_prefixes = TEXT_ENCODER_PREFIXES[family]
    tensors: dict[str, torch.Tensor] = {}
    for component, state in component_states.items():
        for key, down in state.items():
            if not key.endswith(".lora_A.weight"):
                continue
            path = key[: -len(".lora_A.weight")]
            up = state[f"{path}.lora_B.weight"]
            if component == "unet":
                name = kohya_unet_name(path, family, layers_per_block)
            else:
                prefix = te_prefixes[1] if component == "text_encoder_2" else te_prefixes[0]
                name = kohya_text_encoder_name(path, prefix)
            alpha = alphas.get(f"{component}:{path}", alphas[component])
            tensors[f"{name}.lora_down.weight"] = down.detach().to("cpu", dtype).contiguous()
            tensors[f"{name}.lora_up.weight"] = up.detach().to("cpu", dtype).contiguous()
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    return tensors


def kohya_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as kohya computes them: the file serialised with only the
    ``ss_*`` metadata; sha256 of the bytes after its header, and the first 8 hex digits of the sha256
    of 64 KiB read at offset 1 MiB."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = save_bytes(tensors, ss_only)
    buffer = io.BytesIO(data)
    header_size = int.from_bytes(buffer.read(8), "little")
    buffer.seek(8 + header_size)
    model_hash = hashlib.sha256(buffer.read()).hexdigest()
    buffer.seek(0x100000)
    legacy_hash = hashlib.sha256(buffer.read(0x10000)).hexdigest()[:8]
    return model_hash, legacy_hash


def kohya_metadata(*, family: str, prediction_type: str, rank: int, alpha: float, conv_rank: int, conv_alpha: float,
                   resolution: int, steps: int, epochs: int, output_name: str, base_model_name: str,
                   tag_frequency: dict[str, dict[str, int]], num_images: int, learning_rate: float,
                   text_encoder_lr: float | None, train_text_encoder: bool, seed: int, started: float,
                   finished: float, extra: dict[str, str] | None = None) -> dict[str, str]:
    """kohya's ``ss_*`` fields and ModelSpec 1.0.1 fields, all as strings."""
    network_args = {"conv_dim": str(conv_rank), "conv_alpha": str(conv_alpha)} if conv_rank else {}
    version = BASE_MODEL_VERSION[family] + ("_v" if family == "sd2" and prediction_type == "v_prediction" else "")
    architecture = ARCHITECTURE[family]
    if family == "sd2" and prediction_type == "v_prediction":
        architecture = "stable-diffusion-v2-768-v"
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": f"{alpha:g}",
        "ss_network_args": json.dumps(network_args),
        "ss_base_model_version": version,
        "ss_v2": str(family == "sd2"),
        "ss_sd_model_name": base_model_name,
        "ss_output_name": output_name,
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_steps": str(steps),
        "ss_epoch": str(epochs),
        "ss_num_train_images": str(num_images),
        "ss_learning_rate": f"{learning_rate:g}",
        "ss_unet_lr": f"{learning_rate:g}",
        "ss_text_encoder_lr": f"{(text_encoder_lr or learning_rate) if train_text_encoder else 0:g}",
        "ss_network_train_unet_only": str(not train_text_encoder),
        "ss_seed": str(seed),
        "ss_tag_frequency": json.dumps(tag_frequency),
        "ss_training_started_at": f"{started:.3f}",
        "ss_training_finished_at": f"{finished:.3f}",
        "ss_training_comment": "trained by LoRA Studio",
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": f"{architecture}/lora",
        "modelspec.implementation": ("https://github.com/Stability-AI/generative-models" if family == "sdxl"
                                     else "diffusers"),
        "modelspec.title": output_name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": dt.datetime.fromtimestamp(finished, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.prediction_type": "v" if prediction_type == "v_prediction" else "epsilon",
    }
    metadata.update(extra or {})
    return metadata


def tag_frequency(captions_by_folder: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """kohya's ``ss_tag_frequency``: per dataset folder, how often each comma-separated tag appears."""
    result: dict[str, dict[str, int]] = {}
    for folder, captions in captions_by_folder.items():
        counts: dict[str, int] = {}
        for caption in captions:
            for tag in (t.strip() for t in caption.split(",")):
                if tag:
                    counts[tag] = counts.get(tag, 0) + 1
        result[folder] = counts
    return result


def write_lora_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write atomically (temp file, then rename) with the kohya hashes added to ``metadata``."""
    model_hash, legacy_hash = kohya_hashes(tensors, metadata)
    full = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".writing-", suffix=".safetensors", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(save_bytes(tensors, full))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
