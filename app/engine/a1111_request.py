"""A1111's API field names, mapped once onto the engine's requests and back onto A1111's ``info``.

``request_from_a1111`` turns the JSON fields of ``/sdapi/v1/txt2img`` and ``/img2img`` (A1111's
names and defaults) into a ``Txt2ImgRequest``, ``Img2ImgRequest`` or ``InpaintRequest``; the
API's options (``sd_model_checkpoint``, ``sd_vae``, ``CLIP_stop_at_last_layers``, ``emphasis``)
fill what a request does not say, and its ``override_settings`` win over them.
``a1111_info`` builds the ``info`` object A1111 returns beside the images.

Fields LoRA Studio does not implement are accepted at their neutral value and refused with a
ValueError naming the field otherwise (``UNSUPPORTED``); fields A1111 itself ignores in the cases
LoRA Studio runs, and keys it does not know, are ignored. No I/O here: images arrive decoded
(``init_image``, ``mask``) from the front end.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Protocol

from PIL import Image

from app.engine.infotext import FIXED_KEYS, parse_infotext
from app.engine.jobs import JobResult
from app.engine.prompt_parser import EMPHASIS_MODES
from app.engine.registry import ModelEntry
from app.engine.requests import (
    IMG2IMG_SCRIPTS,
    INPAINT_AREAS,
    MAX_CLIP_SKIP,
    RESIZE_MODES,
    SAME_CHECKPOINT,
    SD_UPSCALE,
    GenerationRequest,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
)
from app.engine.samplers import read_sampler

A1111Task = Literal["txt2img", "img2img", "inpaint"]  # "inpaint": img2img that inpaints even without a mask yet

# A1111's API defaults for the fields the engine reads (its request models, v1.10).
API_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "prompt": "",
        "negative_prompt": "",
        "seed": -1,
        "sampler_index": "Euler",
        "scheduler": "Automatic",
        "steps": 50,
        "cfg_scale": 7.0,
        "width": 512,
        "height": 512,
        "batch_size": 1,
        "n_iter": 1,
        "save_images": False,
        "denoising_strength": 0.75,
        "resize_mode": 0,
        "mask_blur_x": 4,
        "mask_blur_y": 4,
        "inpainting_fill": 0,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 0,
        "inpainting_mask_invert": 0,
        # LoRA Studio's extensions (A1111 outpaints with scripts): no extension, and the "stretch" fill.
        "outpaint_left": 0,
        "outpaint_right": 0,
        "outpaint_up": 0,
        "outpaint_down": 0,
        "outpaint_fill": "stretch",
        # Face restoration: A1111's restore_faces, with the model and CodeFormer weight of its options
        # face_restoration_model and code_former_weight (or LoRA Studio's fields face_restorer and
        # codeformer_weight); no model named: the first one installed.
        "restore_faces": False,
        "face_restorer": "",
        "codeformer_weight": 0.5,
        # A1111's SD upscale script under LoRA Studio's names (the UI's controls, the infotext's keys); the API
        # also takes A1111's script_name "sd upscale" with script_args [info, overlap, upscaler, scale]. A missing
        # upscaler is Lanczos (A1111's script falls back to its first upscaler, "None", which does not upscale).
        "sd_upscale": False,
        "sd_upscale_overlap": 64,
        "sd_upscale_upscaler": "Lanczos",
        "sd_upscale_scale": 2.0,
    }
)



def _engine_default(name: str) -> Any:
    return InpaintRequest.__dataclass_fields__[name].default


# The engine's own defaults under A1111's names: what a missing field means to the UI and to an infotext.
ENGINE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        **API_DEFAULTS,
        "steps": _engine_default("steps"),
        "sampler_index": _engine_default("sampler"),
        "scheduler": _engine_default("schedule_type"),
        "cfg_scale": _engine_default("cfg_scale"),
        "save_images": _engine_default("save"),
        "denoising_strength": _engine_default("denoising_strength"),
        "mask_blur_x": _engine_default("mask_blur"),
        "mask_blur_y": _engine_default("mask_blur"),
        "inpainting_fill": 0 if _engine_default("masked_content") == "fill" else 1,
        "inpaint_full_res": _engine_default("inpaint_area") == INPAINT_AREAS[1],
        "inpaint_full_res_padding": _engine_default("masked_padding"),
    }
)

# The API options a request reads, and their values when the options lack them.
OPTION_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"sd_model_checkpoint": "", "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1, "emphasis": "Original"}
)
VAE_OF_CHECKPOINT = ("Automatic", "None", "")  # sd_vae values meaning "the checkpoint's own VAE"

INPAINTING_FILL: Mapping[int, str | None] = MappingProxyType(
    {0: "fill", 1: "original", 2: None, 3: None}  # None: A1111 has it, LoRA Studio does not
)
OUTPAINT_SIDES = ("outpaint_left", "outpaint_right", "outpaint_up", "outpaint_down")  # LoRA Studio's own fields
_FILL_NAMES = ("fill", "original", "latent noise", "latent nothing")
# A1111's script_args of "sd upscale" from position 1 (position 0 is its info text), as request fields.
SD_UPSCALE_ARGS = ("sd_upscale_overlap", "sd_upscale_upscaler", "sd_upscale_scale")
_RESIZE_3 = "Just resize (latent upscale)"


@dataclass(frozen=True)
class Empty:
    """A neutral value meaning "an empty list" (``kind`` list) or "an empty object" (``kind`` dict)."""

    kind: type[list] | type[dict]

    def matches(self, value: object) -> bool:
        kinds = (list, tuple) if self.kind is list else (dict, Mapping)
        return isinstance(value, kinds) and len(value) == 0

    def example(self) -> list | dict:
        return self.kind()

    def __repr__(self) -> str:
        return "[]" if self.kind is list else "{}"


EMPTY_LIST, EMPTY_OBJECT = Empty(list), Empty(dict)


@dataclass(frozen=True)
class Unsupported:
    """A field LoRA Studio does not implement: the values that ask for nothing, and what it would do."""

    neutral: tuple[object, ...]
    feature: str


# Each field, its neutral values (A1111's defaults and what common clients send), and the feature.
UNSUPPORTED: Mapping[str, Unsupported] = MappingProxyType(
    {
        "subseed_strength": Unsupported((0,), "variation seeds"),
        "seed_resize_from_h": Unsupported((-1, 0), "seed resize"),
        "seed_resize_from_w": Unsupported((-1, 0), "seed resize"),
        "eta": Unsupported((None, 0, 1), "sampler eta"),
        "s_churn": Unsupported((None, 0), "sampler churn"),
        "s_tmax": Unsupported((None, 0), "sampler tmax"),
        "s_tmin": Unsupported((None, 0), "sampler tmin"),
        "s_noise": Unsupported((None, 1), "sampler noise multiplier"),
        "s_min_uncond": Unsupported((None, 0), "negative guidance minimum sigma"),
        "alwayson_scripts": Unsupported((None, EMPTY_OBJECT), "extension scripts"),
        "refiner_checkpoint": Unsupported((None, "", "None"), "the refiner"),
        "initial_noise_multiplier": Unsupported((None, 1), "the img2img noise multiplier"),
        "disable_extra_networks": Unsupported((False, None), "turning extra networks off"),
        "latent_mask": Unsupported((None, ""), "a separate latent mask"),
        "infotext": Unsupported((None, ""), "filling fields from an infotext"),
        "firstpass_image": Unsupported((None, ""), "a given first-pass image for hires fix"),
    }
)
# Accepted and ignored, as A1111 ignores them where LoRA Studio runs: subseed without a variation
# strength, image_cfg_scale without an instruct-pix2pix model, refiner_switch_at without a refiner,
# hires fields without enable_hr,
# save flags that save_images replaces, and bookkeeping fields. Listed for readers; the mapping reads
# none of them.
IGNORED: tuple[str, ...] = (
    "subseed", "image_cfg_scale", "refiner_switch_at", "firstphase_width", "firstphase_height",
    "do_not_save_samples", "do_not_save_grid",
    "override_settings_restore_afterwards", "send_images", "include_init_images", "force_task_id",
    "comments", "mask_round",
)

_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]\s*$")
_INFO_NOT_EXTRA = frozenset(FIXED_KEYS) | {"Prompt", "Negative prompt", "Version", "Size-1", "Size-2"}


class Registry(Protocol):
    """What the mapping asks of ``ModelRegistry``."""

    def find_checkpoint(self, name: str) -> ModelEntry: ...

    def find_vae(self, name: str) -> ModelEntry: ...


def strip_title_hash(title: str) -> str:
    """A1111's checkpoint title without its hash: "name.safetensors [0123abcd]" -> "name.safetensors"."""
    return _HASH_SUFFIX.sub("", title).strip()


