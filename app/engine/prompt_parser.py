"""The text side of A1111's prompt language: emphasis weights and per-step schedules.

Pure text in, text and numbers out (no torch). ``prompt_schedule`` resolves prompt editing
(``[from:to:when]``, ``[to:when]``, ``[from::when]``) and alternation (``[a|b]``) into the plain
prompt used at each step; ``parse_emphasis`` turns one such prompt into (text, weight) pieces.
Behaviour follows ``shared/reference/prompt-syntax.md``; malformed input never raises: a prompt
whose brackets do not form a schedule is used as written, stray brackets are text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

# How emphasis weights reach the conditioning (A1111's "Emphasis" setting; the first is the default).
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_WORD = "BREAK"
BREAK_WEIGHT = -1.0  # the weight that marks a BREAK piece

# ----- emphasis ---------------------------------------------------------------------------------

_EMPHASIS_TOKENS = re.compile(
    r"""
      (?P<escaped>\\[()\[\]\\])          # \( \) \[ \] \\ : the character itself
    | (?P<backslash>\\)                  # any other backslash is dropped
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # ":1.3)" closes a round bracket with that weight
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+ | :)
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(rf"\s*\b{BREAK_WORD}\b\s*", re.DOTALL)

Piece = tuple[str, float]


def parse_emphasis(prompt: str) -> list[Piece]:
    """(text, weight) pieces of ``prompt``; ``BREAK`` comes out as ("BREAK", -1.0).

    ``(x)`` multiplies by 1.1, ``[x]`` divides by 1.1, ``(x:w)`` multiplies by w, nesting
    multiplies, an unclosed bracket runs to the end, neighbours of equal weight are merged.
    """
    pieces: list[list] = []
    round_starts: list[int] = []
    square_starts: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    def add_text(text: str) -> None:
        for index, part in enumerate(_BREAK_SPLIT.split(text)):
            if index:
                pieces.append([BREAK_WORD, BREAK_WEIGHT])
            pieces.append([part, 1.0])

    for match in _EMPHASIS_TOKENS.finditer(prompt):
        token = match.group(0)
        weight = _as_float(match.group("weight"))
        if match.group("escaped"):
            pieces.append([token[1], 1.0])
        elif match.group("backslash"):
            continue
        elif token == "(":
            round_starts.append(len(pieces))
        elif token == "[":
            square_starts.append(len(pieces))
        elif match.group("weight") is not None and round_starts and weight is not None:
            scale_from(round_starts.pop(), weight)
        elif token.endswith(")") and round_starts:
            if token != ")":  # ":<not a number>)": the text is kept, the bracket closes as a plain one
                add_text(token[:-1])
            scale_from(round_starts.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_starts:
            scale_from(square_starts.pop(), SQUARE_MULTIPLIER)
        else:
            add_text(token)

    for start in round_starts:
        scale_from(start, ROUND_MULTIPLIER)
    for start in square_starts:
        scale_from(start, SQUARE_MULTIPLIER)

    merged: list[list] = []
    for piece in pieces or [["", 1.0]]:
        if merged and merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(list(piece))
    return [(text, weight) for text, weight in merged]


def _as_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


# ----- schedules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scheduled:
    before: "_Sequence | None"  # None for [to:when]
    after: "_Sequence"
    when: str  # as written: a dot makes it a fraction of the steps


@dataclass(frozen=True)
class _Alternate:
    options: tuple["_Sequence", ...]


_Node = Union[str, _Scheduled, _Alternate]
_Sequence = tuple[_Node, ...]

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")  # "\\." is no escape before a newline, as in A1111
_NUMBER_TAIL = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\]")
_LITERAL_AT_TOP = "[]():"


class _Fail(Exception):
    """This bracket does not parse as a construct."""


