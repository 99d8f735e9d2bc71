"""Images in and out of the API: base64 (with or without a ``data:`` prefix) to PIL, PIL to base64 PNG.

A bad input image is a 422 naming its field; output PNGs carry the ``parameters`` text chunk, as
A1111's do, and are bare base64 (what clients decode directly).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Literal

from PIL import Image, UnidentifiedImageError

from app.api.errors import ApiError
from app.engine.outputs import png_with_parameters

MIN_SIDE = 8
BACKGROUND = (255, 255, 255)  # what transparent pixels of an input image become (A1111's default)


def decode_bytes(field: str, data: object) -> bytes:
    """The bytes of a base64 string, ``data:image/...;base64,`` prefix and line breaks allowed."""
    if not isinstance(data, str) or not data.strip():
        raise ApiError(422, f"{field} must be a base64-encoded image.")
    text = data.strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or ";base64" not in header:
            raise ApiError(422, f"{field} is a data: URL that is not base64 (expected data:image/png;base64,...).")
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"{field} is not valid base64.") from None


def open_image(field: str, data: object, *, min_side: int = MIN_SIDE) -> Image.Image:
    """The image a base64 string holds, loaded, with its metadata (``info``) as in the file.

    Refuses (422, naming ``field``) malformed base64, bytes that are no image, an image with a
    side under ``min_side`` pixels and one with more pixels than PIL's decompression-bomb limit.
    """
    raw = decode_bytes(field, data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(422, f"{field} has too many pixels (more than {Image.MAX_IMAGE_PIXELS}).") from None
    except UnidentifiedImageError:
        raise ApiError(422, f"{field} is not an image (PNG, JPEG, WEBP...).") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ApiError(422, f"{field} is a damaged image: {exc}") from None
    if min(image.size) < min_side:
        raise ApiError(422, f"{field} is {image.size[0]}x{image.size[1]} pixels; "
                            f"images need at least {min_side} pixels on each side.")
    return image


def decode_image(field: str, data: object, mode: Literal["RGB", "L"] = "RGB") -> Image.Image:
    """An input image as RGB (transparency flattened onto white) or as a greyscale mask (L).

    For a mask with real transparency the alpha channel is the mask, as A1111 reads such masks.
    """
    image = open_image(field, data)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if mode == "L":
        if has_alpha:
            alpha = image.convert("RGBA").getchannel("A")
            if alpha.getextrema() != (255, 255):
                return alpha
        return image.convert("L")
    if has_alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def encode_png(image: Image.Image, parameters: str | None = None) -> str:
    """Bare base64 of ``image`` as PNG, with ``parameters`` in its text chunk when given."""
    buffer = io.BytesIO()
    pnginfo = png_with_parameters(image, parameters) if parameters else None
    image.save(buffer, format="PNG", pnginfo=pnginfo)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# What A1111's PNG info leaves out of ``items``: format details, not text a person wrote.
IGNORED_INFO_KEYS = frozenset({
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background", "timestamp",
    "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop", "transparency",
    "gamma", "aspect", "srgb",
})


def text_items(image: Image.Image) -> tuple[str | None, dict[str, str]]:
    """(the ``parameters`` text or None, the image's other text chunks)."""
    items = {key: value for key, value in image.info.items()
             if key not in IGNORED_INFO_KEYS and isinstance(value, str)}
    return items.pop("parameters", None), items