def checkpoint_name(title: object, registry: Registry | None = None) -> str | None:
    """The engine's name for an A1111 checkpoint title (None = the default model). With a registry the
    name is looked up (with or without its suffix) and an unknown one raises ValueError."""
    if title is None or (isinstance(title, str) and not title.strip()):
        return None
    if not isinstance(title, str):
        raise ValueError(f"sd_model_checkpoint must be a checkpoint name, got {title!r}.")
    name = strip_title_hash(title)
    if registry is None:
        return name
    entry = registry.find_checkpoint(name)
    if entry.kind == "hub":  # an API client must not make the server download models
        raise ValueError(f"No checkpoint called {name!r} in models/Stable-diffusion; the API uses local checkpoints "
                         "only (the operator can start LoRA Studio with a hub id as --model).")
    return entry.name


def vae_name(title: object, registry: Registry | None = None) -> str | None:
    """The engine's VAE name for A1111's ``sd_vae`` ("Automatic" and "None" = the checkpoint's own)."""
    if title is None or (isinstance(title, str) and title.strip() in VAE_OF_CHECKPOINT):
        return None
    if not isinstance(title, str):
        raise ValueError(f"sd_vae must be a VAE file name, \"Automatic\" or \"None\", got {title!r}.")
    name = strip_title_hash(title)
    return registry.find_vae(name).name if registry is not None else name


