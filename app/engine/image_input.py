"""Pictures people upload (UI) or send (REST API), decoded the same way everywhere.

``open_picture`` gives a loaded picture, or a ValueError whose message names the input and what is
wrong with it, so the UI and the API say the same thing about the same bad file. Beyond
``Image.open`` it reads only common picture formats (fewer decoders exposed on a shared server),
refuses more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` before decoding any, takes the first frame
of an animation (as A1111 does, with a line in the server log), scales 16-bit greyscale to 8 bits
(PIL's own conversion clips it to white) and applies the EXIF rotation of camera photos.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # PIL's JPEG reader takes cameras' MPO files too
FORMAT_NAMES = "PNG, JPEG, WEBP, GIF, BMP or TIFF"
BACKGROUND = (255, 255, 255)  # what transparent pixels of an input picture become (A1111's default)
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
_SNIFF_BYTES = 4096
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_ORIENTATION = 0x0112  # the EXIF tag of a photo's rotation


def open_picture(source: str | os.PathLike[str] | bytes, field: str) -> Image.Image:
    """The picture in ``source`` (a file path or the file's bytes), loaded, its ``info`` (text chunks) kept.

    ``field`` names the input in messages ("init_images[0]", "The file 'cat.png'"). Raises ValueError
    with a readable message for an empty file, an SVG, a file that is no picture LoRA Studio reads, too
    many pixels, and a damaged or truncated file.
    """
    data = _read(source, field)
    if not data:
        raise ValueError(f"{field} is an empty file (0 bytes): choose the picture again.")
    if _is_svg(data[:_SNIFF_BYTES]):
        raise ValueError(f"{field} is an SVG: vector images are not supported; export it as a PNG first.")
    image = _identify(data, field)
    _check_pixels(image.size, field)
    try:
        frames = getattr(image, "n_frames", 1)  # a GIF is read through to count them
        image.load()
    except Image.DecompressionBombError:
        raise ValueError(f"{field} has too many pixels: more than the {_limit_text()}.") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ValueError(_damaged(field, image.format or "image", exc)) from None
    if frames > 1:
        log.warning("%s has %d frames (an animation or a multi-picture file): using its first frame, as A1111 does.",
                    field, frames)
    return _eight_bit(_upright(image), field)


def _identify(data: bytes, field: str) -> Image.Image:
    """The opened (not yet decoded) picture, or the message for a file PIL cannot identify."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller checks, with the size
            return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:  # over twice the limit: PIL refuses before the size is known
        raise ValueError(f"{field} has too many pixels: more than the {_limit_text()}.") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        kind = next((name for signature, name in _SIGNATURES if data.startswith(signature)), None)
        if not isinstance(exc, UnidentifiedImageError):
            raise ValueError(_damaged(field, kind or "image", exc)) from None
        if kind:
            raise ValueError(f"{field} is a damaged {kind} file: its header cannot be read.") from None
        raise ValueError(f"{field} is not an image LoRA Studio reads: send a {FORMAT_NAMES} file.") from None


def as_rgb(image: Image.Image) -> Image.Image:
    """``image`` as RGB, transparent pixels flattened onto white."""
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def as_mask(image: Image.Image) -> Image.Image:
    """``image`` as a greyscale mask (white = repaint). With real transparency the alpha channel is the
    mask, as A1111 reads such masks."""
    if _has_alpha(image):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha
    return image.convert("L")


def picture_as(image: Image.Image, mode: str | None) -> Image.Image:
    """``image`` in ``mode``: RGB flattened onto white, L read as a mask (``as_mask``), None as it is."""
    if mode is None or image.mode == mode:
        return image
    if mode == "RGB":
        return as_rgb(image)
    return as_mask(image) if mode == "L" else image.convert(mode)


def _read(source: str | os.PathLike[str] | bytes, field: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ValueError(f"{field} could not be read: {exc.strerror or exc}.") from None


def _is_svg(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(b"<") and b"<svg" in text


def _limit_text() -> str:
    limit = Image.MAX_IMAGE_PIXELS or 0
    return f"limit of {limit:,} pixels (about {limit / 1e6:.0f} megapixels) LoRA Studio reads"


def _check_pixels(size: tuple[int, int], field: str) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and size[0] * size[1] > limit:
        raise ValueError(f"{field} has too many pixels: {size[0]}x{size[1]} is {size[0] * size[1]:,}, "
                         f"more than the {_limit_text()}.")


def _damaged(field: str, kind: str, exc: BaseException) -> str:
    detail = str(exc) or exc.__class__.__name__
    if "truncated" in detail.lower() or isinstance(exc, EOFError):
        return f"{field} is truncated: the {kind} file ends before the picture does; upload the whole file again."
    return f"{field} is a damaged {kind} file and cannot be read ({detail})."


def _upright(image: Image.Image) -> Image.Image:
    """A photo turned as its camera recorded (EXIF orientation); text chunks are kept."""
    try:
        if image.getexif().get(_ORIENTATION, 1) in (0, 1):
            return image
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as exc:  # a broken EXIF block: the pixels are fine
        log.warning("ignoring the unreadable EXIF rotation of a picture: %s", exc)
        return image


def _eight_bit(image: Image.Image, field: str) -> Image.Image:
    """16-bit greyscale scaled (not clipped) to 8 bits; other unusual modes converted to RGB(A)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image)
        if wide.dtype.itemsize > 2:  # mode I: 32-bit, read as 16-bit values
            wide = np.clip(wide, 0, 65535)
        scaled = Image.fromarray((wide >> 8).astype(np.uint8))  # the high byte: 65535 -> 255, 32768 -> 128
        scaled.info = dict(image.info)
        return scaled
    if image.mode in _CONVERTIBLE_MODES:
        return image
    try:
        return image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except ValueError:
        raise ValueError(f"{field} uses a pixel format LoRA Studio cannot convert (mode {image.mode}); "
                         "save it as an 8-bit PNG.") from None


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
