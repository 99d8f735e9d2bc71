"""The txt2img tab."""

from __future__ import annotations

import gradio as gr

from app.engine import Engine, Txt2ImgRequest
from app.ui.generate_tab import GenerateTab, QuickSettings, model_choices, output_controls, settings_controls, wire_generate
from app.ui.extras_tab import model_upscaler_choices, refreshed_picker
from app.ui.hires_controls import checkpoint_choices, hires_controls, upscaler_choices, wire_hires_size


def build_txt2img_tab(engine: Engine, quick: QuickSettings) -> GenerateTab:
    with gr.Row():
        with gr.Column(scale=1):
            settings, buttons = settings_controls(engine, "txt2img", quick)
            hires = hires_controls("txt2img", model_choices(engine)[0], settings.width.value, settings.height.value,
                                   model_upscaler_choices(engine))
        with gr.Column(scale=1):
            outputs = output_controls("txt2img")

    inputs = settings.by_field() | hires.by_field()
    wire_generate(engine, "txt2img", "txt2img", inputs, buttons, outputs, settings)
    wire_hires_size(hires, settings.width, settings.height)

    def refresh_hires(checkpoint: str | None, upscaler: str | None) -> tuple[gr.Dropdown, gr.Dropdown]:
        return (gr.Dropdown(choices=checkpoint_choices(model_choices(engine)[0]), value=checkpoint),
                refreshed_picker(upscaler_choices(model_upscaler_choices(engine)), upscaler,
                                 Txt2ImgRequest.hr_upscaler))

    pickers = [hires.checkpoint, hires.upscaler]
    buttons.refresh.click(refresh_hires, pickers, pickers, api_name=False, queue=False)
    return GenerateTab(settings, outputs, buttons.styles, inputs)
