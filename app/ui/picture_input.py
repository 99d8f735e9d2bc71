"""The picture inputs of the tabs that read an uploaded picture (img2img, the inpaint mask, PNG info).

Uploads are decoded by ``app.engine.image_input`` instead of by Gradio, so a bad file is a message that
names it and what is wrong, the one the REST API gives for the same file.
"""

from __future__ import annotations

import base64
import binascii
import logging
from functools import partial
from typing import Any

import gradio as gr
from gradio import image_utils, processing_utils
from gradio.data_classes import FileData, ImageData
from PIL import Image

from app.engine.image_input import open_picture, picture_as

log = logging.getLogger(__name__)

_NAME_CHARS = 60  # of an uploaded file's name in a message


def upload_field(what: str, payload: ImageData | FileData | None) -> str:
    """How messages name an upload: ``what`` and the file's own name ("The file 'cat.png'"). Gradio shows
    messages as HTML: the name loses the characters that could make markup."""
    name = (payload.orig_name or "") if payload is not None else ""
    name = name.translate({ord(c): None for c in '<>&"`'})[:_NAME_CHARS]
    return f"{what} {name!r}" if name else what


def decode_upload(payload: ImageData | FileData, what: str) -> Image.Image:
    """The picture of an uploaded file (or a ``data:`` URL), or gr.Error with ``open_picture``'s message."""
    field = upload_field(what, payload)
    if payload.url and payload.url.startswith("data:"):
        try:
            source: str | bytes = base64.b64decode(processing_utils.extract_base64_data(payload.url))
        except (binascii.Error, ValueError):
            raise gr.Error(f"{field} is a data: URL that is not valid base64.", print_exception=False) from None
    elif payload.path:
        source = payload.path
    else:
        raise gr.Error(f"{field} did not arrive: upload it again.", print_exception=False)
    return picture_or_error(source, field)


def picture_or_error(source: str | bytes, field: str) -> Image.Image:
    """``open_picture``, its refusal as the gr.Error a person sees (and a line in the server log)."""
    try:
        return open_picture(source, field)
    except ValueError as exc:
        log.info("refused an upload: %s", exc)
        raise gr.Error(str(exc), print_exception=False) from None


def picture_input(what: str = "The file", **kwargs: Any) -> gr.Image:
    """A ``gr.Image`` (``kwargs`` are its arguments) whose uploads ``open_picture`` decodes: Gradio's own
    decoding of a bad file fails with its generic "the app has raised an exception". ``what`` names the
    upload in messages ("The mask file 'm.png' is ..."). An instance's ``preprocess`` is replaced rather
    than the class subclassed, because Gradio writes a ``.pyi`` stub beside every Component subclass."""
    component = gr.Image(**kwargs)
    component.preprocess = partial(_read_picture, component, what)  # type: ignore[method-assign]
    return component


def _read_picture(component: gr.Image, what: str, payload: ImageData | None) -> Any:
    if payload is None:
        return None
    picture = picture_as(decode_upload(payload, what), component.image_mode)
    return image_utils.format_image(picture, type=component.type, cache_dir=component.GRADIO_CACHE, format="png")
