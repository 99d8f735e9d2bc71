"""The Extras tab: enlarge finished pictures with the built-in or model upscalers and restore their faces.

Its controls are keyed by A1111's extras field names (``ExtrasSettings``), the ones the REST API's
``extra-single-image`` takes, and the work runs on the engine's worker like a generation (in turn
with everyone's jobs, with progress per upscaler tile and Interrupt between tiles).
"""

from __future__ import annotations

import html
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from app.engine import Engine
from app.engine.extras import ExtrasSettings, check_extras, extras_job
from app.ui.generate_tab import interrupt, owner_of, user_of
from app.ui.picture_input import picture_input, picture_or_error
from app.ui.progress import progress_html

log = logging.getLogger(__name__)

RESIZE_MODES = ("Scale by", "Scale to")  # A1111's labels of resize_mode 0 and 1
MAX_BATCH = 16  # pictures in one batch, as the API's extra-batch-images


def upscaler_choices(engine: Engine) -> list[tuple[str, str]]:
    """(label, name) of every upscaler the pickers offer: the built-ins, then the usable model files."""
    return [(item.label, item.name) for item in engine.manager.upscalers.available() if item.error is None]


def refreshed_picker(choices: list[tuple[str, str]], current: str | None, fallback: str) -> gr.Dropdown:
    """A picker listing ``choices`` (label, name) anew, keeping ``current`` while it is still one of them."""
    return gr.Dropdown(choices=choices, value=current if current in {name for _, name in choices} else fallback)


def model_upscaler_choices(engine: Engine) -> list[tuple[str, str]]:
    """(label, name) of the usable upscaler model files alone (hires fix lists them after its own)."""
    return [(item.label, item.name) for item in engine.manager.upscalers.available()
            if item.error is None and item.path is not None]


def face_restorer_note(engine: Engine) -> str:
    """What the face sliders can use: the installed face models, or where to put one."""
    usable = [item for item in engine.manager.face_restorers.available() if item.error is None]
    if not usable:
        return ("No face restoration model is installed: put a GFPGAN, CodeFormer or RestoreFormer `.safetensors` "
                "file in `models/GFPGAN`, `models/Codeformer` or `models/facerestore_models` and refresh.")
    return "Face models: " + ", ".join(f"{item.name} ({item.architecture})" for item in usable)


@dataclass
class ExtrasControls:
    single: gr.Image
    batch: gr.File
    controls: dict[str, gr.components.Component]  # by ExtrasSettings field
    refresh: gr.Button
    faces_note: gr.Markdown
    run: gr.Button
    interrupt: gr.Button
    progress: gr.HTML
    gallery: gr.Gallery
    info: gr.HTML
    status: gr.Markdown


def build_extras_tab(engine: Engine) -> ExtrasControls:
    defaults = ExtrasSettings()
    choices = upscaler_choices(engine)
    with gr.Row():
        with gr.Column():
            with gr.Tabs():
                with gr.Tab("Single image", id="extras_single_tab"):
                    single = picture_input(label="Source", type="pil", sources=["upload", "clipboard"],
                                           image_mode=None, elem_id="extras_image")
                with gr.Tab("Batch", id="extras_batch_tab"):
                    batch = gr.File(label=f"Pictures (up to {MAX_BATCH})", file_count="multiple",
                                    file_types=["image"], elem_id="extras_batch")
            with gr.Row():
                resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[defaults.resize_mode], type="index",
                                       label="Resize", elem_id="extras_resize_mode")
                refresh = gr.Button("Refresh", scale=0, min_width=80, elem_id="extras_refresh", elem_classes="ls-tool")
            scale = gr.Slider(1, 8, value=defaults.upscaling_resize, step=0.05, label="Scale by",
                              elem_id="extras_upscaling_resize")
            with gr.Row():
                width = gr.Number(value=defaults.upscaling_resize_w, precision=0, minimum=1, label="Width",
                                  elem_id="extras_upscaling_resize_w")
                height = gr.Number(value=defaults.upscaling_resize_h, precision=0, minimum=1, label="Height",
                                   elem_id="extras_upscaling_resize_h")
                crop = gr.Checkbox(value=defaults.upscaling_crop, label="Crop to fit", elem_id="extras_upscaling_crop")
            with gr.Row():
                upscaler_1 = gr.Dropdown(choices, value=defaults.upscaler_1, label="Upscaler 1",
                                         elem_id="extras_upscaler_1")
                upscaler_2 = gr.Dropdown(choices, value=defaults.upscaler_2, label="Upscaler 2",
                                         elem_id="extras_upscaler_2")
            visibility_2 = gr.Slider(0, 1, value=defaults.extras_upscaler_2_visibility, step=0.001,
                                     label="Upscaler 2 visibility", elem_id="extras_upscaler_2_visibility")
            with gr.Accordion("Face restoration", open=False):
                faces_note = gr.Markdown(face_restorer_note(engine), elem_id="extras_faces_note")
                gfpgan = gr.Slider(0, 1, value=defaults.gfpgan_visibility, step=0.001, label="GFPGAN visibility",
                                   elem_id="extras_gfpgan_visibility")
                codeformer = gr.Slider(0, 1, value=defaults.codeformer_visibility, step=0.001,
                                       label="CodeFormer visibility", elem_id="extras_codeformer_visibility")
                codeformer_weight = gr.Slider(0, 1, value=defaults.codeformer_weight, step=0.001,
                                              label="CodeFormer weight (0 = strongest effect, 1 = none)",
                                              elem_id="extras_codeformer_weight")
                upscale_first = gr.Checkbox(value=defaults.upscale_first, label="Upscale before restoring faces",
                                            elem_id="extras_upscale_first")
        with gr.Column():
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
                stop = gr.Button("Interrupt", elem_id="extras_interrupt")
            progress = gr.HTML(elem_id="extras_progress")
            gallery = gr.Gallery(label="Results", columns=2, height="auto", elem_id="extras_gallery")
            info = gr.HTML(elem_id="extras_info")
            status = gr.Markdown()
    controls: dict[str, gr.components.Component] = {
        "resize_mode": resize_mode, "upscaling_resize": scale, "upscaling_resize_w": width,
        "upscaling_resize_h": height, "upscaling_crop": crop, "upscaler_1": upscaler_1, "upscaler_2": upscaler_2,
        "extras_upscaler_2_visibility": visibility_2, "gfpgan_visibility": gfpgan,
        "codeformer_visibility": codeformer, "codeformer_weight": codeformer_weight, "upscale_first": upscale_first}
    tab = ExtrasControls(single, batch, controls, refresh, faces_note, run, stop, progress, gallery, info, status)
    wire_extras(engine, tab)
    return tab


