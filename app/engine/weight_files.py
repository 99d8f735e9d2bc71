"""Reading the tensors of a model file that spandrel builds a network from (upscalers, face restorers),
with the project's rule for pickles: ``.safetensors`` always; ``.pth``/``.pt``/``.ckpt`` only when
LoRA Studio was started with ``--allow-pickle``, and then with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

SAFE_SUFFIXES: tuple[str, ...] = (".safetensors",)
PICKLE_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".ckpt")


class WeightFileError(ValueError):
    """A model file that cannot be read; the message names the file and says why."""


def read_weights(path: Path, *, allow_pickle: bool) -> dict[str, Any]:
    """The file's tensors on the CPU, as stored (spandrel unwraps "params_ema" and the like). Raises
    WeightFileError for a pickle without ``allow_pickle`` and for a file that cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PICKLE_SUFFIXES:
        try:
            return load_file(path, device="cpu")
        except Exception as exc:  # SafetensorError, OSError...
            raise WeightFileError(f"{path.name} cannot be read: it is damaged or not a safetensors file "
                                  f"({first_line(exc)}).") from exc
    if not allow_pickle:
        raise WeightFileError(f"{path.name} is a pickle file ({suffix}); LoRA Studio loads pickle files only when "
                              "started with --allow-pickle. Start it that way, or convert the file to .safetensors.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors of many kinds
        raise WeightFileError(f"{path.name} cannot be read with torch.load(weights_only=True): {first_line(exc)}. "
                              "It may be damaged, a TorchScript file or hold more than tensors; a .safetensors "
                              "copy would load.") from exc
    if not isinstance(state, dict):
        raise WeightFileError(f"{path.name} holds a {type(state).__name__}, not a dictionary of weights.")
    return state


def first_line(exc: BaseException) -> str:
    """An exception's first line (at most 300 characters), or its type's name when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
