"""The Gradio front end: one module per tab, all calling the engine."""

from __future__ import annotations

import logging

import gradio as gr

from app.engine import Engine
from app.ui.txt2img_tab import build_txt2img_tab

log = logging.getLogger(__name__)

CSS = """
.ls-progress { position: relative; height: 1.6em; border-radius: 4px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); overflow: hidden; }
.ls-progress-fill { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft); }
.ls-progress-text { position: relative; padding-left: 0.5em; line-height: 1.6em; font-size: 0.9em; }
"""


def build_ui(engine: Engine) -> gr.Blocks:
    with gr.Blocks(title="LoRA Studio") as blocks:
        gr.Markdown("## LoRA Studio")
        gr.Markdown(_model_note(engine))
        with gr.Tab("txt2img", id="txt2img"):
            build_txt2img_tab(engine)
    return blocks


def _model_note(engine: Engine) -> str:
    try:
        entry = engine.registry.find_checkpoint(engine.config.default_model or "")
    except ValueError:
        return "No default model: pick one from models/Stable-diffusion."
    return f"Default model: **{entry.title}**"


def launch_ui(engine: Engine, host: str = "127.0.0.1", port: int = 7860, **launch_kwargs: object) -> None:
    blocks = build_ui(engine)
    blocks.queue(default_concurrency_limit=None)
    blocks.launch(server_name=host, server_port=port, css=CSS, **launch_kwargs)
