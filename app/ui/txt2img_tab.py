"""The txt2img tab."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.engine import Engine, Txt2ImgRequest
from app.ui.generate_tab import interrupt, owner_of, request_fields, settings_controls, stream_job


def build_txt2img_tab(engine: Engine) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            settings = settings_controls(engine, "txt2img")
        with gr.Column(scale=1):
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
                stop = gr.Button("Interrupt", elem_id="txt2img_interrupt")
            progress = gr.HTML(elem_id="txt2img_progress")
            preview = gr.Image(label="Preview", visible=False, interactive=False, elem_id="txt2img_preview")
            gallery = gr.Gallery(label="Output", columns=2, format="png", elem_id="txt2img_gallery")
            info = gr.Textbox(label="Generation parameters", lines=3, interactive=False, elem_id="txt2img_info")
            status = gr.Markdown()

    def txt2img(model: str, prompt: str, negative_prompt: str, sampler: str, schedule_type: str, steps: float,
                cfg_scale: float, width: float, height: float, seed: float, batch_count: float, batch_size: float,
                request: gr.Request):
        fields = request_fields(model, prompt, negative_prompt, sampler, schedule_type, steps, cfg_scale, width,
                                height, seed, batch_count, batch_size)
        yield from stream_job(engine, Txt2ImgRequest(**fields), owner_of(request))

    run = txt2img
    inputs = settings.as_list()
    outputs = [gallery, preview, progress, info]
    generate.click(run, inputs, outputs, api_name="txt2img", concurrency_limit=None)
    settings.prompt.submit(run, inputs, outputs, api_name=False, concurrency_limit=None)
    stop.click(interrupt(engine), None, status, api_name=False, queue=False)
