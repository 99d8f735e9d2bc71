"""The shared body of the generate tabs: settings, Generate/Interrupt, progress, preview, gallery."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.engine import Engine, GenerationRequest
from app.engine.samplers import SAMPLER_NAMES, SCHEDULE_TYPES
from app.ui.progress import progress_html

log = logging.getLogger(__name__)


def owner_of(request: gr.Request | None) -> str:
    """Each browser session is its own owner: it sees and interrupts only its own jobs."""
    if request is None or not request.session_hash:
        return "api"
    return f"session:{request.session_hash}"


@dataclass
class SettingsControls:
    """The controls every generate tab has, in the order handlers receive them."""

    model: gr.Dropdown
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    sampler: gr.Dropdown
    schedule_type: gr.Dropdown
    steps: gr.Slider
    cfg_scale: gr.Slider
    width: gr.Slider
    height: gr.Slider
    seed: gr.Number
    batch_count: gr.Slider
    batch_size: gr.Slider

    def as_list(self) -> list[gr.components.Component]:
        return list(self.__dict__.values())


def request_fields(model: str | None, prompt: str, negative_prompt: str, sampler: str, schedule_type: str,
                   steps: float, cfg_scale: float, width: float, height: float, seed: float | None,
                   batch_count: float, batch_size: float) -> dict[str, Any]:
    """Request fields from the SettingsControls values (in their order); sliders arrive as floats."""
    return dict(
        model=model or None, prompt=prompt or "", negative_prompt=negative_prompt or "", sampler=sampler,
        schedule_type=schedule_type, steps=int(steps), cfg_scale=float(cfg_scale), width=int(width),
        height=int(height), seed=int(seed if seed is not None else -1), batch_count=int(batch_count),
        batch_size=int(batch_size),
    )


def settings_controls(engine: Engine, tab: str) -> SettingsControls:
    """Build the settings column (inside the caller's layout)."""
    card = _default_card(engine)
    names = [e.name for e in engine.registry.checkpoints()]
    model = gr.Dropdown(names, value=engine.config.default_model, label="Checkpoint", elem_id=f"{tab}_model")
    prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (Ctrl+Enter to generate)", elem_id=f"{tab}_prompt")
    negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{tab}_negative")
    with gr.Row():
        sampler = gr.Dropdown(list(SAMPLER_NAMES), value="Euler a", label="Sampling method")
        schedule = gr.Dropdown(list(SCHEDULE_TYPES), value="Automatic", label="Schedule type")
    steps = gr.Slider(1, 150, value=card.get("default_steps", 20), step=1, label="Sampling steps")
    with gr.Row():
        width = gr.Slider(64, 2048, value=card.get("default_width", 512), step=8, label="Width")
        height = gr.Slider(64, 2048, value=card.get("default_height", 512), step=8, label="Height")
    with gr.Row():
        batch_count = gr.Slider(1, 100, value=1, step=1, label="Batch count")
        batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size")
    cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale")
    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id=f"{tab}_seed")
    return SettingsControls(model, prompt, negative, sampler, schedule, steps, cfg, width, height, seed,
                            batch_count, batch_size)


def stream_job(engine: Engine, request: GenerationRequest, owner: str) -> Iterator[tuple[Any, Any, Any, Any]]:
    """Submit and yield (gallery, preview, progress html, info) as the job advances."""
    try:
        job = engine.submit(request, owner=owner)
    except ValueError as exc:
        log.warning("rejected request from %s: %s", owner, exc)
        raise gr.Error(str(exc)) from exc
    for event in job.events():
        if event.phase == "done":
            result = event.result
            assert result is not None
            gallery = [(str(p), None) for p in result.paths] if result.paths else result.images
            yield gallery, gr.update(visible=False), progress_html(event), result.infotexts[0] if result.infotexts else ""
        elif event.phase == "failed":
            raise gr.Error(event.message)
        elif event.phase == "cancelled":
            yield gr.update(), gr.update(visible=False), progress_html(event), ""
        else:
            preview = gr.update(value=event.preview, visible=True) if event.preview is not None else gr.update()
            yield gr.update(), preview, progress_html(event), gr.update()


def interrupt(engine: Engine) -> Callable[[gr.Request], str]:
    def handler(request: gr.Request) -> str:
        count = engine.cancel_all_of(owner_of(request))
        return f"Interrupting {count} job{'s' if count != 1 else ''}" if count else "Nothing to interrupt"
    return handler


def _default_card(engine: Engine) -> dict:
    try:
        return engine.registry.find_checkpoint(engine.config.default_model or "").card()
    except ValueError:
        return {}


@dataclass
class OutputControls:
    """The right-hand column of a generate tab."""

    generate: gr.Button
    interrupt: gr.Button
    progress: gr.HTML
    preview: gr.Image
    gallery: gr.Gallery
    info: gr.Textbox
    status: gr.Markdown

    def stream_outputs(self) -> list[gr.components.Component]:
        return [self.gallery, self.preview, self.progress, self.info]


def output_controls(tab: str) -> OutputControls:
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate")
        stop = gr.Button("Interrupt", elem_id=f"{tab}_interrupt")
    progress = gr.HTML(elem_id=f"{tab}_progress")
    preview = gr.Image(label="Preview", visible=False, interactive=False, elem_id=f"{tab}_preview")
    gallery = gr.Gallery(label="Output", columns=2, format="png", elem_id=f"{tab}_gallery")
    info = gr.Textbox(label="Generation parameters", lines=3, interactive=False, elem_id=f"{tab}_info")
    status = gr.Markdown(elem_id=f"{tab}_status")
    return OutputControls(generate, stop, progress, preview, gallery, info, status)


def wire_generate(engine: Engine, tab: str, settings: SettingsControls, outputs: OutputControls,
                  handler: Callable[..., Iterator[Any]], extra_inputs: list[gr.components.Component]) -> None:
    """Generate button, Ctrl+Enter in the prompt, and Interrupt."""
    inputs = settings.as_list() + extra_inputs
    outputs.generate.click(handler, inputs, outputs.stream_outputs(), api_name=tab, concurrency_limit=None)
    settings.prompt.submit(handler, inputs, outputs.stream_outputs(), api_name=False, concurrency_limit=None)
    outputs.interrupt.click(interrupt(engine), None, outputs.status, api_name=False, queue=False)
