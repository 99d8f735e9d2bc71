"""txt2img's "Hires. fix" accordion, as in A1111: its controls, their request fields and the final-size line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import gradio as gr

from app.engine import Txt2ImgRequest
from app.engine.hires import HIRES_UPSCALERS, hires_size
from app.engine.infotext import parse_infotext, request_from_infotext
from app.engine.requests import MAX_HIRES_SCALE, MAX_SIZE, MAX_STEPS, SAME_CHECKPOINT, SAME_SAMPLER
from app.engine.samplers import SAMPLER_NAMES, split_sampler_name


def default(name: str) -> Any:
    """A Txt2ImgRequest field's default (the controls start from the engine's defaults)."""
    return Txt2ImgRequest.__dataclass_fields__[name].default


@dataclass
class HiresControls:
    """The hires inputs, in the order handlers (and API clients) pass them; ``size`` is display only."""

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
    size: gr.Markdown

    def as_list(self) -> list[gr.components.Component]:
        """The inputs, without the size line."""
        return [self.enable, self.upscaler, self.steps, self.denoising_strength, self.scale, self.resize_x,
                self.resize_y, self.checkpoint, self.sampler, self.prompt, self.negative_prompt]


def hires_fields(enable: bool | None, upscaler: str | None, steps: float | None, denoising_strength: float | None,
                 scale: float | None, resize_x: float | None, resize_y: float | None, checkpoint: str | None,
                 sampler: str | None, prompt: str | None, negative_prompt: str | None) -> dict[str, Any]:
    """Txt2ImgRequest keyword arguments from the HiresControls values (in their order); sliders arrive as
    floats, and a missing value takes the request's default."""
    def number(value: float | None, name: str, kind: type) -> Any:
        return kind(value) if value is not None else default(name)

    return dict(
        enable_hr=bool(enable), hr_upscaler=upscaler or default("hr_upscaler"),
        hr_second_pass_steps=number(steps, "hr_second_pass_steps", int),
        denoising_strength=number(denoising_strength, "denoising_strength", float),
        hr_scale=number(scale, "hr_scale", float),
        hr_resize_x=number(resize_x, "hr_resize_x", int),
        hr_resize_y=number(resize_y, "hr_resize_y", int),
        hr_checkpoint=checkpoint or SAME_CHECKPOINT, hr_sampler=sampler or SAME_SAMPLER,
        hr_prompt=prompt or "", hr_negative_prompt=negative_prompt or "",
    )


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


def _sampler_choice(name: str) -> Any:
    """A Hires sampler dropdown value for an infotext's name (old fused names too), or gr.update() to keep it."""
    if name in (SAME_SAMPLER, *SAMPLER_NAMES):
        return name
    try:
        base = split_sampler_name(name)[0]
    except ValueError:
        return gr.update()
    return base if base in SAMPLER_NAMES else gr.update()


def hires_values_from_infotext(text: str, checkpoints: Sequence[str] | None = None) -> list[Any]:
    """HiresControls values from a parameters text: all of them when it records a hires pass, else Enable off
    and the rest as they are. An upscaler this app lacks, or a hires checkpoint not in ``checkpoints`` (when
    given), keeps the current pick."""
    if not text or "Hires upscaler" not in parse_infotext(text):
        inputs = len(fields(HiresControls)) - 1  # all but the size line
        return [False] + [gr.update()] * (inputs - 1)
    request = request_from_infotext(text)
    assert isinstance(request, Txt2ImgRequest)
    upscaler = request.hr_upscaler if request.hr_upscaler in HIRES_UPSCALERS else gr.update()
    checkpoint: Any = request.hr_checkpoint or SAME_CHECKPOINT
    if checkpoints is not None and checkpoint not in checkpoint_choices(checkpoints):
        checkpoint = gr.update()
    return [True, upscaler, request.hr_second_pass_steps, request.denoising_strength, request.hr_scale,
            request.hr_resize_x, request.hr_resize_y, checkpoint, _sampler_choice(request.hr_sampler or SAME_SAMPLER),
            request.hr_prompt, request.hr_negative_prompt]


def checkpoint_choices(checkpoints: Sequence[str]) -> list[str]:
    return [SAME_CHECKPOINT, *checkpoints]


def hires_controls(tab: str, checkpoints: Sequence[str], width: float, height: float) -> HiresControls:
    """Build the closed "Hires. fix" accordion (inside the caller's layout); ``width`` and ``height`` are the
    first pass's starting size, for the size line."""
    with gr.Accordion("Hires. fix", open=False, elem_id=f"{tab}_hires"):
        with gr.Row(equal_height=True):
            enable = gr.Checkbox(value=False, label="Enable", container=False, scale=0, min_width=120,
                                 elem_id=f"{tab}_enable_hr")
            size = gr.Markdown(hires_size_text(width, height, default("hr_scale"), 0, 0), elem_id=f"{tab}_hires_size")
        with gr.Row():  # two controls a row: three squeeze the sliders' labels in a half-page column
            upscaler = gr.Dropdown(list(HIRES_UPSCALERS), value=default("hr_upscaler"), label="Upscaler",
                                   elem_id=f"{tab}_hr_upscaler")
            steps = gr.Slider(0, MAX_STEPS, value=0, step=1, label="Hires steps", info="0 = same as sampling steps",
                              elem_id=f"{tab}_hires_steps")
        with gr.Row():
            denoising = gr.Slider(0, 1, value=default("denoising_strength"), step=0.01, label="Denoising strength",
                                  elem_id=f"{tab}_denoising_strength")
            scale = gr.Slider(1, MAX_HIRES_SCALE, value=default("hr_scale"), step=0.05, label="Upscale by",
                              elem_id=f"{tab}_hr_scale")
        with gr.Row():
            resize_x = gr.Slider(0, MAX_SIZE, value=0, step=8, label="Resize width to", info="0 = use Upscale by",
                                 elem_id=f"{tab}_hr_resize_x")
            resize_y = gr.Slider(0, MAX_SIZE, value=0, step=8, label="Resize height to", info="0 = use Upscale by",
                                 elem_id=f"{tab}_hr_resize_y")
        with gr.Accordion("Hires prompt, sampler and checkpoint", open=False, elem_id=f"{tab}_hires_extra"):
            with gr.Row():
                checkpoint = gr.Dropdown(checkpoint_choices(checkpoints), value=SAME_CHECKPOINT,
                                         label="Hires checkpoint", allow_custom_value=True,
                                         elem_id=f"{tab}_hr_checkpoint")
                sampler = gr.Dropdown([SAME_SAMPLER, *SAMPLER_NAMES], value=SAME_SAMPLER, label="Hires sampler",
                                      elem_id=f"{tab}_hr_sampler")
            prompt = gr.Textbox("", label="Hires prompt", lines=2, placeholder="empty = same as the prompt",
                                elem_id=f"{tab}_hr_prompt")
            negative = gr.Textbox("", label="Hires negative prompt", lines=2,
                                  placeholder="empty = same as the negative prompt", elem_id=f"{tab}_hr_neg_prompt")
    return HiresControls(enable, upscaler, steps, denoising, scale, resize_x, resize_y, checkpoint, sampler, prompt,
                         negative, size)


def wire_hires_size(controls: HiresControls, width: gr.Slider, height: gr.Slider) -> None:
    """Keep the size line in step with the first pass's size and the hires scale or resize."""
    inputs = [width, height, controls.scale, controls.resize_x, controls.resize_y]
    for component in inputs:
        component.change(hires_size_text, inputs, controls.size, api_name=False, queue=False,
                         show_progress="hidden")
