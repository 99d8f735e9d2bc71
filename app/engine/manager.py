"""Loaded pipelines, cached per (model, dtype, device), with txt2img / img2img / inpaint
variants built by ``from_pipe`` on one set of weights.

The manager is the one place that holds pipelines. Requests name the model they want; the
worker asks the manager for it, so no user's choice changes what another user gets.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    DiffusionPipeline,
)
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file
from transformers import CLIPTokenizer

from app.engine.conditioning import PromptEncoder
from app.engine.config import EngineConfig
from app.engine.face_restore import FaceRestorerLibrary
from app.engine.lora_runtime import LoraTensorCache, PipelineAdapters
from app.engine.registry import ModelEntry, ModelRegistry
from app.engine.speed import SpeedSettings, SpeedState, apply_speed, speed_up_vae
from app.engine.tokenizers import clip_tokenizer
from app.engine.upscalers import UpscalerLibrary

log = logging.getLogger(__name__)

TASKS = ("txt2img", "img2img", "inpaint")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ModelKey:
    name: str
    dtype: torch.dtype
    device: str


@dataclass
class LoadedModel:
    """One checkpoint on the device, with its task variants sharing its modules."""

    key: ModelKey
    entry: ModelEntry
    txt2img: DiffusionPipeline
    model_hash: str | None
    scheduler_config: dict = field(default_factory=dict)  # as loaded; samplers are built from it
    adapters: PipelineAdapters | None = None  # LoRAs on this model's modules (shared by every variant)
    prompt_encoder: PromptEncoder | None = None  # A1111 prompts -> conditioning, with its cache
    speed: SpeedState | None = None  # compile / channels_last / fused QKV, applied once at load (app.engine.speed)
    _variants: dict[tuple[str, str | None], DiffusionPipeline] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return pipeline_family(self.txt2img)

    @property
    def is_inpainting_model(self) -> bool:
        """True for 9-channel inpainting checkpoints (image + mask conditioning)."""
        return self.txt2img.unet.config.in_channels == 9

    @property
    def card(self) -> dict:
        return self.entry.card()

    def pipeline(self, task: str, vae: AutoencoderKL | None = None, vae_name: str | None = None) -> DiffusionPipeline:
        """The pipeline for ``task``, sharing this model's modules (built once, then cached)."""
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}.")
        key = (task, vae_name)
        if key not in self._variants:
            overrides = {"vae": vae} if vae is not None else {}
            if task == "txt2img":
                built = self.txt2img if not overrides else type(self.txt2img).from_pipe(self.txt2img, **overrides)
            elif task == "img2img":
                built = AutoPipelineForImage2Image.from_pipe(self.txt2img, **overrides)
            else:
                built = AutoPipelineForInpainting.from_pipe(self.txt2img, **overrides)
            built.set_progress_bar_config(disable=True)
            self._variants[key] = built
        return self._variants[key]


