"""Applying LoRAs to a loaded pipeline: cached tensors, resident adapters, exact fuse and restore.

- ``LoraTensorCache`` keeps LoRA files' tensors in CPU memory (least recently used dropped past a
  byte budget), so using a LoRA again costs no disk read.
- ``PipelineAdapters`` keeps up to N adapters loaded on one pipeline's UNet and text encoders
  (peft, through diffusers' ``load_lora_weights``; least recently used deleted), and makes a job's
  set active: each adapter's scale set to its weight, then its delta merged into the base weights in
  place, so sampling runs at base speed. peft's layers keep their adapters disabled and never merged
  in peft's bookkeeping: their forward is their base layer's, in one state whichever LoRAs are merged,
  so a torch.compile'd UNet sees no change and does not recompile (app.engine.speed). Before merging it
  copies the weights it is about to change; restoring copies them back, so the base model comes back
  bit for bit (unmerging by subtraction would not).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import load_file

from app.engine.lora_files import (
    FAMILY_LABELS,
    LoraFormatError,
    LoraInfo,
    check_supported,
    fold_adapter_alphas,
    inspect_lora,
)

log = logging.getLogger(__name__)

LORA_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


def file_key(path: Path) -> tuple[str, int, int]:
    """Identity of one version of a file: a LoRA edited on disk is read again."""
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size


class LoraTensorCache:
    """LoRA state dicts in CPU memory, bounded by bytes; thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int], dict[str, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.disk_reads = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, path: Path) -> dict[str, torch.Tensor]:
        key = file_key(path)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        state = load_file(str(path), device="cpu")
        check_supported(list(state), Path(path).name)
        with safe_open(str(path), framework="pt") as handle:
            adapter_metadata = (handle.metadata() or {}).get("lora_adapter_metadata")
        if adapter_metadata:
            state = fold_adapter_alphas(state, adapter_metadata)
        size = sum(t.numel() * t.element_size() for t in state.values())
        with self._lock:
            self.disk_reads += 1
            self._items[key] = state
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= sum(t.numel() * t.element_size() for t in dropped.values())
        return state


@dataclass(frozen=True)
class ActiveLora:
    """One LoRA of a job, resolved: its file, facts and weight."""

    name: str
    path: Path
    info: LoraInfo
    weight: float


