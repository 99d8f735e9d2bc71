"""Moving a picture and its parameters between tabs: PNG info -> txt2img/img2img, results -> img2img/inpaint.

A target tab with hires fix controls (txt2img) gets those from the infotext too."""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from app.engine import Engine
from app.engine.prompt_parser import EMPHASIS_MODES
from app.ui.generate_tab import AUTOMATIC_VAE, GenerateTab, SettingsControls, model_choices, selected_infotext
from app.ui.hires_controls import hires_values_from_infotext
from app.ui.png_info_tab import fields_from_infotext


def settings_values(engine: Engine, infotext: str) -> list[Any]:
    """SettingsControls values from an infotext; a model or VAE this machine lacks, or a clip skip or
    emphasis the quick settings do not offer, keeps the current pick. The styles selection is cleared (the
    infotext's prompts are styled already) and tiling follows its "Tiling"."""
    values = fields_from_infotext(infotext)
    model, vae, clip_skip, emphasis = (SettingsControls.position(name) for name in ("model", "vae", "clip_skip",
                                                                                    "emphasis"))
    checkpoints, vaes = model_choices(engine)
    if values[model] not in checkpoints:
        values[model] = gr.update()
    if values[vae] not in vaes:
        values[vae] = gr.update() if values[vae] != AUTOMATIC_VAE else AUTOMATIC_VAE
    if not (isinstance(values[clip_skip], int) and 1 <= values[clip_skip] <= 12):
        values[clip_skip] = gr.update()
    if values[emphasis] not in EMPHASIS_MODES:
        values[emphasis] = gr.update()
    return values


def target_inputs(target: GenerateTab) -> list[gr.components.Component]:
    """The controls of ``target`` that an infotext fills: its settings, then its hires controls if it has them."""
    return target.settings.as_list() + (target.hires.as_list() if target.hires else [])


def target_values(engine: Engine, infotext: str, target: GenerateTab) -> list[Any]:
    """Values for target_inputs(target) from an infotext (a readable error when there is none)."""
    values = settings_values(engine, infotext)
    if target.hires is None:
        return values
    return values + hires_values_from_infotext(infotext, checkpoints=model_choices(engine)[0])


def selected_picture(gallery: list | None, selected: int | None) -> Image.Image:
    """The selected gallery image as RGB; a readable error when the gallery is empty."""
    if not gallery:
        raise gr.Error("Nothing to send yet: generate an image first.")
    index = min(max(selected or 0, 0), len(gallery) - 1)
    item = gallery[index]
    path = item[0] if isinstance(item, (tuple, list)) else item
    with Image.open(path) as image:
        return image.convert("RGB")


def editor_value(picture: Image.Image) -> dict[str, Any]:
    """An ImageEditor value holding ``picture`` with nothing painted yet."""
    return {"background": picture, "layers": [], "composite": picture}


def wire_send_to(engine: Engine, tabs: gr.Tabs, sources: dict[str, GenerateTab], img2img: GenerateTab,
                 inpaint: GenerateTab) -> None:
    """Each generate tab's "Send to img2img / inpaint" buttons carry the selected result and its parameters."""
    targets = (("img2img", img2img, lambda picture: picture),
               ("inpaint", inpaint, editor_value))
    for source in sources.values():
        out = source.outputs
        for tab_id, target, wrap in targets:
            assert target.source_image is not None
            button = out.send_to_img2img if tab_id == "img2img" else out.send_to_inpaint

            def send(gallery: list | None, infotexts: list[str], selected: int, wrap=wrap, tab_id=tab_id,
                     target=target) -> list:
                picture = selected_picture(gallery, selected)
                text = selected_infotext(infotexts, selected)
                values = target_values(engine, text, target) if text else [gr.update()] * len(target_inputs(target))
                return [wrap(picture), *values, gr.Tabs(selected=tab_id)]

            button.click(send, [out.gallery, out.infotexts, out.selected],
                         [target.source_image, *target_inputs(target), tabs], api_name=False, queue=False)
