"""Single-file checkpoints in the original (A1111 / civitai, "LDM" / "SGM") layout, offline.

``from_single_file`` needs a diffusers-format folder of configs for the checkpoint's family;
without one it goes to the Hub. This module ships one per family, without weights, in
``configs/<name>/`` (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/`` [+
``text_encoder_2/``] and ``scheduler/``), picks it from the checkpoint's keys and loads with
``local_files_only=True``:

=============  ==========================================================  ====================
folder         public config it was written from                           chosen for
=============  ==========================================================  ====================
sd1            runwayml/stable-diffusion-v1-5                              SD 1.x
sd1-inpaint    runwayml/stable-diffusion-inpainting (UNet in_channels 9)   SD 1.x inpainting
sd2-512        stabilityai/stable-diffusion-2-1-base (epsilon)             SD 2.x, epsilon
sd2-768-v      stabilityai/stable-diffusion-2-1 (v-prediction)             SD 2.x, v-prediction
sd2-inpaint    stabilityai/stable-diffusion-2-inpainting                   SD 2.x inpainting
sdxl-base      stabilityai/stable-diffusion-xl-base-1.0                    SDXL
sdxl-inpaint   diffusers/stable-diffusion-xl-1.0-inpainting-0.1            SDXL inpainting
=============  ==========================================================  ====================

Every scheduler config sets ``clip_sample: false`` (right for latents; it survives a switch to
DDIM). The folders hold no tokenizer: ``model_index.json`` lists the tokenizers, safety checker,
feature extractor and image encoder as null, and the loader passes tokenizers built by
``app.engine.tokenizers.clip_tokenizer`` (a forgotten tokenizer is then a loud error; transformers
5 would otherwise build a silent two-token tokenizer from a folder without tokenizer files).

Prediction type (``epsilon`` or ``v_prediction``), first rule that applies:

1. the caller's ``prediction_type`` argument;
2. an A1111 sidecar ``<checkpoint name>.yaml`` next to the file: ``parameterization: "v"``
   means v-prediction, any other sidecar means epsilon (LDM's default);
3. a ``v_pred`` key in the checkpoint (NoobAI-XL / ComfyUI / Forge convention);
4. safetensors metadata (SAI model spec, written by kohya's scripts): ``modelspec.prediction_type``
   (``v`` / ``epsilon``), else ``modelspec.architecture`` ``stable-diffusion-v2-768-v`` (any
   ``...-v``) for v-prediction or ``stable-diffusion-v2-512`` for epsilon;
5. SD 2.x only (512-base and 768-v have identical tensors): the file name. ``768``, ``v-pred`` /
   ``vpred`` / ``v_pred`` or a ``v`` word (``sd21-v``) mean v-prediction; ``512`` or ``base`` mean
   epsilon; an SD 2.x inpainting model is epsilon (the only official one is); otherwise
   v-prediction, because SD 2.1-768 is the base of most SD 2.x fine-tunes;
6. epsilon.

An inpainting checkpoint (9-channel UNet) is returned as the *inpainting* pipeline class
(``StableDiffusionInpaintPipeline`` / ``StableDiffusionXLInpaintPipeline``): diffusers' txt2img
classes load such a UNet but fail at the first step (they make 9-channel latents and then add the
UNet's 4-channel output to them). Text-to-image with an inpainting model is the inpainting
pipeline with a fully white mask over a mid-grey image at strength 1.0 (what A1111 does).

Pickles (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) are refused unless ``allow_pickle=True``. With it,
this module first reads the file itself with ``torch.load(weights_only=True)`` (a file that needs
any other Python object is refused before diffusers sees it), and diffusers 0.42.1 then loads it
with ``torch.load(..., weights_only=True)`` too (``diffusers.models.model_loading_utils.
load_state_dict``; the tests check every ``torch.load`` call).
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

log = logging.getLogger(__name__)

Family = Literal["sd1", "sd2", "sdxl"]

CONFIGS_DIR = Path(__file__).parent / "configs"
SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
PREDICTION_TYPES = ("epsilon", "v_prediction")

UNET_PREFIX = "model.diffusion_model."
UNET_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_REFINER_PREFIX = "conditioner.embedders.0.model."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model.transformer."
SD1_CLIP_PREFIX = "cond_stage_model.transformer.text_model."

_EXPECTED_LAYOUT = (
    "an SD 1.x, SD 2.x or SDXL checkpoint in the original (A1111/civitai) layout: UNet weights "
    f"under '{UNET_PREFIX}' and a text encoder under '{SD1_CLIP_PREFIX}' (SD 1.x), "
    f"'{SD2_OPENCLIP_PREFIX}' (SD 2.x) or '{SDXL_OPENCLIP_PREFIX}' (SDXL)"
)


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message names the file and what to do about it."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a single-file checkpoint is, read from its keys and shapes."""

    family: Family
    inpainting: bool
    prediction_type: str
    config_dir: Path


