"""Textual-inversion embeddings (A1111's "embeddings"): reading the files, checking they fit a model.

The file name without its suffix is the word used in prompts (``EasyNegative``). Forms read (see
shared/reference/prompt-syntax.md, section 4):

- A1111 ``.pt``: a dict with ``string_to_param`` -> ``{'*': tensor (vectors, width)}`` plus optional
  ``name``, ``step``, ``sd_checkpoint_name``; older ``.pt`` files with a top-level ``emb_params``;
- ``.safetensors`` with one ``emb_params`` tensor;
- SDXL ``.safetensors`` with ``clip_l`` (vectors, 768) and ``clip_g`` (vectors, 1280);
- diffusers ``.bin`` / ``.safetensors`` holding one ``{token: tensor}`` entry, (width,) or (vectors, width).

``.pt`` and ``.bin`` files are pickles, which can run code when loaded: they are refused unless pickles
are allowed, and then read with ``torch.load(weights_only=True)`` (tensors and plain values only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors import safe_open

from app.engine.file_hash import sha256_file

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
PICKLE_EMBEDDING_SUFFIXES = (".pt", ".bin")

# The text encoders' widths of each Stable Diffusion family (SDXL: CLIP-L, then OpenCLIP bigG).
FAMILY_WIDTHS = {"sd1": (768,), "sd2": (1024,), "sdxl": (768, 1280)}
_KNOWN_FAMILIES = {FAMILY_WIDTHS["sd1"]: "SD 1.x", FAMILY_WIDTHS["sd2"]: "SD 2.x", FAMILY_WIDTHS["sdxl"]: "SDXL"}
_SDXL_KEYS = ("clip_l", "clip_g")
_MAX_SAFETENSORS_KEYS = 2  # no embedding form holds more tensors than clip_l + clip_g


class EmbeddingFormatError(ValueError):
    """A file that is not a textual-inversion embedding LoRA Studio can read; the message says why."""


class EmbeddingMismatch(ValueError):
    """An embedding that does not fit the loaded model's text encoder(s)."""


