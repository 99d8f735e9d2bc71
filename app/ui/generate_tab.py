"""The shared body of the generate tabs: settings, Generate/Interrupt/Skip, progress, preview, gallery.

Each input control is known by its A1111 API field name (``SettingsControls.by_field``), and a tab's
values become an engine request through the same mapping as the REST API's (``request_from_ui``), so
no handler depends on the order of the controls; that order is only the Gradio API's parameter order.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.engine import Engine, GenerationRequest
from app.engine.a1111_request import ENGINE_DEFAULTS, OPTION_DEFAULTS, A1111Task, request_from_a1111
from app.engine.infotext import parse_infotext
from app.engine.requests import limits_of
from app.engine.prompt_parser import EMPHASIS_MODES
from app.engine.samplers import SAMPLER_NAMES, SCHEDULE_TYPES
from app.ui.embedding_picker import embedding_picker
from app.ui.lora_picker import lora_choices, lora_picker
from app.ui.progress import progress_html
from app.ui.styles_picker import StylesPicker, selected_names, styles_dropdown, styles_picker
from app.ui.token_counter import token_counter, wire_token_counters

log = logging.getLogger(__name__)

AUTOMATIC_VAE = "Automatic"
RANDOM_SEED = -1


def owner_of(request: gr.Request | None) -> str:
    """Whose jobs a request's are: with logins, the user's (all their browser tabs are one owner, so a person
    gets one turn in the round-robin and one queue cap however many tabs they open); without logins,
    the browser session's. An owner sees and interrupts only its own jobs."""
    if request is None or not request.session_hash:
        return "api"
    user = user_of(request)
    return f"user:{user}" if user else f"session:{request.session_hash}"


def user_of(request: gr.Request | None) -> str | None:
    """The logged-in user of a request (Gradio reads it from the login cookie), None without logins: the
    engine saves their pictures under ``outputs/<user>/``."""
    return getattr(request, "username", None) if request is not None else None


def slider_range(name: str, request_type: type[GenerationRequest] = GenerationRequest) -> dict[str, float]:
    """``minimum``, ``maximum`` and ``step`` of a slider for a request field, from the field's Limits."""
    limits = limits_of(request_type, name)
    return {"minimum": limits.low, "maximum": limits.high, "step": limits.step}


@dataclass
class SettingsControls:
    """The controls every generate tab has, in the Gradio API's order (see ``by_field``)."""

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
    restore_faces: gr.Checkbox

    def by_field(self) -> dict[str, gr.components.Component]:
        """The controls by A1111 API field (options such as ``sd_model_checkpoint`` included), in order."""
        return {"sd_model_checkpoint": self.model, "sd_vae": self.vae, "prompt": self.prompt,
                "negative_prompt": self.negative_prompt, "sampler_name": self.sampler, "scheduler": self.schedule_type,
                "steps": self.steps, "cfg_scale": self.cfg_scale, "width": self.width, "height": self.height,
                "seed": self.seed, "n_iter": self.batch_count, "batch_size": self.batch_size,
                "CLIP_stop_at_last_layers": self.clip_skip, "emphasis": self.emphasis, "styles": self.styles,
                "tiling": self.tiling, "restore_faces": self.restore_faces}


@dataclass
class QuickSettings:
    """A1111's quick settings above the tabs; each browser session has its own values."""

    clip_skip: gr.Slider
    emphasis: gr.Dropdown


