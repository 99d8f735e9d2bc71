"""Engine settings, built once by launch.py (or a test) and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

DeviceChoice = Literal["auto", "cpu", "cuda", "mps"]
DtypeChoice = Literal["auto", "fp32", "fp16", "bf16"]
AttentionChoice = Literal["sdpa", "xformers"]
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
RNG_SOURCES = ("cpu", "gpu")  # A1111's "CPU" and "GPU" (its default) random number generator sources

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class EngineConfig:
    models_dir: Path = Path("models")
    outputs_dir: Path = Path("outputs")
    default_model: str | None = None  # registry name, path given at launch, or hub id
    device: DeviceChoice = "auto"
    dtype: DtypeChoice = "auto"
    attention: AttentionChoice = "sdpa"
    max_resident_models: int = 1  # pipelines kept loaded on the device
    preview_every: int = 2  # a live preview every N sampling steps; 0 = none
    allow_pickle: bool = False  # load .ckpt/.pt checkpoints (with torch.load(weights_only=True))
    extra_checkpoints: tuple[Path, ...] = field(default_factory=tuple)
    lora_cache_mb: int = 1024  # LoRA tensors kept in CPU memory, least recently used dropped first
    max_loaded_loras: int = 8  # adapters kept on each loaded pipeline
    max_queue_per_user: int = 20  # jobs one owner may have queued or running; the next is refused
    max_queue: int = 200  # jobs waiting for the worker, all owners together; the next is refused
    batch_requests: int = 1  # queued txt2img jobs of one model, size, sampler and steps drawn as one batch; 1 = off
    compile: bool = False  # torch.compile the UNet and VAE decoder (app.engine.speed): static shapes, batch buckets
    compile_mode: str = "reduce-overhead"  # one of COMPILE_MODES
    channels_last: bool = False  # UNet and VAE in channels_last memory format
    fuse_qkv: bool = False  # diffusers' fused QKV projections (kept in step with LoRA swaps)
    compile_backend: str = "inductor"  # torch.compile backend (tests count recompilations with "eager")
    rng: str = "cpu"  # A1111's "Random number generator source": "cpu" (the same noise on any device) or "gpu"

    def __post_init__(self) -> None:
        if self.max_queue_per_user < 1 or self.max_queue < 1:
            raise ValueError("The queue limits (--max-queue-per-user, --max-queue) must be at least 1.")
        if self.batch_requests < 1:
            raise ValueError("--batch-requests must be at least 1 (1: each job drawn alone).")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"--compile-mode {self.compile_mode!r} is not one of {', '.join(COMPILE_MODES)}.")
        if self.rng not in RNG_SOURCES:
            raise ValueError(f"--rng {self.rng!r} is not one of {', '.join(RNG_SOURCES)}.")
        if self.fuse_qkv and self.attention == "xformers":
            raise ValueError("--fuse-qkv uses diffusers' fused SDPA attention; it cannot go with --attention xformers.")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA device.")
        if self.device == "mps" and not torch.backends.mps.is_available():
            raise ValueError("--device mps was asked for, but this machine has no MPS device.")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        """fp16 on CUDA/MPS and fp32 on the CPU unless asked otherwise."""
        if self.dtype != "auto":
            return _DTYPES[self.dtype]
        return torch.float32 if self.resolved_device().type == "cpu" else torch.float16


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}.get(dtype, str(dtype))