@dataclass(frozen=True)
class TextualInversion:
    """One embedding file's vectors: ``"clip"`` for a single-encoder file, ``"clip_l"`` and ``"clip_g"``
    for SDXL. Each is a float32 CPU tensor (vectors, width). Compared and hashed by file and sha256."""

    name: str  # the word used in prompts: the file stem
    path: Path
    vectors: Mapping[str, torch.Tensor] = field(repr=False, compare=False)
    sha256: str  # full hex sha256 of the file
    step: int | None = None  # A1111 .pt metadata when present
    checkpoint_name: str | None = None  # A1111 .pt "sd_checkpoint_name" when present

    @property
    def vector_count(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def short_hash(self) -> str:
        """What A1111 writes for this embedding in the infotext's "TI hashes"."""
        return self.sha256[:12]

    @property
    def widths(self) -> tuple[int, ...]:
        keys = ("clip",) if "clip" in self.vectors else _SDXL_KEYS
        return tuple(int(self.vectors[key].shape[1]) for key in keys)

    @property
    def family_label(self) -> str:
        widths = self.widths
        if widths in _KNOWN_FAMILIES:
            return _KNOWN_FAMILIES[widths]
        if len(widths) == 1:
            return f"a {widths[0]}-wide text encoder"
        return f"SDXL-style ({widths[0]}+{widths[1]})"

    def vectors_for(self, widths: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """One (n, width) tensor per text encoder of a model whose encoder hidden sizes are ``widths``
        (1 entry for SD 1.x/2.x, 2 for SDXL: clip_l then clip_g). Raises EmbeddingMismatch saying why."""
        model = tuple(int(w) for w in widths)
        mine = self.widths
        intro = f"{self.name} is for {self._made_for()}"
        if len(model) == 1:
            if len(mine) != 1:
                raise EmbeddingMismatch(f"{intro}; this model has one text encoder ({model[0]} wide) and needs a single "
                                        "set of vectors, not a clip_l + clip_g pair")
            if mine != model:
                raise EmbeddingMismatch(f"{intro}; this model's text encoder is {model[0]} wide")
            return (self.vectors["clip"],)
        if len(model) == 2:
            if len(mine) != 2:
                who = "this SDXL model" if model in _KNOWN_FAMILIES else f"this model (text encoders {model[0]} and {model[1]} wide)"
                raise EmbeddingMismatch(f"{intro}; {who} needs clip_l and clip_g vectors")
            if mine != model:
                raise EmbeddingMismatch(f"{intro}; this model's text encoders are {model[0]} and {model[1]} wide")
            return (self.vectors["clip_l"], self.vectors["clip_g"])
        raise EmbeddingMismatch(f"{self.name}: a model with {len(model)} text encoders is not one embeddings can be used with")

    def _made_for(self) -> str:
        widths = self.widths
        if widths in _KNOWN_FAMILIES:
            wide = " + ".join(str(w) for w in widths)
            return f"{_KNOWN_FAMILIES[widths]} ({wide} wide)"
        return self.family_label if len(widths) == 1 else f"{self.family_label} text encoders"


def read_embedding(path: Path, *, allow_pickle: bool = False) -> TextualInversion:
    """Read a textual-inversion file. Raises EmbeddingFormatError (naming the file) for anything that is
    not an embedding in one of the forms above, for unreadable files, and for pickles unless allowed."""
    path = Path(path)
    label = path.name
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        found = suffix or "files without a suffix"
        raise EmbeddingFormatError(f"{label}: embeddings are read from {', '.join(EMBEDDING_SUFFIXES)} files, not {found}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise EmbeddingFormatError(f"{label} cannot be read: {exc}") from exc
    if not path.is_file():
        raise EmbeddingFormatError(f"{label} is not a file")
    if size == 0:
        raise EmbeddingFormatError(f"{label} is empty (0 bytes)")
    if suffix in PICKLE_EMBEDDING_SUFFIXES:
        if not allow_pickle:
            raise EmbeddingFormatError(f"{label} is a pickle file, which can run code when loaded; convert it to "
                                       ".safetensors or start LoRA Studio with --allow-pickle")
        data = _load_pickle(path, label)
    else:
        data = _load_safetensors(path, label)
    vectors, step, checkpoint_name = _interpret(data, label)
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise EmbeddingFormatError(f"{label} cannot be read: {exc}") from exc
    return TextualInversion(name=path.stem, path=path, vectors=MappingProxyType(vectors), sha256=digest,
                            step=step, checkpoint_name=checkpoint_name)


# ----- reading -----------------------------------------------------------------------------------
def _load_pickle(path: Path, label: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for forbidden globals, RuntimeError/EOFError for junk
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EmbeddingFormatError(
            f"{label} could not be read safely with torch.load(weights_only=True): {reason}. Only pickles "
            "holding tensors and plain values are accepted; convert the file to .safetensors with a tool you trust"
        ) from exc


def _load_safetensors(path: Path, label: str) -> dict[str, torch.Tensor]:
    """The file's tensors; the header is checked first so a checkpoint or LoRA is not loaded whole."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            if len(keys) > _MAX_SAFETENSORS_KEYS:
                raise EmbeddingFormatError(_too_many(label, keys))
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in keys}
            for key, shape in shapes.items():
                if len(shape) not in (1, 2):
                    raise EmbeddingFormatError(_bad_rank(label, key, shape))
            return {key: handle.get_tensor(key) for key in keys}
    except EmbeddingFormatError:
        raise
    except Exception as exc:  # SafetensorError, OSError: truncated or not safetensors at all
        raise EmbeddingFormatError(f"{label} is not a readable .safetensors file: {exc}") from exc


def _interpret(data: Any, label: str) -> tuple[dict[str, torch.Tensor], int | None, str | None]:
    if not isinstance(data, Mapping):
        raise EmbeddingFormatError(f"{label} holds a {type(data).__name__}, not a dict of embedding vectors")
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, Mapping) or len(params) != 1:
            count = f"{len(params)} entries" if isinstance(params, Mapping) else f"a {type(params).__name__}"
            raise EmbeddingFormatError(f"{label}: string_to_param should hold one entry ('*': vectors), it holds {count}")
        (value,) = params.values()
        vectors = {"clip": _as_vectors(value, label, "string_to_param['*']")}
    elif any(key in data for key in _SDXL_KEYS):
        missing = [key for key in _SDXL_KEYS if key not in data]
        if missing:
            raise EmbeddingFormatError(f"{label} has {_SDXL_KEYS[1 - _SDXL_KEYS.index(missing[0])]} but no {missing[0]}; "
                                       "an SDXL embedding needs both clip_l and clip_g")
        _only_tensors(data, _SDXL_KEYS, label)
        vectors = {key: _as_vectors(data[key], label, key) for key in _SDXL_KEYS}
        counts = {key: int(v.shape[0]) for key, v in vectors.items()}
        if counts["clip_l"] != counts["clip_g"]:
            raise EmbeddingFormatError(f"{label}: clip_l has {counts['clip_l']} vectors but clip_g has {counts['clip_g']}; "
                                       "an SDXL embedding has the same number for both")
    elif "emb_params" in data:
        _only_tensors(data, ("emb_params",), label)
        vectors = {"clip": _as_vectors(data["emb_params"], label, "emb_params")}
    else:
        keys = list(data.keys())
        if len(keys) != 1:
            if not keys:
                raise EmbeddingFormatError(f"{label} holds nothing (no tensors)")
            raise EmbeddingFormatError(_too_many(label, [str(k) for k in keys]))
        (key,) = keys
        if not isinstance(key, str):
            raise EmbeddingFormatError(f"{label}: its one entry is keyed by a {type(key).__name__}, not a token string")
        vectors = {"clip": _as_vectors(data[key], label, repr(key))}
    step = data.get("step")
    step = int(step) if isinstance(step, int) and not isinstance(step, bool) else None
    checkpoint_name = data.get("sd_checkpoint_name")
    checkpoint_name = checkpoint_name if isinstance(checkpoint_name, str) and checkpoint_name else None
    return vectors, step, checkpoint_name


def _only_tensors(data: Mapping, wanted: tuple[str, ...], label: str) -> None:
    """Metadata (step, name...) may sit beside the vectors; other tensors may not."""
    others = [str(key) for key, value in data.items() if key not in wanted and isinstance(value, torch.Tensor)]
    if others:
        raise EmbeddingFormatError(f"{label} holds other tensors beside {' and '.join(wanted)} ({', '.join(others[:5])}); "
                                   "it does not look like a textual-inversion embedding")


def _as_vectors(value: Any, label: str, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise EmbeddingFormatError(f"{label}: {where} is a {type(value).__name__}, not a tensor")
    if not value.is_floating_point():
        raise EmbeddingFormatError(f"{label}: {where} holds {str(value.dtype).removeprefix('torch.')} numbers, "
                                   "not floating-point vectors")
    shape = tuple(value.shape)
    if value.dim() == 1:
        value = value.unsqueeze(0)
    elif value.dim() != 2:
        raise EmbeddingFormatError(_bad_rank(label, where, shape))
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise EmbeddingFormatError(f"{label}: {where} holds no vectors (shape {shape})")
    vectors = value.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not bool(torch.isfinite(vectors).all()):
        raise EmbeddingFormatError(f"{label}: {where} contains NaN or infinite values")
    return vectors


def _too_many(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    if any("lora" in key.lower() for key in keys):
        return (f"{label} looks like a LoRA file ({len(keys)} tensors: {shown}), not an embedding; LoRA files go in "
                "models/Lora and are used with <lora:name:weight>")
    return (f"{label} holds {len(keys)} tensors ({shown}); a textual-inversion embedding holds one "
            "(or clip_l and clip_g for SDXL)")


def _bad_rank(label: str, where: str, shape: tuple[int, ...]) -> str:
    return f"{label}: {where} has shape {shape}; embedding vectors are (width,) or (vectors, width)"
