"""The img2img tab: drop or paste an image, choose how much to change it."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from app.engine import Engine, Img2ImgRequest
from app.engine.requests import RESIZE_MODES
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


def build_img2img_tab(engine: Engine, quick: QuickSettings) -> GenerateTab:
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="Image", type="pil", sources=["upload", "clipboard"], height=360, elem_id="img2img_image")
            with gr.Row():
                strength = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength")
                resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize mode")
            settings, buttons = settings_controls(engine, "img2img", quick)
        with gr.Column(scale=1):
            outputs = output_controls("img2img")

    def img2img(model: str, vae: str, prompt: str, negative_prompt: str, sampler: str, schedule_type: str, steps: float,
                cfg_scale: float, width: float, height: float, seed: float, batch_count: float, batch_size: float,
                clip_skip: float, emphasis: str, styles: list[str], tiling: bool, init_image: Image.Image | None,
                denoising_strength: float, resize_mode: str, request: gr.Request):
        fields = request_fields(model, vae, prompt, negative_prompt, sampler, schedule_type, steps, cfg_scale, width,
                                height, seed, batch_count, batch_size, clip_skip, emphasis, styles, tiling)
        job = Img2ImgRequest(**fields, init_image=init_image, denoising_strength=float(denoising_strength),
                             resize_mode=resize_mode)
        yield from stream_job(engine, job, owner_of(request))

    wire_generate(engine, "img2img", settings, buttons, outputs, img2img, [image, strength, resize_mode])
    image.change(_size_of, image, [settings.width, settings.height], api_name=False, queue=False)
    return GenerateTab(settings, outputs, buttons.styles, image)


def _size_of(image: Image.Image | None):
    """New images set width/height to their own size (rounded to a multiple of 8), as people expect."""
    if image is None:
        return gr.update(), gr.update()
    return max(64, image.width // 8 * 8), max(64, image.height // 8 * 8)