def _parse_sequence(text: str, pos: int, top: bool = False) -> tuple[_Sequence, int]:
    """Items (plain text, emphasis, schedules, alternations) from ``pos`` until a character that
    cannot start one. Inside brackets a bracket that does not close properly raises _Fail; at the
    top level (``top``) it is literal text, as are stray ``]``, ``)`` and ``:``."""
    items: list[_Node] = []
    while pos < len(text):
        plain = _PLAIN.match(text, pos)
        if plain:
            items.append(plain.group(0))
            pos = plain.end()
            continue
        char = text[pos]
        if char in "([":
            try:
                nodes, pos = (_parse_round if char == "(" else _parse_square)(text, pos)
                items.extend(nodes)
                continue
            except _Fail:
                if not top:
                    raise
        if top and char in _LITERAL_AT_TOP:
            items.append(char)
            pos += 1
            continue
        break
    return tuple(items), pos


def _parse_round(text: str, pos: int) -> tuple[_Sequence, int]:
    """``(x)`` or ``(x:y)``: emphasis, kept as written for the emphasis parser (schedules inside resolve)."""
    first, pos = _parse_sequence(text, pos + 1)
    if pos < len(text) and text[pos] == ")":
        return ("(", *first, ")"), pos + 1
    if pos < len(text) and text[pos] == ":":
        second, pos = _parse_sequence(text, pos + 1)
        if pos < len(text) and text[pos] == ")":
            return ("(", *first, ":", *second, ")"), pos + 1
    raise _Fail


def _parse_square(text: str, pos: int) -> tuple[_Sequence, int]:
    """``[x]`` (emphasis), ``[a|b|...]`` (alternation) or ``[from:to:when]`` / ``[to:when]``."""
    first, pos = _parse_sequence(text, pos + 1)
    if pos >= len(text):
        raise _Fail
    if text[pos] == "]":
        return ("[", *first, "]"), pos + 1
    if text[pos] == "|":
        options = [first]
        while pos < len(text) and text[pos] == "|":
            option, pos = _parse_sequence(text, pos + 1)
            options.append(option)
        if pos < len(text) and text[pos] == "]":
            return (_Alternate(tuple(options)),), pos + 1
        raise _Fail
    if text[pos] == ":":
        number = _NUMBER_TAIL.match(text, pos + 1)
        if number:  # [to:when]
            return (_Scheduled(None, first, number.group(1)),), number.end()
        second, pos = _parse_sequence(text, pos + 1)
        if pos < len(text) and text[pos] == ":":
            number = _NUMBER_TAIL.match(text, pos + 1)
            if number:  # [from:to:when]
                return (_Scheduled(first, second, number.group(1)),), number.end()
    raise _Fail


def _parse_prompt(text: str) -> _Sequence | None:
    """The whole prompt as items, or None when it does not parse (a ``|`` outside an alternation,
    a trailing lone ``\\``): such a prompt is used as written."""
    items, pos = _parse_sequence(text, 0, top=True)
    return items if pos == len(text) else None


def _switch_step(when: str, steps: int) -> int:
    value = float(when)
    return min(steps, int(value * steps if "." in when else value))


def _change_steps(items: _Sequence, steps: int, found: set[int]) -> None:
    for item in items:
        if isinstance(item, _Scheduled):
            step = _switch_step(item.when, steps)
            if step >= 1:
                found.add(step)
            _change_steps(item.before or (), steps, found)
            _change_steps(item.after, steps, found)
        elif isinstance(item, _Alternate):
            found.update(range(1, steps + 1))
            for option in item.options:
                _change_steps(option, steps, found)


def _text_at(items: _Sequence, step: int, steps: int) -> str:
    parts = []
    for item in items:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, _Scheduled):
            chosen = item.before if step <= _switch_step(item.when, steps) else item.after
            parts.append(_text_at(chosen or (), step, steps))
        else:
            parts.append(_text_at(item.options[(step - 1) % len(item.options)], step, steps))
    return "".join(parts)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """[(last step it applies to, prompt text)] for a sampling run of ``steps`` steps (1-based).

    ``when`` written with a dot is a fraction of the steps, a whole number a step; both are capped
    at ``steps``. A prompt without schedules gives [(steps, prompt)].
    """
    steps = max(1, int(steps))
    items = _parse_prompt(prompt)
    if items is None:
        return [(steps, prompt)]
    found = {steps}
    _change_steps(items, steps, found)
    return [(step, _text_at(items, step, steps)) for step in sorted(found)]