def quick_settings() -> QuickSettings:
    """Build the quick-settings row (call inside build_ui, before the tabs)."""
    with gr.Row(elem_id="quicksettings", elem_classes="ls-quicksettings"):
        clip_skip = gr.Slider(**slider_range("clip_skip"), value=1, label="Clip skip", scale=1, min_width=240,
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


def request_from_ui(task: A1111Task, values: Mapping[str, Any]) -> GenerationRequest:
    """The engine request for a tab's values, keyed by A1111 field names: the REST API's mapping, with the
    engine's defaults for what a tab lacks. Options (checkpoint, VAE, clip skip, emphasis) go in as
    ``override_settings``; an empty one keeps its default. Raises ValueError for a value it cannot take."""
    fields = {name: value for name, value in values.items() if name not in OPTION_DEFAULTS}
    fields["override_settings"] = {name: values[name] for name in OPTION_DEFAULTS
                                   if values.get(name) not in (None, "")}
    fields["styles"] = list(selected_names(values.get("styles")))
    if fields.get("seed") is None:
        fields["seed"] = RANDOM_SEED
    return request_from_a1111(task, fields, defaults={}, field_defaults=ENGINE_DEFAULTS)


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
    steps = gr.Slider(**slider_range("steps"), value=steps_value, label="Sampling steps", elem_id=f"{tab}_steps")
    with gr.Row():
        width = gr.Slider(**slider_range("width"), value=card.get("default_width", 512), label="Width",
                          elem_id=f"{tab}_width")
        height = gr.Slider(**slider_range("height"), value=card.get("default_height", 512), label="Height",
                           elem_id=f"{tab}_height")
    with gr.Row():
        batch_count = gr.Slider(**slider_range("batch_count"), value=1, label="Batch count")
        batch_size = gr.Slider(**slider_range("batch_size"), value=1, label="Batch size")
    cfg = gr.Slider(**{**slider_range("cfg_scale"), "minimum": 1}, value=card.get("default_cfg_scale", 7),
                    label="CFG Scale")  # 0 and below 1 are legal but useless: the slider starts at 1, as A1111's
    with gr.Row(equal_height=True):
        seed = gr.Number(value=RANDOM_SEED, precision=0, label="Seed (-1 = random)", scale=4, elem_id=f"{tab}_seed")
        random_seed = gr.Button("Random", scale=0, min_width=80, elem_id=f"{tab}_random_seed", elem_classes="ls-tool")
        reuse_seed = gr.Button("Reuse", scale=0, min_width=80, elem_id=f"{tab}_reuse_seed", elem_classes="ls-tool")
    with gr.Row():
        tiling = gr.Checkbox(value=False, label="Tiling", info="seamless, tileable pictures", elem_id=f"{tab}_tiling")
        restore_faces = gr.Checkbox(value=False, label="Restore faces", info=face_restoration_info(engine),
                                    elem_id=f"{tab}_restore_faces")
    wire_token_counters(engine, [(prompt_counter, prompt), (negative_counter, negative)], model, steps,
                        quick.emphasis)
    controls = SettingsControls(model, vae, prompt, negative, sampler, schedule, steps, cfg, width, height, seed,
                                batch_count, batch_size, quick.clip_skip, quick.emphasis, styles.dropdown, tiling,
                                restore_faces)
    return controls, SettingsButtons(refresh, random_seed, reuse_seed, lora, styles)


def stream_job(engine: Engine, task: A1111Task, values: Mapping[str, Any], owner: str,
               user: str | None = None) -> Iterator[tuple[Any, ...]]:
    """Submit a tab's values (by A1111 field) as ``owner``'s job, saved for ``user`` (``user_of``), and yield
    OutputControls.stream_outputs() values as the job advances."""
    try:
        job = engine.submit(request_from_ui(task, values), owner=owner, user=user)
    except ValueError as exc:
        log.warning("rejected request from %s: %s", owner, exc)
        raise gr.Error(str(exc)) from exc
    for event in job.events():
        result = event.result
        if event.phase == "done" or (event.phase == "cancelled" and result is not None and result.images):
            assert result is not None  # an interrupted job keeps the pictures of its finished batches, as A1111's
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


def skip(engine: Engine) -> Callable[[gr.Request], str]:
    def handler(request: gr.Request) -> str:
        if engine.skip(owner_of(request)):
            return "Skipping the batch being drawn"
        return "Nothing to skip"
    return handler


def face_restoration_info(engine: Engine) -> str:
    """The Restore faces box's note: the face model it runs, or that none is installed."""
    usable = [item for item in engine.manager.face_restorers.available() if item.error is None]
    if not usable:
        return "no face model installed (models/GFPGAN, models/Codeformer)"
    return f"with {usable[0].name} ({usable[0].architecture})"


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
    skip: gr.Button
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
        skip_batch = gr.Button("Skip", elem_id=f"{tab}_skip")
    progress = gr.HTML(label="Progress", elem_id=f"{tab}_progress")
    preview = gr.Image(label="Preview", visible=False, interactive=False, elem_id=f"{tab}_preview")
    gallery = gr.Gallery(label="Output", columns=2, format="png", elem_id=f"{tab}_gallery", interactive=False,
                         buttons=["download", "download_all", "fullscreen"])
    with gr.Row():
        send_img2img = gr.Button("Send to img2img", size="sm", elem_id=f"{tab}_send_to_img2img")
        send_inpaint = gr.Button("Send to inpaint", size="sm", elem_id=f"{tab}_send_to_inpaint")
    info = gr.Textbox(label="Generation parameters", lines=3, interactive=False, elem_id=f"{tab}_info")
    status = gr.Markdown(elem_id=f"{tab}_status")
    return OutputControls(generate, stop, skip_batch, progress, preview, gallery, info, status, gr.State([]), gr.State(0),
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


ValuesHook = Callable[[dict[str, Any]], dict[str, Any]]


def generate_handler(engine: Engine, task: A1111Task, names: list[str],
                     prepare: ValuesHook | None = None) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """The Generate handler of a tab whose inputs are the controls of ``names`` (A1111 fields), in order;
    ``prepare`` turns the values a tab's own controls give (an image editor's layers) into A1111 fields."""

    def generate(request: gr.Request, *values: Any) -> Iterator[tuple[Any, ...]]:
        fields = dict(zip(names, values, strict=True))
        yield from stream_job(engine, task, prepare(fields) if prepare else fields, owner_of(request),
                              user_of(request))

    # Gradio names its API parameters after the handler's: show the A1111 field names, not *values.
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    generate.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("request", positional, annotation=gr.Request),
         *(inspect.Parameter(name, positional) for name in names)])
    return generate


def wire_generate(engine: Engine, tab: str, task: A1111Task, inputs: dict[str, gr.components.Component],
                  buttons: SettingsButtons, outputs: OutputControls, settings: SettingsControls,
                  prepare: ValuesHook | None = None) -> None:
    """Generate (button, the prompt box's submit; Ctrl+Enter is a page script), Interrupt, Skip, seeds, refresh,
    selection. ``inputs``: the tab's controls by A1111 field, in the Gradio API's order."""
    handler = generate_handler(engine, task, list(inputs), prepare)
    components = list(inputs.values())
    outputs.generate.click(handler, components, outputs.stream_outputs(), api_name=tab, concurrency_limit=None)
    settings.prompt.submit(handler, components, outputs.stream_outputs(), api_name=False, concurrency_limit=None)
    outputs.interrupt.click(interrupt(engine), None, outputs.status, api_name=False, queue=False)
    outputs.skip.click(skip(engine), None, outputs.status, api_name=False, queue=False)

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
    inputs: dict[str, gr.components.Component]  # every input of its Generate, by A1111 field ("send to" fills them)
    source_image: gr.components.Component | None = None  # the picture an img2img/inpaint job starts from

    def fields(self) -> dict[str, gr.components.Component]:
        """The inputs an infotext can fill, by A1111 field."""
        return dict(self.inputs)
