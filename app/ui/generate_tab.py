"""The shared body of the generate tabs: settings, Generate/Interrupt, progress, preview, gallery."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.engine import Engine, GenerationRequest
from app.engine.infotext import parse_infotext
from app.engine.requests import (
    MAX_BATCH_COUNT,
    MAX_BATCH_SIZE,
    MAX_CFG_SCALE,
    MAX_CLIP_SKIP,
    MAX_SIZE,
    MAX_STEPS,
    MIN_SIZE,
    SIZE_MULTIPLE,
)
from app.engine.prompt_parser import EMPHASIS_MODES
from app.engine.samplers import SAMPLER_NAMES, SCHEDULE_TYPES
from app.ui.embedding_picker import embedding_picker
from app.ui.lora_picker import lora_choices, lora_picker
from app.ui.progress import progress_html
from app.ui.styles_picker import StylesPicker, selected_names, styles_dropdown, styles_picker
from app.ui.token_counter import token_counter, wire_token_counters

if TYPE_CHECKING:
    from app.ui.hires_controls import HiresControls

log = logging.getLogger(__name__)

AUTOMATIC_VAE = "Automatic"
RANDOM_SEED = -1


def owner_of(request: gr.Request | None) -> str:
    """Each browser session is its own owner: it sees and interrupts only its own jobs."""
    if request is None or not request.session_hash:
        return "api"
    return f"session:{request.session_hash}"


@dataclass
class SettingsControls:
    """The controls every generate tab has, in the order handlers (and API clients) pass them."""

    model: gr.Dropdown
    vae: gr.Dropdown
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
    clip_skip: gr.Slider  # the page's quick settings: the same two components in every tab
    emphasis: gr.Dropdown
    styles: gr.Dropdown  # style names applied when the job is submitted
    tiling: gr.Checkbox

    def as_list(self) -> list[gr.components.Component]:
        return list(self.__dict__.values())

    @staticmethod
    def position(name: str) -> int:
        """Where the control ``name`` is in as_list() (and in the values handlers get)."""
        return [f.name for f in fields(SettingsControls)].index(name)


@dataclass
class QuickSettings:
    """A1111's quick settings above the tabs; each browser session has its own values."""

    clip_skip: gr.Slider
    emphasis: gr.Dropdown


def quick_settings() -> QuickSettings:
    """Build the quick-settings row (call inside build_ui, before the tabs)."""
    with gr.Row(elem_id="quicksettings", elem_classes="ls-quicksettings"):
        clip_skip = gr.Slider(1, MAX_CLIP_SKIP, value=1, step=1, label="Clip skip", scale=1, min_width=240,
                              info="1 = last CLIP layer, 2 = penultimate (anime models); SD 1.x only, as in A1111",
                              elem_id="setting_clip_skip")
        emphasis = gr.Dropdown(list(EMPHASIS_MODES), value=EMPHASIS_MODES[0], label="Emphasis", scale=1,
                               min_width=240, info="how (word:1.2) weights are applied",
                               elem_id="setting_emphasis")
        gr.HTML(scale=2)  # keeps the two controls compact, as in A1111
    return QuickSettings(clip_skip, emphasis)


@dataclass
class SettingsButtons:
    """Buttons beside the settings that are not inputs of a job."""

    refresh: gr.Button
    random_seed: gr.Button
    reuse_seed: gr.Button
    lora: gr.Dropdown  # refreshed with the model pickers
    styles: StylesPicker


def request_fields(model: str | None, vae: str | None, prompt: str, negative_prompt: str, sampler: str,
                   schedule_type: str, steps: float, cfg_scale: float, width: float, height: float,
                   seed: float | None, batch_count: float, batch_size: float, clip_skip: float | None,
                   emphasis: str | None, styles: str | Sequence[str] | None = None,
                   tiling: bool | None = False) -> dict[str, Any]:
    """Request fields from the SettingsControls values (in their order); sliders arrive as floats."""
    return dict(
        model=model or None, vae=None if vae in (None, "", AUTOMATIC_VAE) else vae, prompt=prompt or "",
        negative_prompt=negative_prompt or "", sampler=sampler, schedule_type=schedule_type, steps=int(steps),
        cfg_scale=float(cfg_scale), width=int(width), height=int(height),
        seed=int(seed if seed is not None else RANDOM_SEED), batch_count=int(batch_count),
        batch_size=int(batch_size), clip_skip=int(clip_skip if clip_skip is not None else 1),
        emphasis=emphasis or EMPHASIS_MODES[0], styles=selected_names(styles), tiling=bool(tiling),
    )


def model_choices(engine: Engine) -> tuple[list[str], list[str]]:
    """(checkpoint names, VAE choices) as the pickers list them; the folders are read again each call."""
    checkpoints = [e.name for e in engine.registry.checkpoints()]
    return checkpoints, [AUTOMATIC_VAE, *(e.name for e in engine.registry.vaes())]


