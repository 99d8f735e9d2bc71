"""The Gradio front end: one module per tab, all calling the engine."""

from __future__ import annotations

import gradio as gr

from app.engine import Engine
from app.ui.extras_tab import build_extras_tab
from app.ui.generate_tab import quick_settings
from app.ui.img2img_tab import build_img2img_tab
from app.ui.inpaint_tab import build_inpaint_tab
from app.ui.png_info_tab import build_png_info_tab
from app.ui.send_to import target_inputs, target_values, wire_send_to
from app.ui.styles_picker import wire_styles
from app.training.job import Training
from app.ui.train_tab import build_train_tab, use_in_prompt
from app.ui.txt2img_tab import build_txt2img_tab

CSS = """
.ls-progress { position: relative; height: 1.6em; border-radius: 4px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); overflow: hidden; }
.ls-progress-fill { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft); }
.ls-progress-text { position: relative; padding-left: 0.5em; line-height: 1.6em; font-size: 0.9em; }
.ls-tool { align-self: end; }
.ls-quicksettings { align-items: flex-start; }
/* The token counter sits in the top-right corner of the prompt box below it, on its label's line, as in A1111. */
.block.ls-token-counter-box { align-self: flex-end; width: fit-content !important; height: 20px; position: relative;
  z-index: 5; margin: 10px 0 calc(-1 * var(--layout-gap) - 30px) auto; padding: 0 12px 0 0 !important; }
.ls-token-counter-box .html-container { padding: 0 !important; }
.ls-token-counter { font-size: var(--text-sm); line-height: 20px; color: var(--block-label-text-color);
  font-variant-numeric: tabular-nums; white-space: nowrap; cursor: help; }
.ls-token-counter-error { color: var(--color-red-500, #dc2626); }
"""

# Ctrl+Enter (Cmd+Enter on a Mac) in a prompt box clicks that tab's Generate button, as in A1111.
HEAD = """<script>
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
  const box = event.target.closest && event.target.closest('[id$="_prompt"], [id$="_negative"]');
  if (!box) return;
  const button = document.getElementById(box.id.replace(/_(prompt|negative)$/, "") + "_generate");
  if (button) { event.preventDefault(); button.click(); }
});
// Hover titles for the icon buttons (Gradio buttons take no tooltip).
const LS_TITLES = {_refresh: "Read models/ and models/styles.csv again", _random_seed: "Random seed (-1)",
                   _reuse_seed: "Reuse the seed of the selected result",
                   _styles_apply: "Write the selected styles into the prompts (else they apply when you generate)",
                   _styles_save: "Save the prompt and negative prompt as a style in models/styles.csv"};
new MutationObserver(() => {
  for (const [suffix, title] of Object.entries(LS_TITLES)) {
    document.querySelectorAll(`[id$="${suffix}"]:not([title])`).forEach((el) => el.setAttribute("title", title));
  }
}).observe(document.documentElement, {childList: true, subtree: true});
</script>"""

CACHE_CLEANUP = (3600, 24 * 3600)  # every hour, delete cached uploads/results older than a day


def build_ui(engine: Engine, training: Training) -> gr.Blocks:
    with gr.Blocks(title="LoRA Studio", delete_cache=CACHE_CLEANUP) as blocks:
        gr.Markdown("## LoRA Studio")
        gr.Markdown(_model_note(engine))
        quick = quick_settings()
        with gr.Tabs() as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                txt2img = build_txt2img_tab(engine, quick)
            with gr.Tab("img2img", id="img2img"):
                img2img = build_img2img_tab(engine, quick)
            with gr.Tab("Inpaint", id="inpaint"):
                inpaint = build_inpaint_tab(engine, quick)
            with gr.Tab("Extras", id="extras"):
                build_extras_tab(engine)
            with gr.Tab("PNG Info", id="png_info"):
                info_text, to_txt2img, to_img2img = build_png_info_tab()
            with gr.Tab("Train LoRA", id="train"):
                train = build_train_tab(engine, training)

        for button, target, tab_id in ((to_txt2img, txt2img, "txt2img"), (to_img2img, img2img, "img2img")):
            button.click(lambda text, target=target: target_values(engine, text, target), info_text,
                         target_inputs(target), api_name=False, queue=False).then(
                lambda tab_id=tab_id: gr.Tabs(selected=tab_id), None, tabs, api_name=False, queue=False)
        wire_send_to(engine, tabs, {"txt2img": txt2img, "img2img": img2img, "inpaint": inpaint}, img2img, inpaint)
        wire_styles(engine, blocks, [(tab.styles, tab.settings.prompt, tab.settings.negative_prompt)
                                     for tab in (txt2img, img2img, inpaint)])
        train.use_in_txt2img.click(use_in_prompt, [train.trained_lora, txt2img.settings.prompt],
                                   [txt2img.settings.prompt, tabs], api_name=False, queue=False)
    return blocks


def _model_note(engine: Engine) -> str:
    try:
        entry = engine.registry.find_checkpoint(engine.config.default_model or "")
    except ValueError:
        return "No default model: pick one from models/Stable-diffusion."
    return f"Default model: **{entry.title}**"
