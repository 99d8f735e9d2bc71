"""Hires fix: the first picture upscaled (its latents, or its pixels), then an img2img pass at that size.

A1111's behaviour: the target is width x height times ``hr_scale``, or ``hr_resize_x`` x
``hr_resize_y`` (one of them 0: the other follows the aspect ratio; both: scaled to cover, then
cropped to fit); the second pass runs exactly its ``steps`` (``hr_second_pass_steps`` or the first
pass's), the last ones of a schedule of ``int(steps / denoising_strength)`` (A1111's hires pass
always takes its "fixed steps" path), with the same seeds, and its prompt schedule runs over its
own steps. Latent upscalers resize the latents with torch's interpolation; the others (the
built-ins and the upscaler model files of ``app.engine.upscalers``) resize the decoded picture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from app.engine.requests import SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER, SIZE_MULTIPLE

LATENT_MODES: dict[str, tuple[str, bool]] = {  # A1111's names -> (torch mode, antialias)
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_UPSCALERS = ("Lanczos", "Nearest", "None")  # app.engine.resize's built-in ones ("None": Lanczos to size)
HIRES_UPSCALERS = (*LATENT_MODES, *PIXEL_UPSCALERS)


def check_upscaler(name: str) -> None:
    """A hires upscaler must be named; whether a model upscaler of that name is installed is the engine's
    check at submit (``UpscalerLibrary.canonical``), where the models folder is known."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"Choose a hires upscaler: one of {', '.join(HIRES_UPSCALERS)} or an upscaler model's "
                         f"name, not {name!r}.")


def is_latent(name: str) -> bool:
    return name in LATENT_MODES


def hires_size(request: Any) -> tuple[int, int]:
    """The final (width, height), multiples of 8, as A1111 computes it from the hires fields."""
    width, height = request.width, request.height
    to_x, to_y = request.hr_resize_x, request.hr_resize_y
    if to_x == 0 and to_y == 0:
        size = int(width * request.hr_scale), int(height * request.hr_scale)
    elif to_y == 0:
        size = to_x, to_x * height // width
    elif to_x == 0:
        size = to_y * width // height, to_y
    else:
        size = to_x, to_y
    return tuple(max(SIZE_MULTIPLE, side // SIZE_MULTIPLE * SIZE_MULTIPLE) for side in size)  # type: ignore[return-value]


def _cover_size(request: Any) -> tuple[int, int]:  # the latent path's; pixels go through resize.upscale
    """The size the first picture is scaled to before cropping to ``hires_size`` (both resize sides given)."""
    target_w, target_h = hires_size(request)
    if not (request.hr_resize_x and request.hr_resize_y):
        return target_w, target_h
    scale = max(target_w / request.width, target_h / request.height)
    return max(target_w, round(request.width * scale)), max(target_h, round(request.height * scale))


def hires_sampler(request: Any) -> tuple[str, str]:
    """(sampler, schedule type) of the second pass: its own where the request names them, else the first pass's."""
    sampler = request.sampler if request.hr_sampler in ("", SAME_SAMPLER) else request.hr_sampler
    schedule = request.schedule_type if request.hr_schedule_type in ("", SAME_SCHEDULER) else request.hr_schedule_type
    return sampler, schedule


def second_steps(request: Any) -> int:
    """How many steps the second pass runs (what its progress counts)."""
    return request.hr_second_pass_steps or request.steps


def second_pass_schedule(request: Any) -> tuple[int, float]:
    """(num_inference_steps, strength) that make diffusers' img2img run the last ``second_steps`` steps of
    A1111's ``int(steps / denoising)``-step schedule (diffusers runs ``int(num_inference_steps * strength)``)."""
    steps = second_steps(request)
    total = max(steps, int(steps / min(request.denoising_strength, 0.999)))
    return total, min(1.0, (steps + 0.5) / total)


def upscale_latents(latents: torch.Tensor, request: Any, factor: int) -> torch.Tensor:
    """The first pass's latents at the hires size (cropped to it from the centre where both sides were
    given); ``factor``: pixels per latent cell (the VAE's scale factor, 8 for Stable Diffusion)."""
    mode, antialias = LATENT_MODES[request.hr_upscaler]
    cover_w, cover_h = _cover_size(request)
    target_w, target_h = hires_size(request)
    scaled = F.interpolate(latents.float(), size=(cover_h // factor, cover_w // factor), mode=mode,
                           antialias=antialias).to(latents.dtype)
    top, left = (scaled.shape[2] - target_h // factor) // 2, (scaled.shape[3] - target_w // factor) // 2
    return scaled[:, :, top:top + target_h // factor, left:left + target_w // factor]


def upscale_picture(picture: Image.Image, request: Any, upscalers: Any,
                    progress: Callable[[int, int], None] | None = None) -> Image.Image:
    """The first picture at the hires size with a pixel upscaler, built-in or a model file (scaled to cover
    it, cropped from the centre); ``upscalers``: the manager's UpscalerLibrary, ``progress``: per tile."""
    return upscalers.upscale(picture, request.hr_upscaler, size=hires_size(request), crop=True, progress=progress)


def hires_infotext(request: Any) -> dict[str, object]:
    """The hires parameters A1111 writes, in its order (``Denoising strength`` has a fixed slot of its own)."""
    params: dict[str, object] = {}
    if request.hr_resize_x or request.hr_resize_y:
        params["Hires resize"] = f"{request.hr_resize_x}x{request.hr_resize_y}"
    else:
        params["Hires upscale"] = request.hr_scale
    if request.hr_checkpoint not in ("", SAME_CHECKPOINT):
        params["Hires checkpoint"] = request.hr_checkpoint
    if request.hr_sampler not in ("", SAME_SAMPLER):
        params["Hires sampler"] = request.hr_sampler
    if request.hr_schedule_type not in ("", SAME_SCHEDULER, request.schedule_type):
        params["Hires schedule type"] = request.hr_schedule_type
    if request.hr_prompt and request.hr_prompt != request.prompt:
        params["Hires prompt"] = request.hr_prompt
    if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt:
        params["Hires negative prompt"] = request.hr_negative_prompt
    if request.hr_second_pass_steps:
        params["Hires steps"] = request.hr_second_pass_steps
    params["Hires upscaler"] = request.hr_upscaler
    return params
