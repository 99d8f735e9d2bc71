"""PNG info: read the A1111 "parameters" of any PNG and send them to a generate tab."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from app.engine.infotext import parse_infotext
from app.engine.outputs import read_parameters
from app.ui.picture_input import picture_input


def read_png_info(image: Image.Image | None) -> tuple[str, dict]:
    """The parameters text and its parsed fields; a PNG without them says so."""
    if image is None:
        return "", {}
    text = read_parameters(image)
    if not text:
        return "This image carries no generation parameters.", {}
    return text, parse_infotext(text)


def build_png_info_tab() -> tuple[gr.Textbox, gr.Button, gr.Button]:
    with gr.Row():
        with gr.Column():
            image = picture_input(label="Source", type="pil", sources=["upload", "clipboard"], image_mode=None,
                                  elem_id="png_info_image")
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="png_info_text")
            parsed = gr.JSON(label="Fields")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="png_info_to_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="png_info_to_img2img")
    image.change(read_png_info, image, [text, parsed], api_name="png_info")
    return text, to_txt2img, to_img2img
