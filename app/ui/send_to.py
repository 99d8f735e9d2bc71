"""Moving a picture and its parameters between tabs: PNG info -> txt2img/img2img, results -> img2img/inpaint.

An infotext is read as A1111's API fields (``a1111_fields_from_infotext``), and each control of the target tab
takes the field it stands for; a value the control cannot show (a model this machine lacks, a sampler not in
the list) keeps the current one, as A1111's paste does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr
from PIL import Image

from app.engine import Engine
from app.engine.infotext_fields import a1111_fields_from_infotext
from app.ui.generate_tab import AUTOMATIC_VAE, GenerateTab, model_choices, selected_infotext
from app.ui.hires_controls import checkpoint_choices

KEEP = gr.update()  # leave a control as it is


def infotext_fields(text: str) -> dict[str, Any]:
    """A1111 fields of a parameters text, options flattened beside the others (as the tabs key their controls);
    styles cleared (the prompts are styled already, as A1111's are), tiling, face restoration and hires fix off
    unless recorded, the checkpoint's own VAE unless one is named. A readable error when there is no text."""
    if not text or "\n" not in text and ":" not in text:
        raise gr.Error("Drop a PNG with generation parameters first.")
    fields = a1111_fields_from_infotext(text)
    options = fields.pop("override_settings", {})
    return {"sd_vae": AUTOMATIC_VAE, "tiling": False, "restore_faces": False, **fields, **options, "styles": []}


def control_value(component: gr.components.Component, value: Any) -> Any:
    """``value`` as ``component`` takes it (an index Radio takes its choice's label), or KEEP where it cannot
    show it: a choice it does not list, a number outside its range."""
    if isinstance(component, (gr.Radio, gr.Dropdown)) and not isinstance(value, list):
        choices = [choice[1] if isinstance(choice, tuple) else choice for choice in component.choices]
        labels = [choice[0] if isinstance(choice, tuple) else choice for choice in component.choices]
        if getattr(component, "type", "value") == "index":
            index = int(value) if isinstance(value, (bool, int, float)) else -1
            return labels[index] if 0 <= index < len(labels) else KEEP
        if value in choices or getattr(component, "allow_custom_value", False):
            return value
        return KEEP
    if isinstance(component, gr.Slider):
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        return number if number is not None and component.minimum <= number <= component.maximum else KEEP
    return value


def target_values(engine: Engine, text: str, target: GenerateTab) -> list[Any]:
    """Values for ``target.fields()`` (in their order) from a parameters text; a checkpoint or VAE this machine
    lacks keeps the current pick."""
    fields = infotext_fields(text)
    checkpoints, vaes = model_choices(engine)
    allowed: Mapping[str, list[str]] = {"sd_model_checkpoint": checkpoints, "sd_vae": vaes,
                                        "hr_checkpoint_name": checkpoint_choices(checkpoints)}
    values = []
    for name, component in target.fields().items():
        if name not in fields:
            values.append(KEEP)
        elif name in allowed and fields[name] not in allowed[name]:
            values.append(KEEP)
        else:
            values.append(control_value(component, fields[name]))
    return values


def target_inputs(target: GenerateTab) -> list[gr.components.Component]:
    """The controls of ``target`` that an infotext fills, in target_values' order."""
    return list(target.fields().values())


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
    """Each generate tab's "Send to img2img / inpaint" buttons carry the selected result and its parameters
    (the picture goes to the target's image control; the infotext fills the rest)."""
    targets = (("img2img", img2img, lambda picture: picture),
               ("inpaint", inpaint, editor_value))
    for source in sources.values():
        out = source.outputs
        for tab_id, target, wrap in targets:
            assert target.source_image is not None
            button = out.send_to_img2img if tab_id == "img2img" else out.send_to_inpaint
            filled = [c for c in target_inputs(target) if c is not target.source_image]

            def send(gallery: list | None, infotexts: list[str], selected: int, wrap=wrap, tab_id=tab_id,
                     target=target) -> list:
                picture = selected_picture(gallery, selected)
                text = selected_infotext(infotexts, selected)
                by_field = dict(zip(target.fields(), target_values(engine, text, target))) if text else {}
                values = [by_field.get(name, KEEP) for name, component in target.fields().items()
                          if component is not target.source_image]
                return [wrap(picture), *values, gr.Tabs(selected=tab_id)]

            button.click(send, [out.gallery, out.infotexts, out.selected],
                         [target.source_image, *filled, tabs], api_name=False, queue=False)
