"""Resizing pictures with the built-in upscalers that A1111 names "None", "Lanczos" and "Nearest" (PIL only).

What the names mean here (A1111's behaviour, as its extras tab and API show it):

* "Lanczos" and "Nearest" resize with PIL's LANCZOS and NEAREST filters.
* "None" names no upscaling model. Where a size must be met (``upscale``) it resizes with Lanczos,
  as A1111 does wherever "None" meets a target size (its plain ``resize_image`` and the final step of
  every upscaler). In the extras order (``blend_upscalers``) a first upscaler "None" skips the upscale
  step and the picture keeps its size, and a second one "None" adds nothing, as A1111's extras do.

Sizes: by ``scale`` the result is ``round(w * scale) x round(h * scale)`` (A1111 also rounds its
extras results down to a multiple of 8; LoRA Studio keeps the size asked for). To a ``size`` (W, H)
the picture is scaled, aspect kept, until it covers W x H; with ``crop`` the overhang is cut off
evenly on both sides so the result is exactly W x H, without it the result keeps the whole picture
and may be larger than W x H in one direction (as A1111's "Crop to fit" off). Results are limited
to ``MAX_SIDE`` pixels a side and PIL's own pixel limit.

The latent upscale modes of hires fix are listed here by name only; the hires fix uses them.
"""

from __future__ import annotations

import math

from PIL import Image

from app.engine.hires import LATENT_MODES

BUILTIN_UPSCALERS: tuple[str, ...] = ("None", "Lanczos", "Nearest")
LATENT_UPSCALE_MODES: tuple[str, ...] = tuple(LATENT_MODES)  # hires fix's latent upscalers, A1111's names
MAX_SIDE = 8192  # pixels a side of any result

_FILTERS = {"None": Image.Resampling.LANCZOS, "Lanczos": Image.Resampling.LANCZOS,
            "Nearest": Image.Resampling.NEAREST}


def max_pixels() -> int:
    """The most pixels a result may have: PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``)."""
    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else MAX_SIDE * MAX_SIDE


def canonical_upscaler(name: str) -> str:
    """The built-in upscaler called ``name`` (case does not matter). Raises ValueError listing the
    available ones for any other name, model upscalers (ESRGAN, SwinIR...) included."""
    if isinstance(name, str):
        for known in BUILTIN_UPSCALERS:
            if name.strip().casefold() == known.casefold():
                return known
    raise ValueError(f"Unknown upscaler {name!r}; available: {', '.join(BUILTIN_UPSCALERS)}.")


def target_size(source: tuple[int, int], *, scale: float | None = None, size: tuple[int, int] | None = None,
                crop: bool = False) -> tuple[int, int]:
    """The size ``upscale`` makes from a picture of size ``source`` (see the module's notes).
    Raises ValueError for a bad scale or size and for a result over the limits."""
    width, height = source
    if width < 1 or height < 1:
        raise ValueError(f"The picture is {width}x{height}; it needs at least one pixel each way.")
    if (scale is None) == (size is None):
        raise ValueError("Give either a scale factor or a target size, not both or neither.")
    if scale is not None:
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"The scale factor must be a number above 0, not {scale!r}.")
        result = (max(1, round(width * scale)), max(1, round(height * scale)))
    else:
        assert size is not None
        wanted_w, wanted_h = (int(v) for v in size)
        if wanted_w < 1 or wanted_h < 1:
            raise ValueError(f"The target size must be at least 1x1, not {wanted_w}x{wanted_h}.")
        if crop:
            result = (wanted_w, wanted_h)
        elif wanted_w / width >= wanted_h / height:  # the width decides: the height overhangs
            result = (wanted_w, max(wanted_h, round(height * wanted_w / width)))
        else:
            result = (max(wanted_w, round(width * wanted_h / height)), wanted_h)
    _check_limits(result, source)
    return result


def upscale(image: Image.Image, upscaler: str, *, scale: float | None = None, size: tuple[int, int] | None = None,
            crop: bool = False) -> Image.Image:
    """``image`` resized by ``scale`` or to ``size`` with a built-in upscaler; a new picture in RGB
    (RGBA when the input has transparency). Raises ValueError for an unknown upscaler, a bad
    scale or size, or a result over the limits (nothing is resized then)."""
    name = canonical_upscaler(upscaler)
    result = target_size(image.size, scale=scale, size=size, crop=crop)
    return resize_to(working_copy(image), result, name, crop=size is not None and crop)


def resize_to(picture: Image.Image, result: tuple[int, int], upscaler: str = "Lanczos", *,
              crop: bool = False) -> Image.Image:
    """``picture`` resized to exactly ``result`` with a built-in upscaler's filter, its mode kept. With ``crop``
    only its centred part with the aspect ratio of ``result`` is used (the overhang cut off evenly)."""
    box = _cover_box(picture.size, result) if crop else None
    return picture.resize(result, _FILTERS[canonical_upscaler(upscaler)], box=box)


def blend_upscalers(image: Image.Image, first: str, second: str = "None", visibility: float = 0.0, *,
                    scale: float | None = None, size: tuple[int, int] | None = None,
                    crop: bool = False) -> Image.Image:
    """A1111's extras upscale: ``image`` through ``first``, mixed with ``second`` at ``visibility``
    (0: first only, 1: second only). A ``first`` of "None" leaves the picture as it is (a copy, its size
    kept); a ``second`` of "None" or a visibility of 0 adds nothing. Raises ValueError for unknown names,
    a visibility outside 0..1, or a bad size."""
    first, second = canonical_upscaler(first), canonical_upscaler(second)
    if not isinstance(visibility, (int, float)) or not 0.0 <= visibility <= 1.0:
        raise ValueError(f"The second upscaler's visibility must be between 0 and 1, not {visibility!r}.")
    if first == "None":
        return working_copy(image)
    upscaled = upscale(image, first, scale=scale, size=size, crop=crop)
    if second == "None" or visibility == 0:
        return upscaled
    other = upscale(image, second, scale=scale, size=size, crop=crop)
    return Image.blend(upscaled, other, float(visibility))


def working_copy(image: Image.Image) -> Image.Image:
    """A copy of ``image`` in RGB, or RGBA when it has an alpha band or a transparent colour."""
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    mode = "RGBA" if has_alpha else "RGB"
    return image.convert(mode) if image.mode != mode else image.copy()


def _cover_box(source: tuple[int, int], result: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred part of a ``source``-sized picture with the aspect ratio of ``result``: what is left
    after scaling the picture to cover ``result`` and cutting the overhang evenly."""
    width, height = source
    factor = max(result[0] / width, result[1] / height)
    part_w, part_h = min(width, result[0] / factor), min(height, result[1] / factor)  # floats can overshoot
    left, top = (width - part_w) / 2, (height - part_h) / 2
    return (left, top, left + part_w, top + part_h)


def _check_limits(result: tuple[int, int], source: tuple[int, int]) -> None:
    width, height = result
    if max(width, height) > MAX_SIDE or width * height > max_pixels():
        raise ValueError(
            f"Resizing {source[0]}x{source[1]} that way would make a {width}x{height} picture; LoRA Studio makes "
            f"pictures up to {MAX_SIDE} pixels a side and {max_pixels():,} pixels in all. Choose a smaller "
            "scale or size.")