def wire_extras(engine: Engine, tab: ExtrasControls) -> None:
    names = list(tab.controls)
    handler = extras_handler(engine, names)
    tab.run.click(handler, [tab.single, tab.batch, *tab.controls.values()], [tab.gallery, tab.progress, tab.info],
                  api_name="extras", concurrency_limit=None)
    tab.interrupt.click(interrupt(engine), None, tab.status, api_name=False, queue=False)

    def refresh(first: str, second: str) -> tuple[Any, Any, str]:
        choices = upscaler_choices(engine)
        return (refreshed_picker(choices, first, "None"), refreshed_picker(choices, second, "None"),
                face_restorer_note(engine))

    pickers = [tab.controls["upscaler_1"], tab.controls["upscaler_2"]]
    tab.refresh.click(refresh, pickers, [*pickers, tab.faces_note], api_name=False, queue=False)


def settings_from_ui(values: dict[str, Any]) -> ExtrasSettings:
    """The tab's values as ExtrasSettings: a field the tab does not send, or a number box left empty, keeps
    its default."""
    given = asdict(ExtrasSettings())
    given.update({name: value for name, value in values.items() if name in given and value is not None})
    for name in ("resize_mode", "upscaling_resize_w", "upscaling_resize_h"):
        given[name] = int(given[name])
    return ExtrasSettings(**given)


def extras_handler(engine: Engine, names: list[str]) -> Callable[..., Iterator[tuple[Any, str, str]]]:
    """The Generate handler: the single picture, or else the batch, through the Extras on the worker."""

    def run_extras(request: gr.Request, single: Image.Image | None, batch: list[str] | None,
                   *values: Any) -> Iterator[tuple[Any, str, str]]:
        settings = settings_from_ui(dict(zip(names, values, strict=True)))
        try:
            check_extras(settings, engine.manager.upscalers, engine.manager.face_restorers)
        except ValueError as exc:
            log.info("refused extras settings: %s", exc)
            raise gr.Error(str(exc), print_exception=False) from None
        paths = [Path(item) for item in (batch or [])]
        if single is None and not paths:
            raise gr.Error("Drop a picture in Single image, or several in Batch.", print_exception=False)
        if len(paths) > MAX_BATCH:
            raise gr.Error(f"{len(paths)} pictures: the Extras take at most {MAX_BATCH} at a time.",
                           print_exception=False)
        pictures = [single] if single is not None else [picture_or_error(str(path), f"The file {path.name!r}")
                                                         for path in paths]
        user = user_of(request)
        try:
            job = engine.submit_work(
                lambda ctx: extras_job(ctx, pictures, len(pictures), settings, engine.manager.upscalers,
                                       engine.manager.face_restorers, (engine.config.outputs_dir, user)),
                f"extras: {len(pictures)} picture{'s' if len(pictures) != 1 else ''}", owner_of(request))
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        for event in job.events():
            if event.phase == "failed":
                raise gr.Error(event.message, print_exception=False)
            result = event.result
            if event.is_terminal and result is not None and result.images:
                gallery = [(str(path), None) for path in result.paths] or result.images
                info = "<br>".join(html.escape(text) for text in result.infotexts if text)
                yield gallery, progress_html(event), info or "Nothing to do: every step is off."
            else:
                yield gr.update(), progress_html(event), gr.update()

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    run_extras.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("request", positional, annotation=gr.Request),
         inspect.Parameter("image", positional), inspect.Parameter("image_list", positional),
         *(inspect.Parameter(name, positional) for name in names)])
    return run_extras