# ----- reading keys and shapes -------------------------------------------------------------------
def is_pickle(path: str | Path) -> bool:
    """True for the pickle suffixes (``.ckpt``, ``.pt``, ``.pth``, ``.bin``)."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def read_safetensors_header(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor names -> shapes, and the metadata, of a ``.safetensors`` file (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            metadata = dict(handle.metadata() or {})
    except Exception as exc:  # SafetensorError, OSError: a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable .safetensors file ({exc}).") from exc
    return shapes, metadata


def load_pickle_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a pickled checkpoint, read with ``torch.load(weights_only=True)``.

    Unwraps ``{"state_dict": ...}`` as diffusers does and memory-maps zip-format files. A pickle
    that needs anything but tensors and plain containers is refused with a CheckpointError.
    """
    path = Path(path)
    mmap = zipfile.is_zipfile(path)
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # pickle.UnpicklingError for forbidden globals, RuntimeError for junk
        raise CheckpointError(
            f"{path} could not be read safely with torch.load(weights_only=True): {exc}\n"
            "Only pickles holding plain tensors are accepted. Convert the file to .safetensors with "
            "a tool you trust, or get a .safetensors version of the model."
        ) from exc
    while isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict; expected {_EXPECTED_LAYOUT}.")
    return {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


# ----- detection ---------------------------------------------------------------------------------
def _sidecar_prediction(path: Path) -> str | None:
    """The prediction type an A1111 sidecar ``<name>.yaml`` declares, or None without one."""
    sidecar = path.with_suffix(".yaml")
    if not sidecar.is_file():
        return None
    text = sidecar.read_text(encoding="utf-8", errors="replace")
    try:
        import yaml

        parameterization = _find_key(yaml.safe_load(text), "parameterization")
    except Exception:  # malformed YAML, or no PyYAML: fall back to a plain search
        match = re.search(r"^\s*parameterization\s*:\s*['\"]?(\w+)", text, re.MULTILINE)
        parameterization = match.group(1) if match else None
    return "v_prediction" if str(parameterization).strip().lower() == "v" else "epsilon"


def _find_key(node: Any, name: str) -> Any:
    if isinstance(node, Mapping):
        if name in node:
            return node[name]
        for value in node.values():
            found = _find_key(value, name)
            if found is not None:
                return found
    return None


def _metadata_prediction(metadata: Mapping[str, str]) -> str | None:
    declared = str(metadata.get("modelspec.prediction_type", "")).strip().lower()
    if declared in ("v", "v_prediction", "v-prediction", "vpred", "v_pred", "velocity"):
        return "v_prediction"
    if declared in ("eps", "epsilon"):
        return "epsilon"
    architecture = str(metadata.get("modelspec.architecture", "")).strip().lower()
    if architecture.endswith("-v"):  # "stable-diffusion-v2-768-v"
        return "v_prediction"
    if architecture.startswith("stable-diffusion-v2-512"):
        return "epsilon"
    return None


def _sd2_name_prediction(path: Path, inpainting: bool) -> str:
    name = path.stem.lower()
    words = set(re.split(r"[^a-z0-9]+", name))
    if "768" in name or re.search(r"v[-_]?pred", name) or "v" in words:
        return "v_prediction"
    if "512" in name or "base" in words or inpainting:
        return "epsilon"
    return "v_prediction"


def _decide_prediction(
    path: Path, family: Family, inpainting: bool, keys: Sequence[str] | Mapping[str, Any],
    metadata: Mapping[str, str], override: str | None,
) -> tuple[str, str]:
    """(prediction type, why) by the rules in the module docstring."""
    if override is not None:
        if override not in PREDICTION_TYPES:
            raise CheckpointError(f"prediction_type must be one of {PREDICTION_TYPES}, not {override!r}.")
        return override, "given by the caller"
    sidecar = _sidecar_prediction(path)
    if sidecar is not None:
        return sidecar, f"sidecar {path.with_suffix('.yaml').name}"
    if "v_pred" in keys:
        return "v_prediction", "'v_pred' key in the checkpoint"
    declared = _metadata_prediction(metadata)
    if declared is not None:
        return declared, "modelspec metadata"
    if family == "sd2":
        return _sd2_name_prediction(path, inpainting), "SD 2.x file-name heuristic"
    return "epsilon", "default"


def _config_name(family: Family, inpainting: bool, prediction_type: str) -> str:
    if family == "sdxl":
        return "sdxl-inpaint" if inpainting else "sdxl-base"
    if family == "sd2":
        if inpainting:
            return "sd2-inpaint"
        return "sd2-768-v" if prediction_type == "v_prediction" else "sd2-512"
    return "sd1-inpaint" if inpainting else "sd1"


def _layout_hint(keys: Sequence[str]) -> str:
    """A guess at what a file of another layout is, for the error message."""
    sample = keys[:2000]
    if any(k.startswith(("lora_", "lora_unet", "lora_te")) or ".lora_" in k or "lora_down" in k for k in sample):
        return " It looks like a LoRA: put it in models/Lora."
    if any(k.startswith(("encoder.down.", "decoder.up.", "first_stage_model.")) for k in sample) and not any(
        k.startswith(UNET_PREFIX) for k in sample
    ):
        return " It looks like a VAE on its own: put it in models/VAE."
    if any(k.startswith(("down_blocks.", "unet.", "mid_block.", "text_model.")) for k in sample):
        return " It looks like one component in diffusers format: load the whole diffusers folder instead."
    if any(k.startswith(("string_to_param", "emb_params", "clip_l", "clip_g")) for k in sample):
        return " It looks like a textual-inversion embedding."
    return ""


def info_from_shapes(
    path: str | Path,
    shapes: Mapping[str, Sequence[int]],
    metadata: Mapping[str, str] | None = None,
    *,
    prediction_type: str | None = None,
) -> CheckpointInfo:
    """The CheckpointInfo of a file whose tensor names and shapes are ``shapes``."""
    path = Path(path)
    keys = list(shapes)
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        raise CheckpointError(f"{path} has no UNet weights ('{UNET_PREFIX}...'); expected {_EXPECTED_LAYOUT}.{_layout_hint(keys)}")
    family: Family
    if any(k.startswith(SDXL_OPENCLIP_PREFIX) for k in keys):
        family = "sdxl"
    elif any(k.startswith(SD2_OPENCLIP_PREFIX) for k in keys):
        family = "sd2"
    elif any(k.startswith(SD1_CLIP_PREFIX) for k in keys):
        family = "sd1"
    elif any(k.startswith(SDXL_REFINER_PREFIX) for k in keys):
        raise CheckpointError(f"{path} is an SDXL refiner, which is not supported; expected {_EXPECTED_LAYOUT}.")
    else:
        raise CheckpointError(f"{path} has a UNet but no text encoder this loader knows; expected {_EXPECTED_LAYOUT}.")
    if UNET_IN_KEY not in shapes or len(shapes[UNET_IN_KEY]) != 4:
        raise CheckpointError(f"{path} lacks '{UNET_IN_KEY}' (the UNet's input convolution); expected {_EXPECTED_LAYOUT}.")
    in_channels = int(shapes[UNET_IN_KEY][1])
    if in_channels not in (4, 9):
        raise CheckpointError(
            f"{path} has a UNet with {in_channels} input channels; only 4 (text-to-image) and 9 "
            "(inpainting) are supported (8 is instruct-pix2pix)."
        )
    inpainting = in_channels == 9
    chosen, why = _decide_prediction(path, family, inpainting, shapes, metadata or {}, prediction_type)
    config_dir = CONFIGS_DIR / _config_name(family, inpainting, chosen)
    log.info("%s: %s%s, %s (%s), configs %s", path.name, family, " inpainting" if inpainting else "",
             chosen, why, config_dir.name)
    return CheckpointInfo(family=family, inpainting=inpainting, prediction_type=chosen, config_dir=config_dir)


def detect_checkpoint(
    path: str | Path, *, prediction_type: str | None = None, allow_pickle: bool = False
) -> CheckpointInfo:
    """Family, inpainting and prediction type of a single-file checkpoint.

    For ``.safetensors`` only the header (names, shapes, metadata) is read. A pickle is refused
    unless ``allow_pickle``; then it is read with ``torch.load(weights_only=True)``.
    """
    path = _checked_path(path, allow_pickle)
    if is_pickle(path):
        state = load_pickle_state_dict(path)
        return info_from_shapes(path, {k: tuple(v.shape) for k, v in state.items()}, prediction_type=prediction_type)
    shapes, metadata = read_safetensors_header(path)
    return info_from_shapes(path, shapes, metadata, prediction_type=prediction_type)


def _checked_path(path: str | Path, allow_pickle: bool) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(
                f"{path} is a pickle ({suffix}): loading one can run code hidden in it, so it is refused. "
                "Use a .safetensors version of the model, or allow pickles in the settings "
                "(they are then read with torch.load(weights_only=True), tensors only)."
            )
    elif suffix not in SAFETENSORS_SUFFIXES:
        raise CheckpointError(
            f"{path} is not a checkpoint file this loader reads: expected .safetensors "
            f"(or, when allowed, one of {', '.join(PICKLE_SUFFIXES)})."
        )
    return path


# ----- config folders ----------------------------------------------------------------------------
_PASSED_COMPONENTS = ("tokenizer", "tokenizer_2", "safety_checker", "feature_extractor", "image_encoder")


def missing_config_files(config_dir: str | Path) -> list[str]:
    """The files ``from_single_file`` needs that ``config_dir`` lacks (relative paths)."""
    config_dir = Path(config_dir)
    index_path = config_dir / "model_index.json"
    if not index_path.is_file():
        return ["model_index.json"]
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except ValueError:
        return ["model_index.json (it is not valid JSON)"]
    missing = []
    for name, value in index.items():
        if name.startswith("_") or name in _PASSED_COMPONENTS:
            continue
        if not (isinstance(value, list) and len(value) == 2 and value[0]):
            continue
        wanted = "scheduler_config.json" if name == "scheduler" else "config.json"
        if not (config_dir / name / wanted).is_file():
            missing.append(f"{name}/{wanted}")
    return missing


def _missing_config_error(path: Path, config_dir: Path, missing: Sequence[str], cause: object = None) -> CheckpointError:
    listed = ", ".join(missing) if missing else "a config file"
    because = f" ({cause})" if cause else ""
    return CheckpointError(
        f"Cannot load {path.name} offline: the config folder {config_dir} lacks {listed}{because}. "
        "That folder must be a diffusers-format model folder without weights (model_index.json, "
        "unet/config.json, vae/config.json, text_encoder/config.json [, text_encoder_2/config.json], "
        "scheduler/scheduler_config.json) for this checkpoint's architecture: put the missing files "
        "there, or pass config_dir= pointing at a complete folder. Nothing is downloaded."
    )


def _is_download_error(exc: BaseException) -> bool:
    """True for the errors diffusers / huggingface_hub raise when they wanted to download."""
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, (EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled, ConnectionError)):
        return True
    text = str(exc)
    return isinstance(exc, OSError) and any(
        s in text for s in ("does not appear to have a file named", "no file named", "outgoing traffic",
                            "huggingface.co", "Can't load", "cached snapshot")
    )


