"""The img2img tab: drop or paste an image, choose how much to change it; or SD upscale it."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from app.engine import Engine, Img2ImgRequest
from app.engine.requests import RESIZE_MODES
from app.ui.extras_tab import refreshed_picker, upscaler_choices
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
            sd_upscale = sd_upscale_controls(engine)  # below the settings, where A1111 puts its scripts
        with gr.Column(scale=1):
            outputs = output_controls("img2img")

    inputs = settings.by_field() | {"init_image": image, "denoising_strength": strength, "resize_mode": resize_mode,
                                    **sd_upscale}  # appended: API positions stay
    wire_generate(engine, "img2img", "img2img", inputs, buttons, outputs, settings)
    upscaler = sd_upscale["sd_upscale_upscaler"]
    buttons.refresh.click(lambda current: refreshed_picker(upscaler_choices(engine), current,
                                                           Img2ImgRequest.sd_upscale_upscaler),
                          upscaler, upscaler, api_name=False, queue=False)
    # queued: Gradio shows the error of a queued event (a bad file's message) and drops that of an unqueued one
    image.change(_size_of, image, [settings.width, settings.height], api_name=False, show_progress="hidden")
    return GenerateTab(settings, outputs, buttons.styles, inputs, image)


def sd_upscale_controls(engine: Engine) -> dict[str, gr.components.Component]:
    """The SD upscale accordion (A1111's script), its controls by field name."""
    with gr.Accordion("SD upscale", open=False, elem_id="img2img_sd_upscale"):
        gr.Markdown("Upscale the image by the scale factor, then redraw it in overlapping tiles of Width x Height "
                    "at the denoising strength (0.2-0.4 adds detail and keeps the picture); the overlaps are "
                    "blended. The result is the upscaled size; Batch size draws that many tiles at once.")
        enable = gr.Checkbox(value=False, label="SD upscale", elem_id="img2img_sd_upscale_enable")
        with gr.Row():
            upscaler = gr.Dropdown(upscaler_choices(engine), value=Img2ImgRequest.sd_upscale_upscaler,
                                   label="Upscaler", elem_id="img2img_sd_upscale_upscaler")
            scale = gr.Slider(**slider_range("sd_upscale_scale", Img2ImgRequest), value=2.0, label="Scale factor",
                              elem_id="img2img_sd_upscale_scale")
            overlap = gr.Slider(**slider_range("sd_upscale_overlap", Img2ImgRequest), value=64,
                                label="Tile overlap, pixels", elem_id="img2img_sd_upscale_overlap")
    return {"sd_upscale": enable, "sd_upscale_upscaler": upscaler, "sd_upscale_scale": scale,
            "sd_upscale_overlap": overlap}


def _size_of(image: Image.Image | None):
    """New images set width/height to their own size (rounded to a multiple of 8), as people expect."""
    if image is None:
        return gr.update(), gr.update()
    return max(64, image.width // 8 * 8), max(64, image.height // 8 * 8)
