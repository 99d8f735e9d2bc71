"""``/sdapi/v1/options``: A1111's settings that the API reads, kept in a JSON file across restarts.

Known keys change what API requests default to (checkpoint, VAE, clip skip, emphasis); any other
key is stored and returned unchanged, as A1111 does. The file lives under the outputs folder
(``outputs/.lora-studio/options.json``), written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

OPTIONS_FILE = Path(".lora-studio") / "options.json"


def default_options(default_model: str | None) -> dict[str, Any]:
    """A1111's names with LoRA Studio's current values."""
    return {
        "sd_model_checkpoint": default_model or "",
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "emphasis": "Original",
        "samples_format": "png",
        "send_seed": True,
        "sd_checkpoint_cache": 0,
        "comma_padding_backtrack": 20,
    }


class OptionsStore:
    """The API's options: defaults, updated by POST, saved to ``path``."""

    def __init__(self, path: Path, defaults: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._values = dict(defaults)
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = {}
            if isinstance(saved, dict):
                self._values.update(saved)

    def get(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` (validated by the caller) and save; return all options."""
        with self._lock:
            self._values.update(changes)
            self._save()
            return dict(self._values)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".options-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self._values, handle, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