# ----- loading -----------------------------------------------------------------------------------
def _pipeline_class(family: Family, inpainting: bool) -> type[DiffusionPipeline]:
    if family == "sdxl":
        return StableDiffusionXLInpaintPipeline if inpainting else StableDiffusionXLPipeline
    return StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline


def _sdxl_text_encoder_2(
    path: Path, state: Mapping[str, torch.Tensor] | None, config_dir: Path, torch_dtype: torch.dtype
) -> torch.nn.Module:
    """SDXL's OpenCLIP-bigG encoder, from the ``conditioner.embedders.1.`` weights only.

    diffusers tells SDXL's two encoders apart by their width; given the whole checkpoint, an
    encoder_2 as wide as encoder 1 (as in tiny test models) would get encoder 1's weights.
    """
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModelWithProjection

    if state is None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            subset = {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(SDXL_OPENCLIP_PREFIX)}
    else:
        subset = {k: v for k, v in state.items() if k.startswith(SDXL_OPENCLIP_PREFIX)}
    return create_diffusers_clip_model_from_ldm(
        CLIPTextModelWithProjection, subset, subfolder="text_encoder_2", config=str(config_dir),
        torch_dtype=torch_dtype, local_files_only=True,
    )


def load_single_file(
    path: str | Path,
    *,
    torch_dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
    prediction_type: str | None = None,
    config_dir: str | Path | None = None,
) -> DiffusionPipeline:
    """A pipeline from one original-layout checkpoint file, offline.

    Returns ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline``, or their inpainting
    classes for a 9-channel (inpainting) UNet. ``config_dir`` replaces the shipped config folder;
    ``prediction_type`` overrides detection and is set on the returned pipeline's scheduler.
    Raises CheckpointError (a ValueError) for pickles without ``allow_pickle``, unknown layouts
    and incomplete config folders; FileNotFoundError for a missing file.
    """
    from app.engine.tokenizers import PAD_BANG, PAD_EOS, clip_tokenizer

    path = _checked_path(path, allow_pickle)
    state: dict[str, torch.Tensor] | None = None
    if is_pickle(path):
        state = load_pickle_state_dict(path)  # refuses anything but tensors before diffusers reads it
        info = info_from_shapes(path, {k: tuple(v.shape) for k, v in state.items()}, prediction_type=prediction_type)
    else:
        shapes, metadata = read_safetensors_header(path)
        info = info_from_shapes(path, shapes, metadata, prediction_type=prediction_type)

    folder = Path(config_dir) if config_dir is not None else info.config_dir
    missing = missing_config_files(folder)
    if missing:
        raise _missing_config_error(path, folder, missing)

    components: dict[str, Any] = {
        "tokenizer": clip_tokenizer(PAD_BANG if info.family == "sd2" else PAD_EOS),
        "feature_extractor": None,
        "image_encoder": None,
    }
    if info.family == "sdxl":
        components["tokenizer_2"] = clip_tokenizer(PAD_BANG)
    else:
        components.update(safety_checker=None, requires_safety_checker=False)

    cls = _pipeline_class(info.family, info.inpainting)
    try:
        if info.family == "sdxl":
            components["text_encoder_2"] = _sdxl_text_encoder_2(path, state, folder, torch_dtype)
        del state  # diffusers reads the file again; do not hold a second copy meanwhile
        pipe = cls.from_single_file(
            str(path), config=str(folder), local_files_only=True, torch_dtype=torch_dtype, **components
        )
    except CheckpointError:
        raise
    except Exception as exc:
        if _is_download_error(exc):
            raise _missing_config_error(path, folder, missing_config_files(folder), exc) from exc
        raise

    if pipe.scheduler.config.get("prediction_type") != info.prediction_type:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=info.prediction_type)
    return pipe