def clip_skip_value(value: object) -> int:
    """``CLIP_stop_at_last_layers`` as a whole number from 1 to 12."""
    number = _whole("CLIP_stop_at_last_layers", value)
    if not 1 <= number <= MAX_CLIP_SKIP:
        raise ValueError(f"CLIP_stop_at_last_layers must be between 1 and {MAX_CLIP_SKIP}, got {number}.")
    return number


# A1111's hires-fix fields -> Txt2ImgRequest's, with A1111's API defaults.
HIRES_FIELDS: Mapping[str, tuple[str, Any]] = MappingProxyType({
    "hr_scale": ("hr_scale", 2.0),
    "hr_upscaler": ("hr_upscaler", "Latent"),
    "hr_second_pass_steps": ("hr_second_pass_steps", 0),
    "hr_resize_x": ("hr_resize_x", 0),
    "hr_resize_y": ("hr_resize_y", 0),
    "denoising_strength": ("denoising_strength", 0.7),
    "hr_checkpoint_name": ("hr_checkpoint", None),
    "hr_sampler_name": ("hr_sampler", None),
    "hr_scheduler": ("hr_schedule_type", None),
    "hr_prompt": ("hr_prompt", ""),
    "hr_negative_prompt": ("hr_negative_prompt", ""),
})


