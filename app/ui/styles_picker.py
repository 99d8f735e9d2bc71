"""A1111's prompt styles beside each prompt: pick styles from models/styles.csv, apply them, save new ones.

Selected styles go into the request (the engine applies them when the job is submitted); "Apply" writes
them into the prompt boxes instead and clears the selection, as A1111's button does. The file is read
again on Refresh, on page load and after a save, so edits need no restart.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.engine import Engine
from app.engine.styles import Style, StyleLibrary

NOTHING_SELECTED = "Pick one or more styles to apply first."


def _note(message: str) -> str:
    return f"⚠ {html.escape(message, quote=False)}"


def style_choices(library: StyleLibrary) -> tuple[list[str], str]:
    """(style names in file order, a note): a malformed file is no styles and a note saying why."""
    try:
        return [style.name for style in library.styles()], ""
    except ValueError as exc:
        return [], _note(str(exc))


def selected_names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """The dropdown's value as style names (an API client may send one name, or None)."""
    if not value:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(name) for name in value if name)


def apply_styles(library: StyleLibrary, names: str | Sequence[str] | None, prompt: str | None,
                 negative: str | None) -> tuple[str, str, list[str], str]:
    """(prompt, negative prompt, selection, note) after "Apply": the styles written into both prompts and the
    selection cleared; on an unknown name or a malformed file nothing changes and the note says why."""
    prompt, negative = prompt or "", negative or ""
    chosen = selected_names(names)
    if not chosen:
        return prompt, negative, [], NOTHING_SELECTED
    try:
        styled, styled_negative = library.apply(chosen, prompt, negative)
    except ValueError as exc:
        return prompt, negative, list(chosen), _note(str(exc))
    return styled, styled_negative, [], ""


def save_style(library: StyleLibrary, name: str | None, prompt: str | None,
               negative: str | None) -> tuple[bool, str]:
    """(saved?, note) after saving the prompts as style ``name``; a style of that name is replaced."""
    name = (name or "").strip()
    prompt, negative = prompt or "", negative or ""
    if not name:
        return False, _note("Type a name for the style.")
    if not prompt.strip() and not negative.strip():
        return False, _note("Nothing to save: the prompt and negative prompt are empty.")
    try:
        replaced = name in {style.name for style in library.styles()}
        library.save(Style(name, prompt, negative))
    except (ValueError, OSError) as exc:
        return False, _note(str(exc))
    return True, f"Saved style **{html.escape(name, quote=False)}**" + (" (replacing the old one)" if replaced else "")


def refreshed(names: Sequence[str], selected: str | Sequence[str] | None) -> gr.Dropdown:
    """The dropdown with ``names`` as its choices, keeping the selected styles that are still there."""
    return gr.Dropdown(choices=list(names), value=[name for name in selected_names(selected) if name in names],
                       multiselect=True)


@dataclass
class StylesPicker:
    """One tab's styles controls; ``dropdown`` is an input of the tab's Generate."""

    dropdown: gr.Dropdown
    apply: gr.Button
    save: gr.Button
    save_row: gr.Row
    name: gr.Textbox
    confirm: gr.Button
    cancel: gr.Button
    note: gr.Markdown


@dataclass
class StylesHead:
    """What styles_dropdown builds beside the prompts, and the note for the file as it was then."""

    dropdown: gr.Dropdown
    apply: gr.Button
    save: gr.Button
    note_text: str


def styles_dropdown(engine: Engine, tab: str) -> StylesHead:
    """The dropdown and its two small buttons (inside the caller's layout, beside the prompts)."""
    names, note = style_choices(engine.styles)
    # Custom values: API clients may name styles added to the file since the app started (the engine checks names).
    dropdown = gr.Dropdown(names, value=[], multiselect=True, label="Styles", elem_id=f"{tab}_styles",
                           allow_custom_value=True)
    with gr.Row():
        apply = gr.Button("Apply", size="sm", min_width=60, elem_id=f"{tab}_styles_apply")
        save = gr.Button("Save as style", size="sm", min_width=100, elem_id=f"{tab}_styles_save")
    return StylesHead(dropdown, apply, save, note)


def styles_picker(engine: Engine, tab: str, head: StylesHead, prompt: gr.Textbox, negative: gr.Textbox,
                  refresh: gr.Button) -> StylesPicker:
    """Build the hidden "save as style" row and the note (below the prompts) and wire the tab's own events;
    saving is wired by wire_styles, which refreshes every tab."""
    dropdown, apply, save = head.dropdown, head.apply, head.save
    with gr.Row(visible=False, equal_height=True, elem_id=f"{tab}_styles_save_row") as save_row:
        name = gr.Textbox(label="Style name", placeholder="Name of the new style (saves the prompt and negative "
                                                          "prompt)", scale=4, elem_id=f"{tab}_style_name")
        confirm = gr.Button("Save", variant="primary", size="sm", scale=0, min_width=80,
                            elem_id=f"{tab}_style_confirm", elem_classes="ls-tool")
        cancel = gr.Button("Cancel", size="sm", scale=0, min_width=80, elem_id=f"{tab}_style_cancel",
                           elem_classes="ls-tool")
    note = gr.Markdown(head.note_text, elem_id=f"{tab}_styles_note")

    apply.click(lambda names, text, negative_text: apply_styles(engine.styles, names, text, negative_text),
                [dropdown, prompt, negative], [prompt, negative, dropdown, note], api_name=False, queue=False)
    save.click(lambda: (gr.Row(visible=True), ""), None, [save_row, note], api_name=False, queue=False)
    cancel.click(lambda: gr.Row(visible=False), None, save_row, api_name=False, queue=False)

    def reload(selected: list[str] | None) -> tuple[gr.Dropdown, str]:
        names, message = style_choices(engine.styles)
        return refreshed(names, selected), message

    refresh.click(reload, dropdown, [dropdown, note], api_name=False, queue=False)
    return StylesPicker(dropdown, apply, save, save_row, name, confirm, cancel, note)


def wire_styles(engine: Engine, blocks: gr.Blocks, pickers: Sequence[tuple[StylesPicker, gr.Textbox, gr.Textbox]]
                ) -> None:
    """Each picker's Save (with its tab's prompt and negative prompt) refreshes every tab's dropdown; so does
    loading the page, since the page's first choices are those read when the app started."""
    dropdowns = [picker.dropdown for picker, _, _ in pickers]
    notes = [picker.note for picker, _, _ in pickers]

    def reload_all(*selected: list[str] | None) -> list[Any]:
        names, message = style_choices(engine.styles)
        return [refreshed(names, value) for value in selected] + [message] * len(selected)

    blocks.load(reload_all, dropdowns, dropdowns + notes, api_name=False, queue=False, show_progress="hidden")
    for index, (picker, prompt, negative) in enumerate(pickers):
        def confirm(name: str | None, text: str | None, negative_text: str | None, *selected: list[str] | None,
                    index: int = index) -> list[Any]:
            saved, message = save_style(engine.styles, name, text, negative_text)
            updates = reload_all(*selected) if saved else [gr.update()] * (len(selected) * 2)
            updates[len(selected) + index] = message  # this tab's note says what was saved, or why not
            return updates + ([gr.Row(visible=False), ""] if saved else [gr.update(), gr.update()])

        outputs = dropdowns + notes + [picker.save_row, picker.name]
        picker.confirm.click(confirm, [picker.name, prompt, negative, *dropdowns], outputs, api_name=False,
                             queue=False)
        picker.name.submit(confirm, [picker.name, prompt, negative, *dropdowns], outputs, api_name=False,
                           queue=False)
