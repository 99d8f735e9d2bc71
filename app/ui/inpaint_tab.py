"""The inpaint tab: drop an image, paint the mask on it in the browser (or upload a mask)."""

from __future__ import annotations

from functools import partial
from typing import Any

import gradio as gr
import numpy as np
from gradio import image_utils
from gradio.data_classes import FileData
from PIL import Image

from app.engine import Engine, InpaintRequest
from app.engine.image_input import picture_as
from app.engine.outpaint import OUTPAINT_FILLS
from app.engine.requests import INPAINT_AREAS
from app.ui.generate_tab import GenerateTab, QuickSettings, output_controls, settings_controls, slider_range, wire_generate
from app.ui.picture_input import decode_upload, picture_input, picture_or_error

MASKED_CONTENT_CHOICES = ("fill", "original")  # A1111's inpainting_fill numbers 0 and 1, in its order


def mask_from_editor(value: dict[str, Any] | None) -> tuple[Image.Image | None, Image.Image | None]:
    """(picture, mask) from an ImageEditor value: every painted pixel of any layer is masked."""
    if not value or value.get("background") is None:
        return None, None
    background = _as_image(value["background"]).convert("RGB")
    mask = np.zeros((background.height, background.width), dtype=bool)
    for layer in value.get("layers") or []:
        alpha = np.asarray(_as_image(layer).convert("RGBA").resize(background.size))[..., 3]
        mask |= alpha > 0
    return background, Image.fromarray((mask * 255).astype(np.uint8), mode="L")


def _as_image(value: Any) -> Image.Image:
    return value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value))


def picture_editor(**kwargs: Any) -> gr.ImageEditor:
    """A ``gr.ImageEditor`` whose background, layers and composite ``open_picture`` decodes, so that a bad
    file (sent through the API: a browser draws only what it can decode, and sends nothing else) is a
    message naming it. Each picture is converted to ``image_mode`` (RGB: flattened onto white). As with
    ``picture_input``, one instance's method is replaced: a subclass would get a ``.pyi`` from Gradio."""
    editor = gr.ImageEditor(**kwargs)
    editor.convert_and_format_image = partial(_editor_picture, editor)  # type: ignore[method-assign]
    return editor


def _editor_picture(editor: gr.ImageEditor, file: FileData | bytes | None, flatten_on_white: bool = False) -> Any:
    """ImageEditor.convert_and_format_image's work; ``flatten_on_white`` (Gradio's argument) is what
    ``picture_as`` does for an RGB ``image_mode`` anyway."""
    if file is None:
        return None
    if isinstance(file, (bytes, bytearray, memoryview)):  # what the browser sent as a blob
        picture = picture_or_error(bytes(file), "A picture from the editor")
    else:
        picture = decode_upload(file, "The file")
    picture = picture_as(picture, editor.image_mode)
    return image_utils.format_image(picture, type=editor.type, cache_dir=editor.GRADIO_CACHE, format="png")


def build_inpaint_tab(engine: Engine, quick: QuickSettings) -> GenerateTab:
    with gr.Row():
        with gr.Column(scale=1):
            editor = picture_editor(
                label="Image: paint over what to repaint", type="pil", sources=["upload", "clipboard"],
                brush=gr.Brush(default_size=24, colors=["#ffffff"], color_mode="fixed"),
                eraser=gr.Eraser(default_size=24), layers=False, transforms=(), elem_id="inpaint_editor",
            )
            uploaded_mask = picture_input("The mask file", label="Mask (optional; white = repaint, replaces the painted one)",
                                          type="pil", image_mode="L", sources=["upload"], elem_id="inpaint_mask")
            with gr.Row():
                mask_blur = gr.Slider(**slider_range("mask_blur", InpaintRequest), value=4, label="Mask blur")
                padding = gr.Slider(**slider_range("masked_padding", InpaintRequest), value=32,
                                    label="Only masked padding, pixels")
            with gr.Row():
                masked_content = gr.Radio(list(MASKED_CONTENT_CHOICES), value="original", type="index",
                                          label="Masked content")
                area = gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], type="index", label="Inpaint area")
            strength = gr.Slider(**slider_range("denoising_strength", InpaintRequest), value=0.75,
                                 label="Denoising strength")
            with gr.Accordion("Outpainting", open=False):
                gr.Markdown("Extend the canvas: only the new area is generated (clear the painted mask); "
                            "the original's pixels stay exactly. Sizes grow to multiples of 8.")
                with gr.Row():
                    sides = {f"outpaint_{side}": gr.Slider(**slider_range(f"outpaint_{side}", InpaintRequest), value=0,
                                                           label=f"{side.capitalize()}, pixels")
                             for side in ("left", "right", "up", "down")}
                outpaint_fill = gr.Radio(list(OUTPAINT_FILLS), value=OUTPAINT_FILLS[0],
                                         label="New area starts from (stretched edge colours or noise)")
            settings, buttons = settings_controls(engine, "inpaint", quick)
        with gr.Column(scale=1):
            outputs = output_controls("inpaint")

    inputs = settings.by_field() | {"init_image": editor, "mask": uploaded_mask, "mask_blur": mask_blur,
                                    "inpaint_full_res_padding": padding, "inpainting_fill": masked_content,
                                    "inpaint_full_res": area, "denoising_strength": strength,
                                    **sides, "outpaint_fill": outpaint_fill}  # appended: API positions stay
    wire_generate(engine, "inpaint", "inpaint", inputs, buttons, outputs, settings, prepare=editor_fields)
    editor.upload(_size_of_editor, editor, [settings.width, settings.height], api_name=False, show_progress="hidden")
    uploaded_mask.upload(_mask_uploaded, uploaded_mask, None, api_name=False, show_progress="hidden")  # a bad file: told now
    return GenerateTab(settings, outputs, buttons.styles, inputs, editor)


def editor_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The editor's picture as ``init_image`` and its painted layers as ``mask``; an uploaded mask wins."""
    picture, painted = mask_from_editor(values.get("init_image"))
    uploaded = values.get("mask")
    if uploaded is not None and picture is not None:
        painted = uploaded.convert("L").resize(picture.size)
    return {**values, "init_image": picture, "mask": painted}


def _mask_uploaded(mask: Image.Image | None) -> None:
    """Nothing: reading the upload (``picture_input``) is the check."""


def _size_of_editor(value: dict[str, Any] | None):
    picture, _ = mask_from_editor(value)
    if picture is None:
        return gr.update(), gr.update()
    return max(64, picture.width // 8 * 8), max(64, picture.height // 8 * 8)