def _hires(fields: Mapping[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """Txt2ImgRequest's hires keywords for an A1111 request (none unless ``enable_hr``); an empty or
    None checkpoint or sampler means the first pass's."""
    if not fields.get("enable_hr"):
        return {}
    checkpoint = fields.get("hr_checkpoint_name")
    if checkpoint not in (None, "", SAME_CHECKPOINT) and registry is not None:
        fields = {**fields, "hr_checkpoint_name": checkpoint_name(checkpoint, registry)}
    chosen: dict[str, Any] = {"enable_hr": True}
    for a1111_name, (name, default) in HIRES_FIELDS.items():
        value = fields.get(a1111_name)
        value = default if value is None else value
        if value not in (None, ""):
            chosen[name] = _int_if_whole(value)
    return chosen


def emphasis_value(value: object) -> str:
    if value not in EMPHASIS_MODES:
        raise ValueError(f"Unknown emphasis {value!r}; choose one of {', '.join(EMPHASIS_MODES)}.")
    return str(value)


def validate_options(changes: Mapping[str, Any], registry: Registry) -> dict[str, Any]:
    """Check the known keys of a POST /options body (checkpoint and VAE exist, clip skip 1-12,
    emphasis known); return the changes to store. Unknown keys pass unchanged. Raises ValueError."""
    checked = dict(changes)
    if "sd_model_checkpoint" in checked:
        checkpoint_name(checked["sd_model_checkpoint"], registry)  # stored as given: A1111 keeps the title
    if "sd_vae" in checked:
        vae_name(checked["sd_vae"], registry)
    if "CLIP_stop_at_last_layers" in checked:
        checked["CLIP_stop_at_last_layers"] = clip_skip_value(checked["CLIP_stop_at_last_layers"])
    if "emphasis" in checked:
        checked["emphasis"] = emphasis_value(checked["emphasis"])
    return checked


def request_from_a1111(task: A1111Task, fields: Mapping[str, Any], *, defaults: Mapping[str, Any],
                       registry: Registry | None = None, upscalers: Sequence[str] | None = None,
                       field_defaults: Mapping[str, Any] = API_DEFAULTS) -> GenerationRequest:
    """The engine request for A1111 fields: the one mapping the API, the UI tabs and infotexts go through.

    ``fields`` uses A1111's names, with the input image decoded under ``init_image`` and the mask
    under ``mask`` (PIL images); an img2img request with a mask (or ``task`` "inpaint") becomes an
    ``InpaintRequest``. ``defaults`` are the API options; ``override_settings`` in ``fields`` win over
    them. A missing field takes ``field_defaults`` (A1111's API defaults; ``ENGINE_DEFAULTS`` for the
    UI and infotexts). Whole-number floats (what sliders send) become ints. With ``registry``,
    checkpoint and VAE names are resolved (and unknown ones refused) here; with ``upscalers`` (the names
    of GET /sdapi/v1/upscalers, in order) SD upscale's upscaler may be an index into them, and an
    unknown name is refused here. Raises ValueError naming the field for a value LoRA Studio cannot
    honour; a sampler it lacks is kept as written for ``validate()`` to explain. The request is not
    validated.
    """
    if task not in ("txt2img", "img2img", "inpaint"):
        raise ValueError(f"Unknown task {task!r}; choose txt2img or img2img.")
    refuse_unsupported(fields)
    value = _reader(fields, field_defaults)
    settings = _settings(fields, defaults)
    sampler, schedule = _sampler(value("sampler_name"), value("sampler_index"), value("scheduler"))
    common: dict[str, Any] = dict(
        prompt=value("prompt"),
        negative_prompt=value("negative_prompt"),
        model=checkpoint_name(settings["sd_model_checkpoint"], registry),
        vae=vae_name(settings["sd_vae"], registry),
        steps=_int_if_whole(value("steps")),
        cfg_scale=value("cfg_scale"),
        seed=_int_if_whole(value("seed")),
        width=_int_if_whole(value("width")),
        height=_int_if_whole(value("height")),
        batch_count=_int_if_whole(value("n_iter")),
        batch_size=_int_if_whole(value("batch_size")),
        sampler=sampler,
        schedule_type=schedule,
        clip_skip=clip_skip_value(settings["CLIP_stop_at_last_layers"]),
        emphasis=emphasis_value(settings["emphasis"]),
        save=bool(value("save_images")),
        styles=_styles(fields.get("styles")),
        tiling=bool(fields.get("tiling")),
        **_face_restoration(fields, value, defaults),
    )
    script = _script(task, fields, value, upscalers)
    if task == "txt2img":
        return Txt2ImgRequest(**common, **_hires(fields, registry))
    common.update(init_image=_image("init_images[0]", fields.get("init_image")),
                  denoising_strength=value("denoising_strength"), resize_mode=_resize_mode(value("resize_mode")),
                  **script)
    mask = _image("mask", fields.get("mask"))
    outpaint = {name: _int_if_whole(value(name)) for name in (*OUTPAINT_SIDES, "outpaint_fill")}
    if mask is None and task != "inpaint" and not any(outpaint[side] for side in OUTPAINT_SIDES):
        return Img2ImgRequest(**common)
    return InpaintRequest(
        **common,
        mask=mask,
        mask_blur=_mask_blur(fields.get("mask_blur"), value("mask_blur_x"), value("mask_blur_y")),
        inpaint_area=INPAINT_AREAS[1] if value("inpaint_full_res") else INPAINT_AREAS[0],
        masked_padding=_int_if_whole(value("inpaint_full_res_padding")),
        masked_content=_masked_content(value("inpainting_fill")),
        invert_mask=bool(value("inpainting_mask_invert")),
        **outpaint,
    )


def _face_restoration(fields: Mapping[str, Any], value: Callable[[str], Any],
                      defaults: Mapping[str, Any]) -> dict[str, Any]:
    """restore_faces, and the model and CodeFormer weight from LoRA Studio's fields, else A1111's options
    (``override_settings`` over the API's), else the first installed model and 0.5."""
    overrides = fields.get("override_settings") or {}

    def option(field: str, option_name: str) -> Any:
        for source in (fields, overrides, defaults):
            if isinstance(source, Mapping) and source.get(field if source is fields else option_name) not in (None, ""):
                return source[field if source is fields else option_name]
        return value(field)

    restorer = option("face_restorer", "face_restoration_model")
    if not isinstance(restorer, str):
        raise ValueError(f"face_restoration_model must be a face model's name, got {restorer!r}.")
    return {"restore_faces": bool(value("restore_faces")), "face_restorer": restorer,
            "codeformer_weight": option("codeformer_weight", "code_former_weight")}


def _script(task: A1111Task, fields: Mapping[str, Any], value: Callable[[str], Any],
            upscalers: Sequence[str] | None) -> dict[str, Any]:
    """The request's script fields: ``script_name`` as A1111 matches titles (case aside) and ``script_args`` in
    A1111's positions, else LoRA Studio's own ``sd_upscale*`` fields. txt2img has no script; script_args without
    a script_name are refused."""
    name, args = fields.get("script_name"), fields.get("script_args")
    if name is None or isinstance(name, str) and not name.strip():
        if not _is_neutral(args, (None, EMPTY_LIST)):
            raise ValueError(f"script_args = {args!r} is not supported by LoRA Studio without a script_name; "
                             f"leave it out or send []; the one script is {SD_UPSCALE!r} (img2img).")
        name, args = (SD_UPSCALE if value("sd_upscale") else ""), []
    elif not isinstance(name, str) or name.strip().casefold() not in IMG2IMG_SCRIPTS or task == "txt2img":
        runs = f"txt2img runs none; img2img runs {SD_UPSCALE!r}" if task == "txt2img" else f"it runs {SD_UPSCALE!r}"
        raise ValueError(f"script_name = {name!r} is not a script LoRA Studio runs in {task}: {runs} "
                         "(A1111's SD upscale), or leave it out.")
    if task == "txt2img":
        return {}
    args = [] if args is None else args
    if not isinstance(args, (list, tuple)):
        raise ValueError(f"script_args must be a list, got {args!r}.")
    chosen: dict[str, Any] = {"script_name": name.strip().casefold()}
    for position, field in enumerate(SD_UPSCALE_ARGS, start=1):
        given = args[position] if position < len(args) else None
        label = f"script_args[{position}]" if given is not None else field
        chosen[field] = given if given is not None else value(field)
        if field == "sd_upscale_upscaler":
            chosen[field] = _upscaler(label, chosen[field], upscalers)
        else:
            chosen[field] = _int_if_whole(chosen[field])
    return chosen


def _upscaler(label: str, given: object, upscalers: Sequence[str] | None) -> str:
    """An upscaler name from a name (case aside) or an index into ``upscalers`` (A1111's script_args send
    either); without the list a name passes as written, for the engine to check."""
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        index = _whole(label, given)
        if upscalers is None:
            raise ValueError(f"{label}: an upscaler index needs the upscaler list; send the upscaler's name.")
        if not 0 <= index < len(upscalers):
            raise ValueError(f"{label}: upscaler index {index} is out of range; GET /sdapi/v1/upscalers lists "
                             f"{len(upscalers)} (0 to {len(upscalers) - 1}).")
        return upscalers[index]
    if not isinstance(given, str) or not given.strip():
        raise ValueError(f"{label} must be an upscaler name or its index in GET /sdapi/v1/upscalers, got {given!r}.")
    if upscalers is None:
        return given
    for known in upscalers:
        if known.casefold() == given.strip().casefold():
            return known
    raise ValueError(f"{label}: unknown upscaler {given!r}; available: {', '.join(upscalers)}.")


def refuse_unsupported(fields: Mapping[str, Any]) -> None:
    """Raise ValueError for the first field of ``UNSUPPORTED`` that asks for something."""
    for name, rule in UNSUPPORTED.items():
        if name in fields and not _is_neutral(fields[name], rule.neutral):
            neutral = ", ".join(repr(v) for v in rule.neutral)
            raise ValueError(f"{name} = {fields[name]!r} is not supported by LoRA Studio ({rule.feature}); "
                             f"leave it out or send one of: {neutral}.")


def a1111_info(request: GenerationRequest, result: JobResult, *, job_timestamp: str,
               version: str = "") -> dict[str, Any]:
    """A1111's ``info`` object (``Processed.js()``) for a finished, or interrupted, job: ``prompt`` as
    asked, ``all_prompts`` as run (styles applied), seeds and infotexts from the result."""
    count = len(result.images)
    styled = [parse_infotext(text) for text in result.infotexts]  # the prompts as run: styles applied
    first = styled[0] if styled else {}
    seeds = list(result.seeds)
    is_img2img = isinstance(request, Img2ImgRequest)
    return {
        "prompt": request.prompt,
        "all_prompts": [params["Prompt"] for params in styled],
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": [params["Negative prompt"] for params in styled],
        "seed": seeds[0] if seeds else request.seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * count,
        "subseed_strength": 0,
        "width": request.width,
        "height": request.height,
        "sampler_name": request.sampler,
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": request.restore_faces,
        "face_restoration_model": (request.face_restorer or None) if request.restore_faces else None,
        "sd_model_name": result.info.get("model", first.get("Model")),
        "sd_model_hash": result.info.get("model_hash", first.get("Model hash")),
        "sd_vae_name": first.get("VAE"),
        "sd_vae_hash": first.get("VAE hash"),
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": (getattr(request, "denoising_strength", None)
                               if is_img2img or getattr(request, "enable_hr", False) else None),
        "extra_generation_params": {k: v for k, v in first.items() if k not in _INFO_NOT_EXTRA},
        "index_of_first_image": 0,
        "infotexts": list(result.infotexts),
        "styles": list(request.styles),
        "job_timestamp": job_timestamp,
        "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": first.get("Version", version),
        **({"worker": result.info["worker"]} if result.info.get("worker") else {}),  # a cluster's replica
    }


# ----- helpers -------------------------------------------------------------------------------
def _is_neutral(value: object, neutral: tuple[object, ...]) -> bool:
    for candidate in neutral:
        if isinstance(candidate, Empty):
            if candidate.matches(value):
                return True
        elif value is None or candidate is None:
            if value is candidate:
                return True
        elif not isinstance(value, (list, dict)) and value == candidate:
            return True
    return False


def _reader(fields: Mapping[str, Any], field_defaults: Mapping[str, Any]) -> Callable[[str], Any]:
    """``value(name)``: the field, or its default when it is missing or null."""

    def value(name: str) -> Any:
        given = fields.get(name)
        return field_defaults.get(name) if given is None else given

    return value


def _settings(fields: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The options a request runs with: OPTION_DEFAULTS < the API options < override_settings."""
    overrides = fields.get("override_settings") or {}
    if not isinstance(overrides, Mapping):
        raise ValueError("override_settings must be an object of option names and values.")
    settings = dict(OPTION_DEFAULTS)
    for source in (defaults, overrides):
        settings.update({key: source[key] for key in OPTION_DEFAULTS if key in source})
    return settings


def _sampler(sampler_name: object, sampler_index: object, scheduler: object) -> tuple[str, str]:
    """Canonical (sampler, schedule type): sampler_name, else the legacy sampler_index; old fused
    names ("DPM++ 2M Karras") set the schedule type; one LoRA Studio lacks is kept for validate()."""
    name = sampler_name if isinstance(sampler_name, str) and sampler_name.strip() else sampler_index
    if not isinstance(name, str):
        raise ValueError(f"sampler_name must be a sampler name, got {name!r}.")
    if scheduler is not None and not isinstance(scheduler, str):
        raise ValueError(f"scheduler must be a schedule type name, got {scheduler!r}.")
    return read_sampler(name, scheduler or "Automatic")


def _styles(styles: object) -> tuple[str, ...]:
    """Style names from styles.csv (the engine applies them when the request is submitted)."""
    if styles is None:
        return ()
    if not isinstance(styles, (list, tuple)) or not all(isinstance(name, str) for name in styles):
        raise ValueError(f"styles must be a list of style names, got {styles!r}.")
    return tuple(styles)


def _image(label: str, image: object) -> Image.Image | None:
    if image is None or isinstance(image, Image.Image):
        return image
    raise ValueError(f"{label} must be a decoded image.")


def _resize_mode(mode: object) -> str:
    number = _whole("resize_mode", mode)
    if number == 3:
        raise ValueError(f"resize_mode 3 ({_RESIZE_3}) is not supported by LoRA Studio; "
                         f"use 0 ({RESIZE_MODES[0]}), 1 ({RESIZE_MODES[1]}) or 2 ({RESIZE_MODES[2]}).")
    if not 0 <= number < len(RESIZE_MODES):
        raise ValueError(f"resize_mode must be 0, 1 or 2, got {number}.")
    return RESIZE_MODES[number]


def _masked_content(fill: object) -> str:
    number = _whole("inpainting_fill", fill)
    if number not in INPAINTING_FILL:
        raise ValueError(f"inpainting_fill must be 0 (fill) or 1 (original), got {number}.")
    content = INPAINTING_FILL[number]
    if content is None:
        raise ValueError(f"inpainting_fill {number} ({_FILL_NAMES[number]}) is not supported by LoRA Studio; "
                         "use 0 (fill) or 1 (original).")
    return content


def _mask_blur(mask_blur: object, blur_x: object, blur_y: object) -> int:
    """A1111: mask_blur sets both directions; otherwise mask_blur_x and mask_blur_y, which must agree here."""
    if mask_blur is not None:
        return _whole("mask_blur", mask_blur)
    x, y = _whole("mask_blur_x", blur_x), _whole("mask_blur_y", blur_y)
    if x != y:
        raise ValueError(f"mask_blur_x ({x}) and mask_blur_y ({y}) differ, which is not supported by LoRA Studio: "
                         "it blurs the mask the same in both directions; send mask_blur.")
    return x


def _int_if_whole(value: Any) -> Any:
    """20.0 -> 20 (a slider's or a JSON client's whole float); anything else unchanged, for validate() to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _whole(label: str, value: object) -> int:
    """An int, or a float with no fraction, as an int; anything else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{label} must be a whole number, got {value!r}.")
    return int(value)


__all__ = [
    "API_DEFAULTS",
    "ENGINE_DEFAULTS",
    "IGNORED",
    "OPTION_DEFAULTS",
    "UNSUPPORTED",
    "a1111_info",
    "checkpoint_name",
    "clip_skip_value",
    "emphasis_value",
    "refuse_unsupported",
    "request_from_a1111",
    "strip_title_hash",
    "validate_options",
    "vae_name",
]
