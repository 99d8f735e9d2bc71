"""The txt2img tab."""

from __future__ import annotations

import gradio as gr

from app.engine import Engine, Txt2ImgRequest
from app.ui.generate_tab import (
    GenerateTab,
    QuickSettings,
    model_choices,
    output_controls,
    owner_of,
    request_fields,
    settings_controls,
    stream_job,
    wire_generate,
)
from app.ui.hires_controls import checkpoint_choices, hires_controls, hires_fields, wire_hires_size


def build_txt2img_tab(engine: Engine, quick: QuickSettings) -> GenerateTab:
    with gr.Row():
        with gr.Column(scale=1):
            settings, buttons = settings_controls(engine, "txt2img", quick)
            hires = hires_controls("txt2img", model_choices(engine)[0], settings.width.value, settings.height.value)
        with gr.Column(scale=1):
            outputs = output_controls("txt2img")

    def txt2img(model: str, vae: str, prompt: str, negative_prompt: str, sampler: str, schedule_type: str, steps: float,
                cfg_scale: float, width: float, height: float, seed: float, batch_count: float, batch_size: float,
                clip_skip: float, emphasis: str, styles: list[str], tiling: bool, enable_hr: bool, hr_upscaler: str,
                hr_second_pass_steps: float, denoising_strength: float, hr_scale: float, hr_resize_x: float, hr_resize_y: float,
                hr_checkpoint: str, hr_sampler: str, hr_prompt: str, hr_negative_prompt: str, request: gr.Request):
        fields = request_fields(model, vae, prompt, negative_prompt, sampler, schedule_type, steps, cfg_scale, width,
                                height, seed, batch_count, batch_size, clip_skip, emphasis, styles, tiling)
        fields |= hires_fields(enable_hr, hr_upscaler, hr_second_pass_steps, denoising_strength, hr_scale, hr_resize_x,
                               hr_resize_y, hr_checkpoint, hr_sampler, hr_prompt, hr_negative_prompt)
        yield from stream_job(engine, Txt2ImgRequest(**fields), owner_of(request))

    wire_generate(engine, "txt2img", settings, buttons, outputs, txt2img, hires.as_list())
    wire_hires_size(hires, settings.width, settings.height)

    def refresh_checkpoints(current: str | None) -> gr.Dropdown:
        return gr.Dropdown(choices=checkpoint_choices(model_choices(engine)[0]), value=current)

    buttons.refresh.click(refresh_checkpoints, hires.checkpoint, hires.checkpoint, api_name=False, queue=False)
    return GenerateTab(settings, outputs, buttons.styles, hires=hires)
