"""An infotext read as A1111's API fields: what PNG info, "send to" and ``request_from_infotext`` see.

A1111 pastes an infotext into the same fields its API takes; so does LoRA Studio, so that one mapping
(``a1111_request.request_from_a1111``) turns API requests, the UI tabs' values and infotexts into
engine requests. Here only the infotext's keys are named: ``Steps`` -> ``steps``, ``Model`` ->
``override_settings.sd_model_checkpoint``, ``Masked content: fill`` -> ``inpainting_fill: 0``...
Unreadable numbers and unknown keys are left out, as A1111's paste leaves a field alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from app.engine.a1111_request import ENGINE_DEFAULTS, OPTION_DEFAULTS, A1111Task, request_from_a1111
from app.engine.infotext import parse_infotext
from app.engine.requests import INPAINT_AREAS, REQUEST_TYPES, SAME_SAMPLER, SAME_SCHEDULER, GenerationRequest
from app.engine.samplers import AUTOMATIC, read_sampler


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        number = _float(text)
        return int(number) if number is not None and number.is_integer() else None


def _float(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _masked_content(text: str) -> int | None:
    """A1111's "Masked content" names, as its API numbers them."""
    names = ("fill", "original", "latent noise", "latent nothing")
    return names.index(text) if text in names else None


# Infotext key -> (A1111 API field, reader); a reader's None leaves the field out.
INFOTEXT_FIELDS: Mapping[str, tuple[str, Callable[[str], Any]]] = MappingProxyType({
    "Prompt": ("prompt", str),
    "Negative prompt": ("negative_prompt", str),
    "Steps": ("steps", _int),
    "CFG scale": ("cfg_scale", _float),
    "Seed": ("seed", _int),
    "Size-1": ("width", _int),
    "Size-2": ("height", _int),
    "Denoising strength": ("denoising_strength", _float),
    "Tiling": ("tiling", lambda text: text == "True"),
    "Face restoration": ("restore_faces", lambda text: bool(text.strip())),  # and the model: FACE_RESTORER_KEY
    "Mask blur": ("mask_blur", _int),
    "Inpaint area": ("inpaint_full_res", lambda text: text == INPAINT_AREAS[1]),
    "Masked area padding": ("inpaint_full_res_padding", _int),
    "Masked content": ("inpainting_fill", _masked_content),
    "Mask mode": ("inpainting_mask_invert", lambda text: int(text == "Inpaint not masked")),
    "Hires upscale": ("hr_scale", _float),
    "Hires resize-1": ("hr_resize_x", _int),
    "Hires resize-2": ("hr_resize_y", _int),
    "Hires steps": ("hr_second_pass_steps", _int),
    "Hires upscaler": ("hr_upscaler", str),
    "Hires checkpoint": ("hr_checkpoint_name", str),
    "Hires sampler": ("hr_sampler_name", str),
    "Hires schedule type": ("hr_scheduler", str),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
    "SD upscale overlap": ("sd_upscale_overlap", _int),  # A1111's SD upscale script writes these two
    "SD upscale upscaler": ("sd_upscale_upscaler", str),
    "SD upscale scale": ("sd_upscale_scale", _float),  # LoRA Studio's (A1111 does not record its factor)
})
# Infotext key -> (A1111 option, reader): settings a request takes through ``override_settings``.
INFOTEXT_OPTIONS: Mapping[str, tuple[str, Callable[[str], Any]]] = MappingProxyType({
    "Model": ("sd_model_checkpoint", str),
    "VAE": ("sd_vae", str),
    "Clip skip": ("CLIP_stop_at_last_layers", _int),
    "Emphasis": ("emphasis", str),
})
assert {option for option, _ in INFOTEXT_OPTIONS.values()} == set(OPTION_DEFAULTS)


def a1111_fields_from_infotext(text: str) -> dict[str, Any]:
    """A1111 API fields (``override_settings`` holding the options) from an infotext, A1111's defaults filled
    for missing keys (Clip skip 1, Inpaint area Whole picture...); ``enable_hr`` is set when the infotext
    records a hires pass (A1111 always writes ``Hires upscaler`` then), ``sd_upscale`` when it records SD
    upscale. The sampler is split from old fused names ("DPM++ 2M Karras") into ``sampler_name`` and
    ``scheduler``."""
    params = parse_infotext(text, with_defaults=True)
    fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for table, target in ((INFOTEXT_FIELDS, fields), (INFOTEXT_OPTIONS, options)):
        for key, (name, read) in table.items():
            value = read(params[key]) if key in params else None
            if value is not None:
                target[name] = value
    if params.get("Sampler"):
        fields["sampler_name"], fields["scheduler"] = read_sampler(params["Sampler"],
                                                                   params.get("Schedule type", AUTOMATIC))
    if fields.get("hr_sampler_name", SAME_SAMPLER) != SAME_SAMPLER:  # an old fused name sets the schedule too
        same_schedule = fields.get("hr_scheduler", SAME_SCHEDULER) == SAME_SCHEDULER
        sampler, schedule = read_sampler(fields["hr_sampler_name"], AUTOMATIC if same_schedule else fields["hr_scheduler"])
        fields["hr_sampler_name"] = sampler
        if schedule != AUTOMATIC:
            fields["hr_scheduler"] = schedule
    fields["enable_hr"] = "Hires upscaler" in params
    if params.get("Face restoration"):  # the model's name: A1111's "CodeFormer"/"GFPGAN", or a file of LoRA Studio's
        fields["face_restorer"] = params["Face restoration"]
    fields["sd_upscale"] = "SD upscale upscaler" in params  # A1111's script always writes it
    fields.update(_outpaint_fields(params))
    if options:
        fields["override_settings"] = options
    return fields


def _outpaint_fields(params: Mapping[str, str]) -> dict[str, Any]:
    """``Outpaint: "left 64, right 0, up 0, down 0"`` and ``Outpaint fill`` as the outpaint_* fields."""
    fields: dict[str, Any] = {}
    for part in params.get("Outpaint", "").split(","):
        side, _, pixels = part.strip().partition(" ")
        if side in ("left", "right", "up", "down") and _int(pixels) is not None:
            fields[f"outpaint_{side}"] = _int(pixels)
    if params.get("Outpaint fill"):
        fields["outpaint_fill"] = params["Outpaint fill"]
    return fields


def request_from_infotext(text: str, task: str = "txt2img") -> GenerationRequest:
    """A request of ``task`` ("txt2img", "img2img" or "inpaint") with the fields ``text`` gives.

    Missing keys take A1111's defaults where it has them, else the engine's; ``Model`` goes into
    ``request.model`` and ``VAE`` into ``request.vae``. LoRA tags stay in the prompt (``loras`` stays
    empty), and images and masks are not in an infotext. The request is not validated.
    """
    if task not in REQUEST_TYPES:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(REQUEST_TYPES)}.")
    a1111_task: A1111Task = task  # type: ignore[assignment]
    return request_from_a1111(a1111_task, a1111_fields_from_infotext(text), defaults={},
                              field_defaults=ENGINE_DEFAULTS)


__all__ = ["INFOTEXT_FIELDS", "INFOTEXT_OPTIONS", "a1111_fields_from_infotext", "request_from_infotext"]