class PipelineAdapters:
    """The adapters loaded on one pipeline's modules, and which of them are fused in now.

    Adapters are loaded and deleted through diffusers; switching works on peft's layers directly
    (``set_scale``, ``merge``, ``unmerge``, ``enable_adapters``), over a list of the LoRA layers kept
    per adapter, so a swap does not walk every module of the pipeline. All calls come from the
    worker thread (one job at a time), so there is no locking here.
    """

    def __init__(self, pipe: DiffusionPipeline, cache: LoraTensorCache, max_adapters: int, family: str,
                 model_label: str) -> None:
        self.pipe = pipe
        self.cache = cache
        self.max_adapters = max(1, max_adapters)
        self.family = family
        self.model_label = model_label
        self._loaded: OrderedDict[tuple[str, int, int], str] = OrderedDict()  # file version -> adapter name
        self._layers: dict[str, list[BaseTunerLayer]] = {}  # adapter name -> its LoRA layers
        self._fused: tuple[tuple[str, float], ...] = ()
        self._saved_weights: dict[torch.nn.Parameter, torch.Tensor] = {}
        self._disabled: set[int] = set()  # id(layer) of layers whose adapters are off; emptied when diffusers loads/deletes
        self.loads = 0
        # Told which layers' weights changed after each swap (fused QKV projections copy them again).
        self.on_weights_changed: Callable[[list[torch.nn.Module]], None] | None = None

    # ----- public ------------------------------------------------------------------------
    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._loaded.values())

    @property
    def active(self) -> tuple[tuple[str, float], ...]:
        return self._fused

    def activate(self, loras: Sequence[ActiveLora]) -> None:
        """Make exactly ``loras`` (with their weights) active; an empty list restores the base."""
        for lora in loras:
            if not lora.info.fits(self.family):
                raise ValueError(
                    f"LoRA {lora.name!r} is for {lora.info.family_label}; the checkpoint {self.model_label} is "
                    f"{FAMILY_LABELS.get(self.family, self.family)}. Pick a LoRA made for this model.")
        wanted_keys = [file_key(lora.path) for lora in loras]
        target = tuple((self._loaded.get(key, ""), lora.weight) for key, lora in zip(wanted_keys, loras))
        if target == self._fused and all(name for name, _ in target):
            for key in wanted_keys:
                self._loaded.move_to_end(key)
            return
        restored = self._restore()
        names = [self._ensure_loaded(lora, key, keep=wanted_keys) for key, lora in zip(wanted_keys, loras)]
        fused_layers = list({id(layer): layer for name in names for layer in self._layers[name]}.values())
        # Every layer runs its base layer only (adapters disabled): the job's LoRAs are merged into it.
        self._disable_adapters()
        if names:
            self._save_weights(fused_layers)
            with torch.no_grad():
                for name, lora in zip(names, loras):
                    for layer in self._layers[name]:
                        layer.set_scale(name, lora.weight)  # weight * alpha / rank
                for layer in fused_layers:
                    for name in names:
                        if name in layer.lora_A:
                            _merge_into_base(layer, name)
            self._fused = tuple(zip(names, (lora.weight for lora in loras)))
        self._notify(restored + fused_layers)

    def restore_base(self) -> None:
        """Copy back the exact base weights saved before merging: subtracting the merged delta would
        leave rounding errors behind."""
        self._notify(self._restore())

    # ----- internals ---------------------------------------------------------------------
    def _restore(self) -> list[BaseTunerLayer]:
        if not self._fused:
            return []
        layers = list({id(layer): layer for name, _ in self._fused for layer in self._layers[name]}.values())
        with torch.no_grad():
            for layer in layers:
                for parameter in _base_parameters(layer):
                    parameter.copy_(self._saved_weights[parameter])
        self._fused = ()
        return layers

    def _notify(self, layers: list[BaseTunerLayer]) -> None:
        if layers and self.on_weights_changed is not None:
            self.on_weights_changed(list(layers))

    def _disable_adapters(self) -> None:
        """Turn off the adapters of every wrapped layer not yet turned off (peft wraps a layer with its adapters
        on): each runs its base layer, into which the job's LoRAs are merged."""
        for layer in {id(layer): layer for group in self._layers.values() for layer in group}.values():
            if id(layer) not in self._disabled:
                layer.enable_adapters(False)
                self._disabled.add(id(layer))

    def _ensure_loaded(self, lora: ActiveLora, key: tuple[str, int, int], keep: list) -> str:
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        while len(self._loaded) >= self.max_adapters:
            victim = next((k for k in self._loaded if k not in keep), None)
            if victim is None:
                break
            self._delete(self._loaded.pop(victim))
        name = "lora_" + hashlib.sha1(repr(key).encode()).hexdigest()[:12]
        state = self.cache.get(lora.path)
        self._disabled.clear()
        try:
            with _quiet_loading():
                self.pipe.load_lora_weights(dict(state), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as exc:
            self._delete(name)
            raise ValueError(f"LoRA {lora.name!r} does not fit the checkpoint {self.model_label}: "
                             f"{_first_line(exc)}") from exc
        layers = [module for module in self._modules()
                  if isinstance(module, BaseTunerLayer) and name in getattr(module, "lora_A", {})]
        if len(layers) != lora.info.layers:
            self._delete(name)
            raise ValueError(f"LoRA {lora.name!r}: only {len(layers)} of its {lora.info.layers} layers match the "
                             f"checkpoint {self.model_label}; it was made for another model.")
        self.loads += 1
        self._loaded[key] = name
        self._layers[name] = layers
        log.info("LoRA %s loaded as adapter %s (%d layers)", lora.name, name, len(layers))
        return name

    def _delete(self, name: str) -> None:
        self._layers.pop(name, None)
        self._disabled.clear()
        with contextlib.suppress(Exception):  # a half-loaded adapter may be missing from some components
            self.pipe.delete_adapters(name)

    def _modules(self) -> Iterator[torch.nn.Module]:
        for component in LORA_COMPONENTS:
            model = getattr(self.pipe, component, None)
            if model is not None:
                yield from model.modules()

    def layer_count(self, name: str) -> int:
        """How many layers of the pipeline carry adapter ``name``."""
        return len(self._layers.get(name, ()))

    def _save_weights(self, layers) -> None:
        """Copy the base weights of ``layers`` once; the copies stay for later swaps (base weights never
        change), so a swap copies weights back but does not clone them again."""
        with torch.no_grad():
            for layer in layers:
                for parameter in _base_parameters(layer):
                    if parameter not in self._saved_weights:
                        self._saved_weights[parameter] = parameter.detach().clone()


def _merge_into_base(layer: BaseTunerLayer, name: str) -> None:
    """Add adapter ``name``'s delta (at its scale) to the base layer's weights in place, as peft's
    ``merge`` does, but leaving peft's bookkeeping (``merged_adapters``) untouched."""
    base = layer.get_base_layer()
    if name in getattr(layer, "lora_variant", {}):  # DoRA and other variants merge their own way
        layer.lora_variant[name].merge_unsafe(layer, name, base.weight)
    else:
        base.weight.data += layer.get_delta_weight(name).to(base.weight.dtype)
    if getattr(layer, "lora_bias", {}).get(name) and base.bias is not None:
        base.bias.data += (layer.lora_B[name].bias * layer.scaling[name]).to(base.bias.dtype)


def _base_parameters(layer: BaseTunerLayer) -> list[torch.nn.Parameter]:
    base = layer.get_base_layer()
    return [p for p in (base.weight, getattr(base, "bias", None)) if p is not None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers prints a long load report per text-encoder adapter, diffusers says when a LoRA has
    no text-encoder part, and peft warns that a model gets a second adapter: none of it is news here
    (several resident adapters are the design; a LoRA that does not fit raises, and is checked by count)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity(), diffusers_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield
    finally:
        hf_logging.set_verbosity(previous[0])
        diffusers_logging.set_verbosity(previous[1])


__all__ = ["ActiveLora", "LoraFormatError", "LoraTensorCache", "PipelineAdapters", "file_key", "inspect_lora"]
