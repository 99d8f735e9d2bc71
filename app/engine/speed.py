"""Speed settings, applied once to a loaded pipeline: torch.compile of the UNet and the VAE decoder,
channels_last memory format, and diffusers' own fused QKV projections.

Shapes. Graphs are compiled static (``dynamic=False``): inductor specialises its kernels (and, in the
CUDA-graph modes, its graphs) to exact sizes, and a dynamic graph would be slower at every size to
spare a compile at some. Each shape compiles once and is then reused by every later job of that
shape; dynamo's recompile limit is raised to ``RECOMPILE_LIMIT`` so that a server's sizes are not
dropped back to eager after the 8th. The batch is bucketed: hooks around the compiled module pad its
batch up to the next power of two with copies of the last item and slice the output back, so 3
images (6 UNet rows with CFG) reuse the graph of 4 (8). Each item goes through SD's UNet and VAE on
its own (convolutions, GroupNorm and attention are per item), so padding changes no picture beyond a
kernel's summation order. Spatial sizes are not padded: a padded latent would change the picture.
The hooks are left out of the compiled region (``torch.compiler.disable``), so the graph sees bucket
sizes only.

LoRA. The LoRA runtime merges a job's LoRAs into the weights in place and copies the base back in
place; every Parameter object stays the same and peft's layers keep one state, so dynamo's guards
see no change and a swap compiles nothing. ``fuse_qkv_projections`` builds ``to_qkv``/``to_kv`` from
copies of ``to_q``/``to_k``/``to_v``; ``FusedProjections.refresh`` copies the merged weights into them
after each swap (in place again), so LoRAs on attention keep their effect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.models.attention_processor import Attention

from app.engine.config import COMPILE_MODES, EngineConfig

CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
_WITHOUT_CUDAGRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
RECOMPILE_LIMIT = 64  # compiled shapes kept per compiled function (dynamo's default is 8)


@dataclass(frozen=True)
class SpeedSettings:
    compile: bool = False
    compile_mode: str = "reduce-overhead"
    channels_last: bool = False
    fuse_qkv: bool = False
    backend: str = "inductor"  # tests count recompilations with "eager": dynamo's guards decide them

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"Unknown compile mode {self.compile_mode!r}; choose one of {', '.join(COMPILE_MODES)}.")

    @classmethod
    def from_config(cls, config: EngineConfig) -> SpeedSettings:
        return cls(compile=config.compile, compile_mode=config.compile_mode, channels_last=config.channels_last,
                   fuse_qkv=config.fuse_qkv, backend=config.compile_backend)

    @property
    def any(self) -> bool:
        return self.compile or self.channels_last or self.fuse_qkv


def bucket(size: int) -> int:
    """The batch a compiled module runs for ``size`` items: the next power of two."""
    return 1 << max(0, size - 1).bit_length()


class BatchBuckets:
    """Pads a module's batch to ``bucket(n)`` before its forward and slices the output back to n."""

    def __init__(self, module: torch.nn.Module, clone_output: bool) -> None:
        self.clone_output = clone_output  # CUDA graphs overwrite their outputs at the next replay
        self._sizes: list[int] = []
        self.handles = [module.register_forward_pre_hook(self._pad, with_kwargs=True),
                        module.register_forward_hook(self._slice, always_call=True)]

    @torch.compiler.disable
    def _pad(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        sample = args[0] if args else kwargs["sample"]
        size = sample.shape[0]
        self._sizes.append(size)
        target = bucket(size)
        return None if target == size else (_pad_items(args, size, target), _pad_items(kwargs, size, target))

    @torch.compiler.disable
    def _slice(self, module: torch.nn.Module, args: tuple, output: Any) -> Any:
        size = self._sizes.pop()
        if bucket(size) == size and not self.clone_output:
            return None
        return _slice_items(output, size, bucket(size))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _pad_items(value: Any, size: int, target: int) -> Any:
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 or value.shape[0] != size:
            return value
        return torch.cat([value, value[-1:].expand(target - size, *value.shape[1:])])
    if isinstance(value, dict):
        return {key: _pad_items(item, size, target) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_pad_items(item, size, target) for item in value)
    return value


def _slice_items(value: Any, size: int, target: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[:size].clone() if value.ndim and value.shape[0] == target else value
    if dataclasses.is_dataclass(value):  # diffusers' BaseOutput
        return dataclasses.replace(value, **{f.name: _slice_items(getattr(value, f.name), size, target)
                                             for f in dataclasses.fields(value)})
    if isinstance(value, (list, tuple)):
        return type(value)(_slice_items(item, size, target) for item in value)
    return value


class FusedProjections:
    """diffusers' fused ``to_qkv`` (self-attention) and ``to_kv`` (cross-attention) of a model, kept
    equal to the ``to_q``/``to_k``/``to_v`` weights they were built from."""

    def __init__(self, model: torch.nn.Module) -> None:
        model.fuse_qkv_projections()
        self._by_source: dict[torch.nn.Module, list[Attention]] = {}
        self.attentions = [m for m in model.modules() if isinstance(m, Attention) and _fused_parts(m)]
        for attention in self.attentions:
            for source in _fused_parts(attention)[1]:
                self._by_source.setdefault(_base(source), []).append(attention)

    def refresh(self, changed: Iterable[torch.nn.Module] | None = None) -> int:
        """Copy the current q/k/v weights into the fused layers fed by ``changed`` layers (None: all);
        in place, so the compiled graph keeps its parameters. Returns how many attentions were refreshed."""
        if changed is None:
            targets = self.attentions
        else:
            targets = list({id(a): a for layer in changed for a in self._by_source.get(_base(layer), ())}.values())
        with torch.no_grad():
            for attention in targets:
                fused, sources = _fused_parts(attention)
                fused.weight.copy_(torch.cat([_base(s).weight for s in sources]))
                if fused.bias is not None:
                    fused.bias.copy_(torch.cat([_base(s).bias for s in sources]))
        return len(targets)


def _fused_parts(attention: Attention) -> tuple[torch.nn.Linear, tuple[torch.nn.Module, ...]] | None:
    if getattr(attention, "to_qkv", None) is not None:
        return attention.to_qkv, (attention.to_q, attention.to_k, attention.to_v)
    if getattr(attention, "to_kv", None) is not None:
        return attention.to_kv, (attention.to_k, attention.to_v)
    return None


def _base(layer: torch.nn.Module) -> torch.nn.Module:
    """The plain layer under a peft LoRA wrapper (the layer itself when it has none)."""
    return layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer


@dataclass
class SpeedState:
    """What ``apply_speed`` did to one pipeline's modules."""

    settings: SpeedSettings
    fused: FusedProjections | None = None
    buckets: list[BatchBuckets] = field(default_factory=list)

    def weights_changed(self, layers: Iterable[torch.nn.Module] | None = None) -> None:
        """Called by the LoRA runtime after it changed ``layers``' weights in place."""
        if self.fused is not None:
            self.fused.refresh(layers)


def apply_speed(pipe: DiffusionPipeline, settings: SpeedSettings) -> SpeedState:
    """Apply ``settings`` to the pipeline's UNet and VAE, in place (the variants built by ``from_pipe``
    share these modules). Call once, before any LoRA is loaded."""
    state = SpeedState(settings)
    if settings.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if settings.fuse_qkv:
        state.fused = FusedProjections(pipe.unet)
    if settings.compile:
        state.buckets.append(compile_module(pipe.unet, settings))
    state.buckets += speed_up_vae(pipe.vae, settings)
    return state


def speed_up_vae(vae: AutoencoderKL, settings: SpeedSettings) -> list[BatchBuckets]:
    """The settings on a VAE, in place: a checkpoint's own or one picked from models/VAE. No LoRA reaches
    a VAE, so its fused projections are never refreshed."""
    if settings.channels_last:
        vae.to(memory_format=torch.channels_last)
    if settings.fuse_qkv:
        vae.fuse_qkv_projections()
    if not settings.compile:
        return []
    return [compile_module(vae.decoder, _decoder_settings(vae, settings))]


def _decoder_settings(vae: AutoencoderKL, settings: SpeedSettings) -> SpeedSettings:
    """An fp16 VAE with ``force_upcast`` (SDXL's) is cast to fp32 by the pipeline for each decode: new weight
    tensors each time, which CUDA graphs would record again and again. Its decoder compiles without them."""
    if vae.dtype == torch.float16 and vae.config.get("force_upcast", False):
        return dataclasses.replace(settings, compile_mode=_WITHOUT_CUDAGRAPHS.get(settings.compile_mode,
                                                                                  settings.compile_mode))
    return settings


def compile_module(module: torch.nn.Module, settings: SpeedSettings) -> BatchBuckets:
    """``module.compile`` in place (the module object stays, so every pipeline sharing it runs the
    compiled graph) with static shapes and batch buckets."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    options = {"mode": settings.compile_mode} if settings.backend == "inductor" else {}
    module.compile(backend=settings.backend, dynamic=False, **options)
    return BatchBuckets(module, clone_output=settings.compile_mode in CUDAGRAPH_MODES)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (a recompilation adds one)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
