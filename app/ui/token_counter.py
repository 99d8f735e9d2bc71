"""A1111's token counter in the corner of each prompt box: ``23/75``, then ``80/150`` past one chunk."""

from __future__ import annotations

import html
import logging

import gradio as gr

from app.engine import Engine
from app.engine.prompt_parser import EMPHASIS_MODES

log = logging.getLogger(__name__)

COUNTER_TITLE = "tokens used / tokens in the prompt's 75-token chunks"
UNKNOWN_COUNT = "?/75"


def _counter(text: str, title: str, error: bool = False) -> str:
    classes = "ls-token-counter ls-token-counter-error" if error else "ls-token-counter"
    return f'<div class="{classes}" title="{html.escape(title)}">{html.escape(text)}</div>'


def token_counter_html(engine: Engine, prompt: str | None, model: str | None, steps: float | None,
                       emphasis: str | None) -> str:
    """The counter's HTML for a prompt on a checkpoint; "?/75" (the reason in its title) when it cannot count."""
    try:
        used, target = engine.token_count(prompt or "", model or None, int(steps or 20),
                                          emphasis or EMPHASIS_MODES[0])
    except ValueError as exc:  # an unknown model typed in, a malformed <lora:...> tag
        return _counter(UNKNOWN_COUNT, f"Cannot count tokens: {exc}", error=True)
    except Exception as exc:  # noqa: BLE001 - a counter must never break typing
        log.warning("token count failed: %s", exc, exc_info=True)
        return _counter(UNKNOWN_COUNT, f"Cannot count tokens: {exc}", error=True)
    return _counter(f"{used}/{target}", COUNTER_TITLE)


def token_counter(engine: Engine, elem_id: str, model: str | None, steps: float) -> gr.HTML:
    """The counter for an empty box (placed by the caller right above it)."""
    return gr.HTML(token_counter_html(engine, "", model, steps, EMPHASIS_MODES[0]), elem_id=elem_id,
                   elem_classes="ls-token-counter-box", js_on_load=None)


def wire_token_counters(engine: Engine, pairs: list[tuple[gr.HTML, gr.Textbox]], model: gr.Dropdown,
                        steps: gr.Slider, emphasis: gr.Dropdown) -> None:
    """Count again when a box changes (only its counter), or the model, steps or emphasis (every counter)."""
    options = dict(queue=False, api_name=False, trigger_mode="always_last", show_progress="hidden")

    def count(prompt: str, name: str | None, step_count: float, mode: str) -> str:
        return token_counter_html(engine, prompt, name, step_count, mode)

    def count_all(name: str | None, step_count: float, mode: str, *prompts: str) -> list[str]:
        return [token_counter_html(engine, prompt, name, step_count, mode) for prompt in prompts]

    for counter, box in pairs:
        box.change(count, [box, model, steps, emphasis], counter, **options)
    counters, boxes = [c for c, _ in pairs], [b for _, b in pairs]
    for trigger in (model, steps, emphasis):
        trigger.change(count_all, [model, steps, emphasis, *boxes], counters, **options)
