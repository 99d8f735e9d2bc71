"""The img2img tab: drop or paste an image, choose how much to change it."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from app.engine import Engine, Img2ImgRequest
from app.engine.requests import RESIZE_MODES
from app.ui.generate_tab import GenerateTab, QuickSettings, output_controls, settings_controls, slider_range, wire_generate
from app.ui.picture_input import picture_input


def build_img2img_tab(engine: Engine, quick: QuickSettings) -> GenerateTab:
    with gr.Row():
        with gr.Column(scale=1):
            image = picture_input(label="Image", type="pil", sources=["upload", "clipboard"], height=360,
                                  elem_id="img2img_image")
            with gr.Row():
                strength = gr.Slider(**slider_range("denoising_strength", Img2ImgRequest), value=0.75,
                                     label="Denoising strength")
                resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], type="index",  # A1111's numbers
                                       label="Resize mode")
            settings, buttons = settings_controls(engine, "img2img", quick)
        with gr.Column(scale=1):
            outputs = output_controls("img2img")

    inputs = settings.by_field() | {"init_image": image, "denoising_strength": strength, "resize_mode": resize_mode}
    wire_generate(engine, "img2img", "img2img", inputs, buttons, outputs, settings)
    # queued: Gradio shows the error of a queued event (a bad file's message) and drops that of an unqueued one
    image.change(_size_of, image, [settings.width, settings.height], api_name=False, show_progress="hidden")
    return GenerateTab(settings, outputs, buttons.styles, inputs, image)


def _size_of(image: Image.Image | None):
    """New images set width/height to their own size (rounded to a multiple of 8), as people expect."""
    if image is None:
        return gr.update(), gr.update()
    return max(64, image.width // 8 * 8), max(64, image.height // 8 * 8)
