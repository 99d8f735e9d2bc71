"""Prompt styles in A1111's ``styles.csv`` (columns name, prompt, negative_prompt).

A style's prompt holding ``{prompt}`` wraps the prompt there; otherwise it is added after the
prompt with ", " (each style in turn, negative prompts alike), as A1111 applies them. The file is
``models/styles.csv`` (A1111 keeps it at its root, beside models/; LoRA Studio writes only under
models/ and outputs/, so copy it in). It is read on every use, so edits and refreshes need no restart;
saving a style rewrites it through a temporary file.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STYLES_FILE = "styles.csv"
FIELDS = ("name", "prompt", "negative_prompt")
PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompt(style_prompt: str, prompt: str) -> str:
    """One style's text applied to ``prompt``."""
    if PLACEHOLDER in style_prompt:
        return style_prompt.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


class StyleLibrary:
    """The styles of one ``styles.csv``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def styles(self) -> list[Style]:
        """The styles in file order; a missing file is no styles. Raises ValueError for a file that is not
        A1111's CSV."""
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ValueError(f"Cannot read {self.path}: {exc}") from exc
        try:
            reader = csv.DictReader(io.StringIO(text))
            if reader.fieldnames is None or "name" not in reader.fieldnames:
                raise ValueError(f"{self.path} is not an A1111 styles file: its first line must name the columns "
                                 f"{', '.join(FIELDS)}.")
            return [Style((row.get("name") or "").strip(), row.get("prompt") or "", row.get("negative_prompt") or "")
                    for row in reader if (row.get("name") or "").strip()]
        except csv.Error as exc:
            raise ValueError(f"{self.path} is not a readable CSV file: {exc}") from exc

    def find(self, names: Sequence[str]) -> list[Style]:
        """The styles called ``names``, in that order; an unknown name raises ValueError."""
        by_name = {style.name: style for style in self.styles()}
        missing = [name for name in names if name not in by_name]
        if missing:
            known = ", ".join(by_name) or "none"
            raise ValueError(f"No style called {', '.join(map(repr, missing))} in {self.path}. Available: {known}.")
        return [by_name[name] for name in names]

    def apply(self, names: Sequence[str], prompt: str, negative_prompt: str) -> tuple[str, str]:
        """(prompt, negative prompt) with the named styles applied in turn."""
        for style in self.find(names):
            prompt = merge_prompt(style.prompt, prompt)
            negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
        return prompt, negative_prompt

    def save(self, style: Style) -> None:
        """Add ``style``, or replace the one of that name, keeping the others' order."""
        name = style.name.strip()
        if not name:
            raise ValueError("A style needs a name.")
        with self._lock:
            styles = [s for s in self.styles() if s.name != name]
            styles.append(Style(name, style.prompt, style.negative_prompt))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".styles-", suffix=".csv", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(FIELDS)
                    writer.writerows((s.name, s.prompt, s.negative_prompt) for s in styles)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
