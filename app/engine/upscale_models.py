"""Model-upscaler files on disk (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT...): where they are, what they are.

A1111 keeps them in ``models/ESRGAN``, ``models/RealESRGAN``, ``models/SwinIR``, ``models/DAT`` and
``models/HAT``; ComfyUI in ``models/upscale_models``. All of those are searched, subfolders too.
``.safetensors`` files always load; ``.pth``/``.pt``/``.ckpt`` files are pickles and load only when
LoRA Studio was started with --allow-pickle, and then with ``torch.load(weights_only=True)``.

The architecture and scale come from the file itself: spandrel recognises the network from its
tensors. Doing that builds the network once, so the facts are kept per file version (path, mtime,
size) and a listing after the first one costs a ``stat`` per file. A file that is not a usable
upscaler (damaged, not recognised, a face restorer or an inpainting model) is listed with a message
that names it and says why, and never stops the listing of the others.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from app.engine.spandrel_import import import_spandrel
from app.engine.weight_files import PICKLE_SUFFIXES, SAFE_SUFFIXES, WeightFileError, first_line, read_weights

log = logging.getLogger(__name__)

UPSCALER_FOLDERS: tuple[str, ...] = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT", "upscale_models")
RESERVED_NAMES: tuple[str, ...] = ("None", "Lanczos", "Nearest")  # the built-in upscalers' names


class UpscalerFileError(ValueError):
    """A model-upscaler file that cannot be used; the message names the file and says why."""


@dataclass(frozen=True)
class ModelFacts:
    """What a file holds, as spandrel reads it; ``error`` set (and the rest None) when it is unusable."""

    architecture: str | None = None  # spandrel's architecture name: "ESRGAN", "SwinIR", "DAT"...
    scale: int | None = None  # output size / input size
    purpose: str | None = None  # "SR" (super-resolution) or "Restoration" (a 1x model)
    tags: tuple[str, ...] = ()  # spandrel's size tags: "64nf", "23nb"...
    error: str | None = None


@dataclass(frozen=True)
class UpscalerFile:
    """One model file found in an upscaler folder, with the name the pickers show."""

    name: str  # the file stem, as A1111 shows it; the path under models/ when stems clash
    path: Path

    @property
    def is_pickle(self) -> bool:
        return self.path.suffix.lower() in PICKLE_SUFFIXES


def find_upscaler_files(models_dir: Path) -> list[UpscalerFile]:
    """The model files in the upscaler folders under ``models_dir``, sorted by folder then path. Hidden
    files and folders are skipped. A stem found more than once (or equal to a built-in's name) is named
    by its path under ``models_dir`` instead, so every name picks one file."""
    root = Path(models_dir)
    paths: list[Path] = []
    for folder in UPSCALER_FOLDERS:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(base).parts
            if any(part.startswith(".") for part in relative) or not path.is_file():
                continue
            if path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES:
                paths.append(path)
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem.casefold()] = stems.get(path.stem.casefold(), 0) + 1
    reserved = {name.casefold() for name in RESERVED_NAMES}
    found = []
    for path in paths:
        clash = stems[path.stem.casefold()] > 1 or path.stem.casefold() in reserved
        found.append(UpscalerFile(path.relative_to(root).as_posix() if clash else path.stem, path))
    return found


def read_state_dict(path: Path, *, allow_pickle: bool) -> dict[str, Any]:
    """The tensors of an upscaler file, on the CPU (``weight_files.read_weights``), or UpscalerFileError."""
    try:
        state = read_weights(path, allow_pickle=allow_pickle)
    except WeightFileError as exc:
        raise UpscalerFileError(str(exc)) from exc
    return state

def load_descriptor(path: Path, *, allow_pickle: bool) -> Any:
    """The upscaler in ``path`` as a spandrel ``ImageModelDescriptor`` on the CPU, in fp32. Raises
    UpscalerFileError naming the file when it cannot be read, is not recognised, or is not an upscaler."""
    path = Path(path)
    state = read_state_dict(path, allow_pickle=allow_pickle)
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise UpscalerFileError(
            f"{path.name} is not a model spandrel recognises: its {len(state)} tensors match none of the "
            "upscaler architectures it knows (ESRGAN, SwinIR, DAT, HAT...). It is not an upscaler LoRA Studio "
            "can run.") from None
    except Exception as exc:  # recognised, but the tensors do not build the network (truncated, edited)
        raise UpscalerFileError(
            f"{path.name} looks like an upscaler but its weights do not build the network: "
            f"{type(exc).__name__}: {first_line(exc)}.") from exc
    check_upscaler(descriptor, path.name)
    return descriptor


def check_upscaler(descriptor: Any, file_name: str) -> None:
    """Raise UpscalerFileError unless ``descriptor`` is a picture-to-picture model LoRA Studio can run as an
    upscaler: super-resolution, or a 1x restoration model (A1111 lists those too), on RGB pictures."""
    spandrel = import_spandrel()
    architecture = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscalerFileError(f"{file_name} is an inpainting model ({architecture}), not an upscaler; take it "
                                "out of the upscaler folders.")
    if descriptor.purpose == "FaceSR":
        raise UpscalerFileError(f"{file_name} is a face-restoration model ({architecture}), not an upscaler; "
                                "take it out of the upscaler folders.")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UpscalerFileError(
            f"{file_name} is a {architecture} model for {descriptor.input_channels}-channel pictures "
            f"(out: {descriptor.output_channels}); LoRA Studio's upscalers work on RGB (3-channel) pictures.")


def facts_of(descriptor: Any) -> ModelFacts:
    return ModelFacts(architecture=descriptor.architecture.name, scale=int(descriptor.scale),
                      purpose=descriptor.purpose, tags=tuple(descriptor.tags))


def scale_from_name(name: str) -> int | None:
    """The scale a file name announces ("4x_foo", "RealESRGAN_x2plus"), where its tensors cannot be read."""
    match = re.search(r"(?<![0-9a-z])(?:x([1-8])|([1-8])x)(?![0-9])", name.casefold())
    return int(match.group(1) or match.group(2)) if match else None


class UpscalerFacts:
    """The facts of upscaler files, read once per file version; the UpscalerLibrary owns one."""

    def __init__(self, *, allow_pickle: bool) -> None:
        self.allow_pickle = allow_pickle
        self._facts: dict[tuple[Path, int, int], ModelFacts] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> ModelFacts:
        """``path``'s facts (read on first sight of this version of the file). Never raises for a bad
        file: the facts carry its error instead."""
        try:
            key = _version_key(path)
        except OSError as exc:
            return ModelFacts(error=f"{Path(path).name} cannot be read: {exc}")
        with self._lock:
            known = self._facts.get(key)
        if known is not None:
            return known
        facts = self._read(Path(path))
        with self._lock:
            self._facts[key] = facts
        return facts

    def remember(self, path: Path, descriptor: Any) -> None:
        """Record the facts of a file just loaded (a load reads them anyway)."""
        try:
            key = _version_key(path)
        except OSError:
            return
        with self._lock:
            self._facts[key] = facts_of(descriptor)

    def _read(self, path: Path) -> ModelFacts:
        try:
            descriptor = load_descriptor(path, allow_pickle=self.allow_pickle)
        except UpscalerFileError as exc:
            log.info("upscaler file not usable: %s", exc)
            return ModelFacts(scale=scale_from_name(path.stem), error=str(exc))
        facts = facts_of(descriptor)
        del descriptor
        return facts


def _version_key(path: Path) -> tuple[Path, int, int]:
    stat = Path(path).stat()
    return (Path(path), stat.st_mtime_ns, stat.st_size)