def settings_controls(engine: Engine, tab: str, quick: QuickSettings) -> tuple[SettingsControls, SettingsButtons]:
    """Build the settings column (inside the caller's layout); ``quick`` are the page's quick settings."""
    card = default_card(engine)
    checkpoints, vaes = model_choices(engine)
    with gr.Row(equal_height=True):
        model = gr.Dropdown(checkpoints, value=engine.config.default_model, label="Checkpoint", scale=4,
                            allow_custom_value=True, elem_id=f"{tab}_model")
        vae = gr.Dropdown(vaes, value=AUTOMATIC_VAE, label="VAE", scale=3, allow_custom_value=True,
                          elem_id=f"{tab}_vae")  # custom values: API clients may name files added since start
        refresh = gr.Button("Refresh", scale=0, min_width=80, elem_id=f"{tab}_refresh", elem_classes="ls-tool")
    steps_value = card.get("default_steps", 20)
    with gr.Row(elem_id=f"{tab}_prompts"):
        with gr.Column(scale=3, min_width=320):
            prompt_counter = token_counter(engine, f"{tab}_token_counter", engine.config.default_model,
                                           steps_value)
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (Ctrl+Enter to generate)",
                                elem_id=f"{tab}_prompt")
            negative_counter = token_counter(engine, f"{tab}_negative_token_counter", engine.config.default_model,
                                             steps_value)
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{tab}_negative")
        with gr.Column(scale=1, min_width=200):
            styles_head = styles_dropdown(engine, tab)
    styles = styles_picker(engine, tab, styles_head, prompt, negative, refresh)
    if tab == "txt2img" and card.get("example_prompts"):  # the default model's card suggests what it knows
        gr.Examples([[text] for text in card["example_prompts"]], inputs=[prompt], label="Prompts to try",
                    elem_id="txt2img_examples")
    lora = lora_picker(engine, tab, prompt, model)
    embedding_picker(engine, tab, prompt, negative, model, refresh)
    with gr.Row():
        sampler = gr.Dropdown(list(SAMPLER_NAMES), value="Euler a", label="Sampling method")
        schedule = gr.Dropdown(list(SCHEDULE_TYPES), value="Automatic", label="Schedule type")
    steps = gr.Slider(1, MAX_STEPS, value=steps_value, step=1, label="Sampling steps",
                      elem_id=f"{tab}_steps")
    with gr.Row():
        width = gr.Slider(MIN_SIZE, MAX_SIZE, value=card.get("default_width", 512), step=SIZE_MULTIPLE, label="Width",
                          elem_id=f"{tab}_width")
        height = gr.Slider(MIN_SIZE, MAX_SIZE, value=card.get("default_height", 512), step=SIZE_MULTIPLE, label="Height",
                           elem_id=f"{tab}_height")
    with gr.Row():
        batch_count = gr.Slider(1, MAX_BATCH_COUNT, value=1, step=1, label="Batch count")
        batch_size = gr.Slider(1, MAX_BATCH_SIZE, value=1, step=1, label="Batch size")
    cfg = gr.Slider(1, MAX_CFG_SCALE, value=card.get("default_cfg_scale", 7), step=0.5, label="CFG Scale")
    with gr.Row(equal_height=True):
        seed = gr.Number(value=RANDOM_SEED, precision=0, label="Seed (-1 = random)", scale=4, elem_id=f"{tab}_seed")
        random_seed = gr.Button("Random", scale=0, min_width=80, elem_id=f"{tab}_random_seed", elem_classes="ls-tool")
        reuse_seed = gr.Button("Reuse", scale=0, min_width=80, elem_id=f"{tab}_reuse_seed", elem_classes="ls-tool")
    tiling = gr.Checkbox(value=False, label="Tiling", info="seamless, tileable pictures", elem_id=f"{tab}_tiling")
    wire_token_counters(engine, [(prompt_counter, prompt), (negative_counter, negative)], model, steps,
                        quick.emphasis)
    controls = SettingsControls(model, vae, prompt, negative, sampler, schedule, steps, cfg, width, height, seed,
                                batch_count, batch_size, quick.clip_skip, quick.emphasis, styles.dropdown, tiling)
    return controls, SettingsButtons(refresh, random_seed, reuse_seed, lora, styles)


def stream_job(engine: Engine, request: GenerationRequest, owner: str) -> Iterator[tuple[Any, ...]]:
    """Submit and yield OutputControls.stream_outputs() values as the job advances."""
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
            first_info = result.infotexts[0] if result.infotexts else ""
            yield gallery, gr.update(visible=False), progress_html(event), first_info, list(result.infotexts), 0
        elif event.phase == "failed":
            raise gr.Error(event.message)
        elif event.phase == "cancelled":
            yield gr.update(), gr.update(visible=False), progress_html(event), gr.update(), gr.update(), gr.update()
        else:
            preview = gr.update(value=event.preview, visible=True) if event.preview is not None else gr.update()
            yield gr.update(), preview, progress_html(event), gr.update(), gr.update(), gr.update()


def interrupt(engine: Engine) -> Callable[[gr.Request], str]:
    def handler(request: gr.Request) -> str:
        count = engine.cancel_all_of(owner_of(request))
        return f"Interrupting {count} job{'s' if count != 1 else ''}" if count else "Nothing to interrupt"
    return handler


