"""Images in and out of the API: base64 (with or without a ``data:`` prefix) to PIL, PIL to base64 PNG.

A bad input image is a 422 naming its field, with the message the UI gives for the same file
(``app.engine.image_input``); output PNGs carry the ``parameters`` text chunk, as
A1111's do, and are bare base64 (what clients decode directly).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Literal

from PIL import Image

from app.api.errors import ApiError
from app.engine.image_input import as_mask, as_rgb, open_picture
from app.engine.outputs import png_with_parameters

MIN_SIDE = 8


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

    Refuses (422, naming ``field``) malformed base64, whatever ``open_picture`` refuses (with its
    message: the UI says the same) and an image with a side under ``min_side`` pixels.
    """
    raw = decode_bytes(field, data)
    try:
        image = open_picture(raw, field)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    if min(image.size) < min_side:
        raise ApiError(422, f"{field} is {image.size[0]}x{image.size[1]} pixels; "
                            f"images need at least {min_side} pixels on each side.")
    return image


def decode_image(field: str, data: object, mode: Literal["RGB", "L"] = "RGB") -> Image.Image:
    """An input image as RGB (transparency flattened onto white) or as a greyscale mask (L).

    For a mask with real transparency the alpha channel is the mask, as A1111 reads such masks.
    """
    image = open_image(field, data)
    return as_mask(image) if mode == "L" else as_rgb(image)


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
