"""txt2img's "Hires. fix" accordion, as in A1111: its controls (by A1111 field) and the final-size line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.engine import Txt2ImgRequest
from app.engine.hires import HIRES_UPSCALERS, hires_size
from app.engine.requests import SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER
from app.engine.samplers import SAMPLER_NAMES, SCHEDULE_TYPES
from app.ui.generate_tab import slider_range


def default(name: str) -> Any:
    """A Txt2ImgRequest field's default (the controls start from the engine's defaults)."""
    return Txt2ImgRequest.__dataclass_fields__[name].default


@dataclass
class HiresControls:
    """The hires inputs; ``size`` is display only."""

    enable: gr.Checkbox
    upscaler: gr.Dropdown
    steps: gr.Slider
    denoising_strength: gr.Slider
    scale: gr.Slider
    resize_x: gr.Slider
    resize_y: gr.Slider
    checkpoint: gr.Dropdown
    sampler: gr.Dropdown
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    schedule_type: gr.Dropdown
    size: gr.Markdown

    def by_field(self) -> dict[str, gr.components.Component]:
        """The inputs by A1111 API field, in the Gradio API's order (the schedule type, added later, last)."""
        return {"enable_hr": self.enable, "hr_upscaler": self.upscaler, "hr_second_pass_steps": self.steps,
                "denoising_strength": self.denoising_strength, "hr_scale": self.scale, "hr_resize_x": self.resize_x,
                "hr_resize_y": self.resize_y, "hr_checkpoint_name": self.checkpoint, "hr_sampler_name": self.sampler,
                "hr_prompt": self.prompt, "hr_negative_prompt": self.negative_prompt,
                "hr_scheduler": self.schedule_type}


def hires_size_text(width: float | None, height: float | None, scale: float | None, resize_x: float | None,
                    resize_y: float | None) -> str:
    """"from 512x512 to 1024x1024" (Markdown), or "" when the values make no size."""
    try:
        request = Txt2ImgRequest(width=int(width), height=int(height), hr_scale=float(scale),  # type: ignore[arg-type]
                                 hr_resize_x=int(resize_x), hr_resize_y=int(resize_y))  # type: ignore[arg-type]
        sides = (request.width, request.height, request.hr_scale)
        if min(sides) <= 0 or min(request.hr_resize_x, request.hr_resize_y) < 0:
            return ""
        final_w, final_h = hires_size(request)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return ""
    return f"from **{request.width}x{request.height}** to **{final_w}x{final_h}**"


def checkpoint_choices(checkpoints: Sequence[str]) -> list[str]:
    return [SAME_CHECKPOINT, *checkpoints]


def upscaler_choices(model_upscalers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(label, name) of the hires upscalers: the latent modes and built-ins, then the upscaler model files."""
    return [(name, name) for name in HIRES_UPSCALERS] + list(model_upscalers)


def hires_controls(tab: str, checkpoints: Sequence[str], width: float, height: float,
                   model_upscalers: Sequence[tuple[str, str]] = ()) -> HiresControls:
    """Build the closed "Hires. fix" accordion (inside the caller's layout); ``width`` and ``height`` are the
    first pass's starting size, for the size line; ``model_upscalers``: (label, name) of the upscaler files."""
    with gr.Accordion("Hires. fix", open=False, elem_id=f"{tab}_hires"):
        with gr.Row(equal_height=True):
            enable = gr.Checkbox(value=False, label="Enable", container=False, scale=0, min_width=120,
                                 elem_id=f"{tab}_enable_hr")
            size = gr.Markdown(hires_size_text(width, height, default("hr_scale"), 0, 0), elem_id=f"{tab}_hires_size")
        with gr.Row():  # two controls a row: three squeeze the sliders' labels in a half-page column
            upscaler = gr.Dropdown(upscaler_choices(model_upscalers), value=default("hr_upscaler"), label="Upscaler",
                                   elem_id=f"{tab}_hr_upscaler")
            steps = gr.Slider(**slider_range("hr_second_pass_steps", Txt2ImgRequest), value=0, label="Hires steps",
                              info="0 = same as sampling steps", elem_id=f"{tab}_hires_steps")
        with gr.Row():
            denoising = gr.Slider(**slider_range("denoising_strength", Txt2ImgRequest),
                                  value=default("denoising_strength"), label="Denoising strength",
                                  elem_id=f"{tab}_denoising_strength")
            scale = gr.Slider(**slider_range("hr_scale", Txt2ImgRequest), value=default("hr_scale"), label="Upscale by",
                              elem_id=f"{tab}_hr_scale")
        with gr.Row():
            resize_x = gr.Slider(**slider_range("hr_resize_x", Txt2ImgRequest), value=0, label="Resize width to",
                                 info="0 = use Upscale by", elem_id=f"{tab}_hr_resize_x")
            resize_y = gr.Slider(**slider_range("hr_resize_y", Txt2ImgRequest), value=0, label="Resize height to",
                                 info="0 = use Upscale by", elem_id=f"{tab}_hr_resize_y")
        with gr.Accordion("Hires prompt, sampler and checkpoint", open=False, elem_id=f"{tab}_hires_extra"):
            checkpoint = gr.Dropdown(checkpoint_choices(checkpoints), value=SAME_CHECKPOINT,
                                     label="Hires checkpoint", allow_custom_value=True, elem_id=f"{tab}_hr_checkpoint")
            with gr.Row():  # two a row, as above: three squeeze the dropdowns' values
                sampler = gr.Dropdown([SAME_SAMPLER, *SAMPLER_NAMES], value=SAME_SAMPLER, label="Hires sampler",
                                      elem_id=f"{tab}_hr_sampler")
                schedule = gr.Dropdown([SAME_SCHEDULER, *SCHEDULE_TYPES], value=SAME_SCHEDULER,
                                       label="Hires schedule type", elem_id=f"{tab}_hr_scheduler")
            prompt = gr.Textbox("", label="Hires prompt", lines=2, placeholder="empty = same as the prompt",
                                elem_id=f"{tab}_hr_prompt")
            negative = gr.Textbox("", label="Hires negative prompt", lines=2,
                                  placeholder="empty = same as the negative prompt", elem_id=f"{tab}_hr_neg_prompt")
    return HiresControls(enable, upscaler, steps, denoising, scale, resize_x, resize_y, checkpoint, sampler, prompt,
                         negative, schedule, size)


def wire_hires_size(controls: HiresControls, width: gr.Slider, height: gr.Slider) -> None:
    """Keep the size line in step with the first pass's size and the hires scale or resize."""
    inputs = [width, height, controls.scale, controls.resize_x, controls.resize_y]
    for component in inputs:
        component.change(hires_size_text, inputs, controls.size, api_name=False, queue=False,
                         show_progress="hidden")
