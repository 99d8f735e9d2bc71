"""The textual-inversion picker under the LoRA picker: list models/embeddings, click a row to insert its word."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import gradio as gr
import pandas as pd

from app.engine import Engine
from app.engine.prompts import EmbeddingStatus

HEADERS = ["Name", "Vectors", "Made for", "Hash", "Status"]
USABLE = "ok"
TARGETS = ("Prompt", "Negative prompt")
EMPTY_NOTE = "No embeddings in models/embeddings/ (put A1111 .pt/.safetensors embeddings there)"


def embedding_rows(statuses: Sequence[EmbeddingStatus]) -> list[list[Any]]:
    """One table row per embedding file: name, vector count, family, short hash, "ok" or why it is skipped."""
    return [[s.name, s.vectors if s.vectors is not None else "?", s.family_label, s.short_hash,
             USABLE if s.usable else s.skipped_because] for s in statuses]


def embedding_table(engine: Engine, model: str | None) -> tuple[pd.DataFrame, str]:
    """(the table for ``model``, a note under it: why it is empty, or "")."""
    try:
        statuses, _ = engine.embeddings(model or None)
    except ValueError as exc:
        return pd.DataFrame([], columns=HEADERS), f"Cannot check embeddings: {html.escape(str(exc), quote=False)}"
    return pd.DataFrame(embedding_rows(statuses), columns=HEADERS), "" if statuses else EMPTY_NOTE


def with_embedding(text: str | None, name: str) -> str:
    """``text`` with ``name`` appended comma-separated, as A1111 inserts it; unchanged if it already ends with it."""
    text = text or ""
    body = text.rstrip()
    if not body:
        return name
    if body.rstrip(",").split(",")[-1].strip() == name:
        return text
    return f"{body} {name}" if body.endswith(",") else f"{body}, {name}"


def insert_embedding(row: Sequence[Any] | None, target: str, prompt: str | None,
                     negative: str | None) -> tuple[str, str, str]:
    """(prompt, negative prompt, note) after clicking a table row: a usable embedding's word goes into
    ``target``; a skipped one changes nothing and the note says why."""
    prompt, negative = prompt or "", negative or ""
    if not row or not row[0]:
        return prompt, negative, ""
    name, status = str(row[0]), str(row[HEADERS.index("Status")])
    if status != USABLE:
        return prompt, negative, f"⚠ Skipped: {html.escape(status, quote=False)}"
    if target == TARGETS[0]:
        return with_embedding(prompt, name), negative, ""
    return prompt, with_embedding(negative, name), ""


def embedding_picker(engine: Engine, tab: str, prompt: gr.Textbox, negative: gr.Textbox, model: gr.Dropdown,
                     refresh: gr.Button) -> gr.Dataframe:
    """Build the picker (inside the caller's layout) and wire it; the table follows the checkpoint and Refresh."""

    def load(name: str | None = None) -> tuple[pd.DataFrame, str]:
        return embedding_table(engine, name or engine.config.default_model)

    rows, message = load()  # like the LoRA list: read at start, again on Refresh or another checkpoint
    with gr.Accordion("Textual inversion", open=False, elem_id=f"{tab}_embedding_panel"):
        target = gr.Radio(list(TARGETS), value=TARGETS[1], label="Insert into", elem_id=f"{tab}_embedding_target",
                          info="Click a row to add its word. Most embeddings (EasyNegative, bad hands) are "
                               "negative ones.")
        table = gr.Dataframe(rows, headers=HEADERS, interactive=False, max_height=400, wrap=True,
                             column_widths=["23%", "15%", "17%", "22%", "23%"],
                             label="Embeddings (models/embeddings)", elem_id=f"{tab}_embeddings")
        note = gr.Markdown(message, elem_id=f"{tab}_embedding_info")

    def select(choice: str, text: str, negative_text: str, event: gr.SelectData) -> tuple[str, str, str]:
        return insert_embedding(event.row_value, choice, text, negative_text)

    table.select(select, [target, prompt, negative], [prompt, negative, note], api_name=False, queue=False)
    model.change(load, model, [table, note], api_name=False, queue=False, show_progress="hidden")
    refresh.click(load, model, [table, note], api_name=False, queue=False)
    return table