def pipeline_family(pipe: DiffusionPipeline) -> str:
    """"sdxl", "sd2" or "sd1" (SD 2.x pads its prompts with "!", SD 1.x with end-of-text)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    tokenizer = getattr(pipe, "tokenizer", None)
    return "sd2" if tokenizer is not None and tokenizer.pad_token == "!" else "sd1"


def read_pipeline(entry: ModelEntry, dtype: torch.dtype, *, allow_pickle: bool = False) -> DiffusionPipeline:
    """A checkpoint as a pipeline on the CPU: diffusers folder, single file (offline configs) or hub id.
    The manager uses it for inference; the trainer for its base model."""
    if entry.kind == "diffusers":
        assert entry.path is not None
        return DiffusionPipeline.from_pretrained(entry.path, dtype=dtype, local_files_only=True,
                                                 **_no_safety_checker(entry.path))
    if entry.kind in ("single_file", "pickle"):
        from app.engine.checkpoints import load_single_file

        assert entry.path is not None
        return load_single_file(entry.path, torch_dtype=dtype, allow_pickle=allow_pickle)
    return _load_from_hub(entry.name, dtype)


class ModelManager:
    """Loads checkpoints on demand and keeps up to ``max_resident_models`` of them."""

    def __init__(self, config: EngineConfig, registry: ModelRegistry) -> None:
        self.config = config
        self.registry = registry
        self.device = config.resolved_device()
        self.dtype = config.resolved_dtype()
        self._models: OrderedDict[ModelKey, LoadedModel] = OrderedDict()
        self._vaes: OrderedDict[tuple[str, str], AutoencoderKL] = OrderedDict()
        self._tokenizers: dict[tuple[str, str], CLIPTokenizer] = {}  # of models not loaded, for token counts
        self._lock = threading.RLock()
        self.lora_cache = LoraTensorCache(config.lora_cache_mb * 2**20)
        self.upscalers = UpscalerLibrary(config.models_dir, allow_pickle=config.allow_pickle, device=self.device,
                                         dtype=self.dtype)
        self.face_restorers = FaceRestorerLibrary(config.models_dir, allow_pickle=config.allow_pickle,
                                                  device=self.device, dtype=self.dtype)

    def resident(self) -> list[ModelKey]:
        with self._lock:
            return list(self._models)

    def get(self, name: str | None) -> LoadedModel:
        """The loaded model called ``name`` (None = the default model), loading it if needed."""
        name = name or self.config.default_model
        if not name:
            raise ValueError("No model was chosen and there is no default model.")
        entry = self.registry.find_checkpoint(name)
        key = ModelKey(entry.name, self.dtype, str(self.device))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            while len(self._models) >= max(1, self.config.max_resident_models):
                self._evict_oldest()
            pipe = self._load(entry)
            loaded = LoadedModel(key, entry, pipe, self.registry.short_hash(entry), dict(pipe.scheduler.config))
            loaded.adapters = PipelineAdapters(pipe, self.lora_cache, self.config.max_loaded_loras, loaded.family,
                                               entry.name)
            loaded.speed = self._apply_speed(pipe, loaded.adapters)
            loaded.prompt_encoder = PromptEncoder(pipe, loaded.family)
            self._models[key] = loaded
            return loaded

    def resident_text_encoder_widths(self, name: str) -> tuple[int, ...] | None:
        """The text encoders' widths of a loaded checkpoint (None when it is not loaded)."""
        with self._lock:
            for key, loaded in self._models.items():
                if key.name == name and loaded.prompt_encoder is not None:
                    return loaded.prompt_encoder.widths
        return None

    def tokenizer(self, name: str | None) -> CLIPTokenizer:
        """A copy of a checkpoint's (first) tokenizer, for counting prompt tokens from the UI's threads
        without loading the model or sharing the worker's tokenizer: a diffusers folder's own, else SD's
        CLIP vocabulary (every SD family uses it)."""
        entry = self.registry.find_checkpoint(name or self.config.default_model or "")
        with self._lock:
            cache_key = ("tokenizer", entry.name)
            if cache_key not in self._tokenizers:
                folder = entry.path / "tokenizer" if entry.kind == "diffusers" and entry.path is not None else None
                if folder is not None and (folder / "vocab.json").is_file():
                    self._tokenizers[cache_key] = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
                else:
                    self._tokenizers[cache_key] = clip_tokenizer()
            return self._tokenizers[cache_key]

    def vae(self, entry: ModelEntry, like: AutoencoderKL) -> AutoencoderKL:
        """A VAE from models/VAE (found by the caller), built with the same config as ``like``, with the
        speed settings the checkpoints' own VAEs get."""
        key = (entry.name, str(like.dtype))
        with self._lock:
            if key not in self._vaes:
                if len(self._vaes) >= 2:
                    self._vaes.popitem(last=False)
                vae = self._load_vae(entry, like)
                speed_up_vae(vae, SpeedSettings.from_config(self.config))
                self._vaes[key] = vae
            return self._vaes[key]

    def unload_all(self) -> None:
        with self._lock:
            while self._models:
                self._evict_oldest()
            self._vaes.clear()
        self.upscalers.unload()
        self.face_restorers.unload()
        free_device_memory()

    # ----- loading -------------------------------------------------------------------------
    def _evict_oldest(self) -> None:
        key, _ = self._models.popitem(last=False)
        log.info("unloading %s to make room", key.name)
        free_device_memory()

    def _load(self, entry: ModelEntry) -> DiffusionPipeline:
        log.info("loading %s (%s) on %s as %s", entry.name, entry.kind, self.device, self.dtype)
        try:
            pipe = self._read(entry)
        except (ValueError, ModelLoadError):
            raise
        except Exception as exc:  # diffusers/transformers raise many kinds; say which model failed
            raise ModelLoadError(f"Could not load the model {entry.name!r}: {exc}") from exc
        pipe.to(self.device)
        self._set_attention(pipe)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _apply_speed(self, pipe: DiffusionPipeline, adapters: PipelineAdapters) -> SpeedState | None:
        """The speed settings, once per loaded model: its task variants share the modules changed here."""
        settings = SpeedSettings.from_config(self.config)
        if not settings.any:
            return None
        state = apply_speed(pipe, settings)
        adapters.on_weights_changed = state.weights_changed
        return state

    def _read(self, entry: ModelEntry) -> DiffusionPipeline:
        return read_pipeline(entry, self.dtype, allow_pickle=self.config.allow_pickle)

    def _load_vae(self, entry: ModelEntry, like: AutoencoderKL) -> AutoencoderKL:
        assert entry.path is not None
        if entry.path.is_dir():
            vae = AutoencoderKL.from_pretrained(entry.path, dtype=like.dtype, local_files_only=True)
        elif entry.kind == "pickle":
            raise ValueError(f"VAE {entry.name!r} is a pickle file; convert it to .safetensors.")
        else:
            state = load_file(entry.path)
            if any(k.startswith("first_stage_model.") for k in state):
                state = {k.removeprefix("first_stage_model."): v for k, v in state.items()}
            if any(k.startswith("encoder.down.") for k in state):  # original (A1111) layout
                state = convert_ldm_vae_checkpoint(state, dict(like.config))
            vae = AutoencoderKL.from_config(like.config)
            missing, unexpected = vae.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(
                    f"VAE {entry.name!r} does not fit this model: {len(missing)} weights missing "
                    f"(for example {missing[0]})."
                )
            vae = vae.to(dtype=like.dtype)
        return vae.to(like.device)

    def _set_attention(self, pipe: DiffusionPipeline) -> None:
        if self.config.attention == "xformers":
            if self.device.type != "cuda":
                raise ValueError("xformers attention needs a CUDA device; use --attention sdpa.")
            try:
                pipe.enable_xformers_memory_efficient_attention()
            except Exception as exc:  # not installed or not built for this GPU
                raise ValueError(f"xformers attention is not available here ({exc}); use --attention sdpa.") from exc


def _no_safety_checker(path: Path) -> dict:
    """A1111 runs without the safety checker; drop it where the folder declares one."""
    index = path / "model_index.json"
    if index.is_file() and '"safety_checker"' in index.read_text(encoding="utf-8"):
        return {"safety_checker": None, "requires_safety_checker": False}
    return {}


def _load_from_hub(repo_id: str, dtype: torch.dtype) -> DiffusionPipeline:
    try:
        return DiffusionPipeline.from_pretrained(repo_id, dtype=dtype)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        offline_markers = ("offline", "outgoing traffic has been disabled", "Connection", "resolve", "Max retries",
                           "LocalEntryNotFound", "NameResolution", "Network")
        if any(marker.lower() in text.lower() for marker in offline_markers):
            raise ModelLoadError(
                f"Could not download {repo_id!r} from the Hugging Face Hub: this machine cannot reach it "
                "(offline, or the hub is blocked). Download the model elsewhere and put it in "
                "models/Stable-diffusion/ (a diffusers folder or a single .safetensors file)."
            ) from exc
        raise ModelLoadError(f"Could not load {repo_id!r} from the Hugging Face Hub: {exc}") from exc


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()
