"""The Gradio front end: one module per tab, all calling the engine."""

from __future__ import annotations

import gradio as gr

from app.engine import Engine
from app.ui.img2img_tab import build_img2img_tab
from app.ui.inpaint_tab import build_inpaint_tab
from app.ui.png_info_tab import build_png_info_tab, fields_from_infotext
from app.ui.txt2img_tab import build_txt2img_tab

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
        with gr.Tabs() as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                txt2img_settings, _ = build_txt2img_tab(engine)
            with gr.Tab("img2img", id="img2img"):
                _, img2img_settings, _ = build_img2img_tab(engine)
            with gr.Tab("Inpaint", id="inpaint"):
                build_inpaint_tab(engine)
            with gr.Tab("PNG Info", id="png_info"):
                info_text, to_txt2img, to_img2img = build_png_info_tab()
            with gr.Tab("Train LoRA", id="train"):
                gr.Markdown("LoRA training arrives here in a later version.")

        def send_fields(text: str) -> list:
            values = fields_from_infotext(text)
            known = {e.name for e in engine.registry.checkpoints()}
            values[0] = values[0] if values[0] in known else gr.update()  # keep the pick if the model is absent
            return values

        for button, settings, tab_id in ((to_txt2img, txt2img_settings, "txt2img"),
                                         (to_img2img, img2img_settings, "img2img")):
            button.click(send_fields, info_text, settings.as_list(), api_name=False, queue=False).then(
                lambda tab_id=tab_id: gr.Tabs(selected=tab_id), None, tabs, api_name=False, queue=False)
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
