"""The LoRA picker beside each prompt: pick a file from models/Lora, read its facts, insert its tag."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from app.engine import Engine
from app.engine.lora_files import LoraFormatError


def lora_choices(engine: Engine, model: str | None = None) -> list[tuple[str, str]]:
    """(label, tag name) per LoRA file. The tag name is the bare file stem, as A1111 users type it,
    unless two files share it. LoRAs made for another family than ``model``'s are marked."""
    family = _family_of(engine, model)
    entries = engine.registry.loras()
    stems = [Path(e.name).stem for e in entries]
    choices = []
    for entry, stem in zip(entries, stems):
        tag_name = stem if stems.count(stem) == 1 else Path(entry.name).with_suffix("").as_posix()
        label = tag_name
        try:
            assert entry.path is not None
            info = engine.registry.lora_info(entry.path)
            if family and not info.fits(family):
                label = f"{tag_name} ⚠ for {info.family_label}, not this model"
        except ValueError:
            label = f"{tag_name} ⚠ unreadable"
        choices.append((label, tag_name))
    return choices


def _family_of(engine: Engine, model: str | None) -> str | None:
    try:
        return engine.registry.checkpoint_family(engine.registry.find_checkpoint(model or engine.config.default_model or ""))
    except ValueError:
        return None


def lora_summary(engine: Engine, name: str | None) -> str:
    """What a person wants to know before using a LoRA: base model, rank/alpha, trigger words."""
    if not name:
        return ""
    try:
        entry = engine.registry.find_lora(name)
        assert entry.path is not None
        info = engine.registry.lora_info(entry.path)
    except LoraFormatError as exc:
        return f"⚠ {html.escape(str(exc))}"
    except ValueError as exc:
        return html.escape(str(exc))
    alpha = "alpha = rank" if info.alpha is None else f"alpha {info.alpha:g}"
    parts = [f"**{html.escape(name)}**: {info.family_label}, {info.format} format, rank {info.rank}, {alpha}, "
             f"{info.layers} layers" + (" incl. text encoder" if info.has_text_encoder else "")
             + f", hash {engine.registry.lora_hash(entry.path)[:12]}"]
    if info.trigger_words:
        parts.append("Trigger words: " + ", ".join(f"`{html.escape(w)}`" for w in info.trigger_words))
    return "  \n".join(parts)


def with_tag(prompt: str | None, name: str | None, weight: float = 1.0) -> str:
    """The prompt with ``<lora:name:weight>`` appended (unchanged when nothing is picked)."""
    prompt = prompt or ""
    if not name:
        return prompt
    tag = f"<lora:{name}:{weight:g}>"
    return f"{prompt.rstrip()} {tag}".strip() if tag not in prompt else prompt


def lora_picker(engine: Engine, tab: str, prompt: gr.Textbox, model: gr.Dropdown) -> gr.Dropdown:
    """Build the picker (inside the caller's layout) and wire it to ``prompt``; return its dropdown.
    Picking another checkpoint re-marks the LoRAs that do not fit it."""
    with gr.Accordion("LoRA", open=False, elem_id=f"{tab}_lora_panel"):
        with gr.Row(equal_height=True):
            choice = gr.Dropdown(lora_choices(engine), value=None, label="LoRA file (models/Lora)", scale=4,
                                 elem_id=f"{tab}_lora")
            weight = gr.Number(value=1.0, step=0.05, label="Weight", scale=1, min_width=80,
                               elem_id=f"{tab}_lora_weight")
            add = gr.Button("Add to prompt", scale=1, min_width=120, elem_id=f"{tab}_lora_add",
                            elem_classes="ls-tool")
        summary = gr.Markdown(elem_id=f"{tab}_lora_info")
    choice.change(lambda name: lora_summary(engine, name), choice, summary, api_name=False, queue=False)
    model.change(lambda name, picked: gr.Dropdown(choices=lora_choices(engine, name), value=picked), [model, choice],
                 choice, api_name=False, queue=False)
    add.click(lambda text, name, w: with_tag(text, name, float(w if w is not None else 1.0)),
              [prompt, choice, weight], prompt, api_name=False, queue=False)
    return choice
