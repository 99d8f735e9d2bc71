"""The txt2img tab."""

from __future__ import annotations

import gradio as gr

from app.engine import Engine, Txt2ImgRequest
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


def build_txt2img_tab(engine: Engine, quick: QuickSettings) -> GenerateTab:
    with gr.Row():
        with gr.Column(scale=1):
            settings, buttons = settings_controls(engine, "txt2img", quick)
        with gr.Column(scale=1):
            outputs = output_controls("txt2img")

    def txt2img(model: str, vae: str, prompt: str, negative_prompt: str, sampler: str, schedule_type: str, steps: float,
                cfg_scale: float, width: float, height: float, seed: float, batch_count: float, batch_size: float,
                clip_skip: float, emphasis: str, request: gr.Request):
        fields = request_fields(model, vae, prompt, negative_prompt, sampler, schedule_type, steps, cfg_scale, width,
                                height, seed, batch_count, batch_size, clip_skip, emphasis)
        yield from stream_job(engine, Txt2ImgRequest(**fields), owner_of(request))

    wire_generate(engine, "txt2img", settings, buttons, outputs, txt2img, [])
    return GenerateTab(settings, outputs)