def default_card(engine: Engine) -> dict:
    """The default model's ``lora_studio.json`` notes (default size, steps), or {}."""
    try:
        return engine.registry.find_checkpoint(engine.config.default_model or "").card()
    except ValueError:
        return {}


@dataclass
class OutputControls:
    """The right-hand column of a generate tab. ``infotexts`` and ``selected`` are per-session state."""

    generate: gr.Button
    interrupt: gr.Button
    progress: gr.HTML
    preview: gr.Image
    gallery: gr.Gallery
    info: gr.Textbox
    status: gr.Markdown
    infotexts: gr.State
    selected: gr.State
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button

    def stream_outputs(self) -> list[gr.components.Component]:
        return [self.gallery, self.preview, self.progress, self.info, self.infotexts, self.selected]


def output_controls(tab: str) -> OutputControls:
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate")
        stop = gr.Button("Interrupt", elem_id=f"{tab}_interrupt")
    progress = gr.HTML(label="Progress", elem_id=f"{tab}_progress")
    preview = gr.Image(label="Preview", visible=False, interactive=False, elem_id=f"{tab}_preview")
    gallery = gr.Gallery(label="Output", columns=2, format="png", elem_id=f"{tab}_gallery", interactive=False,
                         buttons=["download", "download_all", "fullscreen"])
    with gr.Row():
        send_img2img = gr.Button("Send to img2img", size="sm", elem_id=f"{tab}_send_to_img2img")
        send_inpaint = gr.Button("Send to inpaint", size="sm", elem_id=f"{tab}_send_to_inpaint")
    info = gr.Textbox(label="Generation parameters", lines=3, interactive=False, elem_id=f"{tab}_info")
    status = gr.Markdown(elem_id=f"{tab}_status")
    return OutputControls(generate, stop, progress, preview, gallery, info, status, gr.State([]), gr.State(0),
                          send_img2img, send_inpaint)


def selected_infotext(infotexts: list[str] | None, selected: int | None) -> str | None:
    """The parameters of the selected result, or None when there is no result."""
    if not infotexts:
        return None
    return infotexts[min(max(selected or 0, 0), len(infotexts) - 1)]


def seed_of(infotext: str | None) -> int | None:
    """The seed an infotext records, or None."""
    if not infotext:
        return None
    try:
        return int(parse_infotext(infotext).get("Seed", ""))
    except ValueError:
        return None


def wire_generate(engine: Engine, tab: str, settings: SettingsControls, buttons: SettingsButtons,
                  outputs: OutputControls, handler: Callable[..., Iterator[Any]],
                  extra_inputs: list[gr.components.Component]) -> None:
    """Generate (button, the prompt box's submit; Ctrl+Enter is a page script), Interrupt, seeds, refresh, selection."""
    inputs = settings.as_list() + extra_inputs
    outputs.generate.click(handler, inputs, outputs.stream_outputs(), api_name=tab, concurrency_limit=None)
    settings.prompt.submit(handler, inputs, outputs.stream_outputs(), api_name=False, concurrency_limit=None)
    outputs.interrupt.click(interrupt(engine), None, outputs.status, api_name=False, queue=False)

    def on_select(infotexts: list[str], event: gr.SelectData) -> tuple[Any, int]:
        text = selected_infotext(infotexts, event.index)
        return (text if text is not None else gr.update()), int(event.index)

    outputs.gallery.select(on_select, outputs.infotexts, [outputs.info, outputs.selected], api_name=False,
                           queue=False)

    def reuse(infotexts: list[str], selected: int) -> Any:
        seed = seed_of(selected_infotext(infotexts, selected))
        return seed if seed is not None else gr.update()

    buttons.reuse_seed.click(reuse, [outputs.infotexts, outputs.selected], settings.seed, api_name=False, queue=False)
    buttons.random_seed.click(lambda: RANDOM_SEED, None, settings.seed, api_name=False, queue=False)

    def refresh(model: str | None, vae: str | None, lora: str | None) -> tuple[gr.Dropdown, ...]:
        checkpoints, vaes = model_choices(engine)
        loras = lora_choices(engine, model)
        return (gr.Dropdown(choices=checkpoints, value=model if model in checkpoints else engine.config.default_model),
                gr.Dropdown(choices=vaes, value=vae if vae in vaes else AUTOMATIC_VAE),
                gr.Dropdown(choices=loras, value=lora if lora in [name for _, name in loras] else None))

    pickers = [settings.model, settings.vae, buttons.lora]
    buttons.refresh.click(refresh, pickers, pickers, api_name=False, queue=False)


@dataclass
class GenerateTab:
    """What build_ui needs of a generate tab to wire "send to" between tabs."""

    settings: SettingsControls
    outputs: OutputControls
    styles: StylesPicker
    source_image: gr.components.Component | None = None  # the picture an img2img/inpaint job starts from
    hires: HiresControls | None = None  # txt2img's hires fix, which "send to" fills too
