"""The inpaint tab: drop an image, paint the mask on it in the browser (or upload a mask)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from app.engine import Engine, InpaintRequest
from app.engine.requests import INPAINT_AREAS, MASKED_CONTENTS
from app.ui.generate_tab import (
    GenerateTab,
    QuickSettings,
    output_controls,
    owner_of,
    request_fields,
    settings_controls,
    stream_job,
    wire_generate,
)


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


def build_inpaint_tab(engine: Engine, quick: QuickSettings) -> GenerateTab:
    with gr.Row():
        with gr.Column(scale=1):
            editor = gr.ImageEditor(
                label="Image: paint over what to repaint", type="pil", sources=["upload", "clipboard"],
                brush=gr.Brush(default_size=24, colors=["#ffffff"], color_mode="fixed"),
                eraser=gr.Eraser(default_size=24), layers=False, transforms=(), elem_id="inpaint_editor",
            )
            uploaded_mask = gr.Image(label="Mask (optional; white = repaint, replaces the painted one)",
                                     type="pil", image_mode="L", sources=["upload"], elem_id="inpaint_mask")
            with gr.Row():
                mask_blur = gr.Slider(0, 64, value=4, step=1, label="Mask blur")
                padding = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels")
            with gr.Row():
                masked_content = gr.Radio(list(MASKED_CONTENTS), value="original", label="Masked content")
                area = gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], label="Inpaint area")
            strength = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength")
            settings, buttons = settings_controls(engine, "inpaint", quick)
        with gr.Column(scale=1):
            outputs = output_controls("inpaint")

    def inpaint(model: str, vae: str, prompt: str, negative_prompt: str, sampler: str, schedule_type: str, steps: float,
                cfg_scale: float, width: float, height: float, seed: float, batch_count: float, batch_size: float,
                clip_skip: float, emphasis: str, styles: list[str], tiling: bool, image: dict[str, Any] | None,
                mask: Image.Image | None, mask_blur: float, masked_padding: float, masked_content: str, inpaint_area: str,
                denoising_strength: float, request: gr.Request):
        picture, painted = mask_from_editor(image)
        if mask is not None and picture is not None:
            painted = mask.convert("L").resize(picture.size)
        fields = request_fields(model, vae, prompt, negative_prompt, sampler, schedule_type, steps, cfg_scale, width,
                                height, seed, batch_count, batch_size, clip_skip, emphasis, styles, tiling)
        job = InpaintRequest(**fields, init_image=picture, mask=painted, mask_blur=int(mask_blur),
                             masked_padding=int(masked_padding), masked_content=masked_content,
                             inpaint_area=inpaint_area, denoising_strength=float(denoising_strength))
        yield from stream_job(engine, job, owner_of(request))

    extra = [editor, uploaded_mask, mask_blur, padding, masked_content, area, strength]
    wire_generate(engine, "inpaint", settings, buttons, outputs, inpaint, extra)
    editor.upload(_size_of_editor, editor, [settings.width, settings.height], api_name=False, queue=False)
    return GenerateTab(settings, outputs, buttons.styles, editor)


def _size_of_editor(value: dict[str, Any] | None):
    picture, _ = mask_from_editor(value)
    if picture is None:
        return gr.update(), gr.update()
    return max(64, picture.width // 8 * 8), max(64, picture.height // 8 * 8)
