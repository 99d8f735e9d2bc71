"""What is on disk: checkpoints, LoRAs, VAEs and embeddings under the models folder (A1111's layout).

``models/Stable-diffusion/`` holds diffusers folders (with ``model_index.json``) and single-file
checkpoints; ``models/Lora/`` LoRA files; ``models/VAE/`` VAEs (single files or diffusers
folders); ``models/embeddings/`` textual-inversion files (A1111 keeps that folder at the webui root;
LoRA Studio keeps it with the other models). Requests name models by the names listed here; a name
that looks like a Hugging Face hub id (``owner/name``) and is not on disk is treated as one.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.engine.embeddings import EMBEDDING_SUFFIXES, EmbeddingFormatError, TextualInversion, read_embedding
from app.engine.file_hash import sha256_file
from app.engine.lora_files import LoraInfo, addnet_hash, inspect_lora

CHECKPOINT_DIR = "Stable-diffusion"
LORA_DIR = "Lora"
VAE_DIR = "VAE"
EMBEDDINGS_DIR = "embeddings"
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MODEL_CARD = "lora_studio.json"  # optional per-model notes: label, default size/steps, preview factors
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

EntryKind = Literal["diffusers", "single_file", "pickle", "hub"]


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint, LoRA or VAE the app can use."""

    name: str  # what requests and the UI call it: path relative to its folder, with suffix for files
    path: Path | None  # None for hub ids
    kind: EntryKind

    @property
    def title(self) -> str:
        label = self.card().get("label")
        return f"{self.name} ({label})" if label else self.name

    def card(self) -> dict:
        """The model's ``lora_studio.json`` notes, or {}."""
        if self.path is None or not self.path.is_dir():
            return {}
        card = self.path / MODEL_CARD
        return json.loads(card.read_text(encoding="utf-8")) if card.is_file() else {}


class ModelRegistry:
    """Scans the models folder; computes A1111-style hashes once per file version."""

    def __init__(self, models_dir: Path, extra_checkpoints: tuple[Path, ...] = ()) -> None:
        self.models_dir = Path(models_dir)
        self.extra_checkpoints = tuple(Path(p) for p in extra_checkpoints)
        self._facts: dict[tuple[str, Path, int, int], object] = {}  # per file version: hashes, LoRA facts
        self._lock = threading.Lock()

    # ----- listing -------------------------------------------------------------------------
    def checkpoints(self) -> list[ModelEntry]:
        root = self.models_dir / CHECKPOINT_DIR
        entries = self._scan(root, allow_folders=True)
        for path in self.extra_checkpoints:
            entries.append(_entry_for(path, path.name))
        return entries

    def loras(self) -> list[ModelEntry]:
        return self._scan(self.models_dir / LORA_DIR, allow_folders=False)

    def vaes(self) -> list[ModelEntry]:
        return self._scan(self.models_dir / VAE_DIR, allow_folders=True)

    def embeddings(self) -> list[ModelEntry]:
        """Textual-inversion files (.safetensors, .pt, .bin) under ``models/embeddings/``, subfolders too."""
        entries = self._scan(self.models_dir / EMBEDDINGS_DIR, allow_folders=False)
        return [e for e in entries if e.path is not None and e.path.suffix.lower() in EMBEDDING_SUFFIXES]

    def _scan(self, root: Path, *, allow_folders: bool) -> list[ModelEntry]:
        if not root.is_dir():
            return []
        found: list[ModelEntry] = []
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            if path.is_dir():
                if allow_folders and _is_diffusers_folder(path) and not _inside_diffusers_folder(path, root):
                    found.append(ModelEntry(rel, path, "diffusers"))
            elif path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES and not _inside_diffusers_folder(path, root):
                found.append(_entry_for(path, rel))
        return found

    # ----- lookup --------------------------------------------------------------------------
    def find_checkpoint(self, name: str) -> ModelEntry:
        """The checkpoint called ``name`` (also without its suffix), or a hub entry for a hub id."""
        entries = self.checkpoints()
        if _find(entries, name) is None and is_hub_id(name) and not (self.models_dir / CHECKPOINT_DIR / name).exists():
            return ModelEntry(name, None, "hub")
        return self._find_or_explain(entries, name, "checkpoint", CHECKPOINT_DIR)

    def find_vae(self, name: str) -> ModelEntry:
        return self._find_or_explain(self.vaes(), name, "VAE", VAE_DIR)

    def find_lora(self, name: str) -> ModelEntry:
        """A LoRA by name, path without suffix, or (as A1111 allows) its bare file stem when unique."""
        entries = self.loras()
        by_stem = [e for e in entries if Path(e.name).stem == name]
        if _find(entries, name) is None and len(by_stem) == 1:
            return by_stem[0]
        return self._find_or_explain(entries, name, "LoRA", LORA_DIR)

    def checkpoint_family(self, entry: ModelEntry) -> str | None:
        """"sd1", "sd2" or "sdxl" from a checkpoint's configs or header, without loading it; None when
        that cannot be told cheaply (hub ids, pickles, unreadable files)."""
        if entry.path is None or entry.kind == "pickle":
            return None
        if entry.kind == "diffusers":
            return self._cached("family", entry.path / "model_index.json", lambda: _diffusers_family(entry.path))
        from app.engine.checkpoints import CheckpointError, detect_checkpoint

        try:
            return self._cached("family", entry.path, lambda: detect_checkpoint(entry.path).family)
        except (CheckpointError, OSError, ValueError):
            return None

    def lora_info(self, path: Path) -> LoraInfo:
        """A LoRA file's header facts (format, family, rank, alpha, trigger words), read once per version.
        Raises LoraFormatError (a ValueError) for files LoRA Studio cannot apply."""
        return self._cached("info", path, lambda: inspect_lora(path))

    def lora_hash(self, path: Path) -> str:
        """A1111's LoRA hash: kohya's ``sshs_model_hash`` if stored, else the same "addnet" sha256 of the
        tensor bytes; the infotext's "Lora hashes" shows its first 12 digits."""
        stored = self.lora_info(path).metadata.get("sshs_model_hash", "")
        return stored or self._cached("addnet", path, lambda: addnet_hash(path))

    def textual_inversion(self, path: Path, *, allow_pickle: bool) -> TextualInversion:
        """An embedding file's vectors and hash, read once per file version. Raises EmbeddingFormatError
        (a ValueError) for files that are not embeddings, pickles not allowed, or a file gone missing."""
        path = Path(path)
        # A pickle refused without allow_pickle must be read again once it is allowed (errors are not
        # cached anyway); a .safetensors file reads the same either way, so it shares one entry.
        pickled = allow_pickle and path.suffix.lower() in PICKLE_SUFFIXES
        try:
            return self._cached("embedding+pickle" if pickled else "embedding", path,
                                lambda: read_embedding(path, allow_pickle=allow_pickle))
        except OSError as exc:  # the stat in _cached: the file went away after listing
            raise EmbeddingFormatError(f"{path.name} cannot be read: {exc}") from exc

    def _cached(self, kind: str, path: Path, compute):
        stat = path.stat()
        key = (kind, path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._facts:
                return self._facts[key]
        value = compute()
        with self._lock:
            self._facts[key] = value
        return value

    def _find_or_explain(self, entries: list[ModelEntry], name: str, kind: str, folder: str) -> ModelEntry:
        entry = _find(entries, name)
        if entry is None:
            known = ", ".join(e.name for e in entries) or "none"
            raise ValueError(f"No {kind} called {name!r} in {self.models_dir / folder}. Available: {known}.")
        return entry

    # ----- hashes --------------------------------------------------------------------------
    def short_hash(self, entry: ModelEntry) -> str | None:
        """A1111's "Model hash": the first 10 hex digits of the file's sha256. For a diffusers
        folder, the sha256 of its UNet weights file; None for hub models."""
        target = _hash_target(entry)
        return None if target is None else self._short_sha256(target)

    def component_hash(self, entry: ModelEntry, component: str) -> str | None:
        """The short hash of what one part (``vae``, ``text_encoder``...) of a checkpoint computes from:
        the file itself for a single-file checkpoint, that part's weights in a diffusers folder (the
        model hash covers the UNet only). None for hub models."""
        if entry.path is None:
            return None
        if entry.path.is_file():
            return self.short_hash(entry)
        files = sorted((entry.path / component).glob("*.safetensors"))
        if not files:
            return self.short_hash(entry)
        return "".join(self._short_sha256(f) for f in files)

    def _short_sha256(self, path: Path) -> str:
        return self._cached("sha256", path, lambda: sha256_file(path))[:10]


def is_hub_id(name: str) -> bool:
    """``owner/name`` that cannot be read as a path on this machine (no "..", nothing that exists)."""
    return bool(HUB_ID.match(name)) and ".." not in name.split("/") and not Path(name).exists()


def _entry_for(path: Path, name: str) -> ModelEntry:
    if path.is_dir():
        return ModelEntry(name, path, "diffusers")
    kind: EntryKind = "pickle" if path.suffix.lower() in PICKLE_SUFFIXES else "single_file"
    return ModelEntry(name, path, kind)


def _find(entries: list[ModelEntry], name: str) -> ModelEntry | None:
    for entry in entries:
        aliases = {entry.name, entry.title}
        if entry.kind != "diffusers":
            aliases.add(Path(entry.name).with_suffix("").as_posix())
        if name in aliases:
            return entry
    return None


def _is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "config.json").is_file()


def _inside_diffusers_folder(path: Path, root: Path) -> bool:
    """True for anything below a diffusers folder (its parts are not models of their own)."""
    parent = path.parent
    while parent != root and root in parent.parents:
        if _is_diffusers_folder(parent):
            return True
        parent = parent.parent
    return False


def _diffusers_family(folder: Path) -> str | None:
    """SDXL has a second text encoder; SD 2.x pads prompts with "!" where SD 1.x uses end-of-text."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if (index.get("text_encoder_2") or [None])[0]:
        return "sdxl"
    try:
        tokenizer = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "sd1"
    pad = tokenizer.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    return "sd2" if pad == "!" else "sd1"


def _hash_target(entry: ModelEntry) -> Path | None:
    if entry.path is None:
        return None
    if entry.path.is_file():
        return entry.path
    for candidate in ("unet/diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors"):
        if (entry.path / candidate).is_file():
            return entry.path / candidate
    weights = sorted(entry.path.rglob("*.safetensors"))
    return weights[0] if weights else None
