"""Face restoration ("Restore faces" in A1111): GFPGAN, CodeFormer and RestoreFormer files the person
already has, read by spandrel (CodeFormer through ``spandrel_extra_arches``).

Files are looked for in A1111's ``models/GFPGAN`` and ``models/Codeformer`` and ComfyUI's
``models/facerestore_models`` (also ``models/CodeFormer`` and ``models/RestoreFormer``), subfolders
too. ``.safetensors`` files always load; ``.pth``/``.pt``/``.ckpt`` files are pickles and load only
with --allow-pickle, and then with ``torch.load(weights_only=True)``. The helper networks A1111
downloads into ``models/GFPGAN`` (facexlib's ``detection_*``, ``parsing_*``, ``alignment_*``) are
not restorers and are left out.

A restore finds the faces (``face_detect``), cuts an expanded square around each, runs the restorer on
it at 512x512 and pastes the result back soft-edged (``face_paste``), blended by the visibility.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from app.engine.face_detect import HaarFaceDetector
from app.engine.face_paste import crop_face, face_square, paste_face
from app.engine.spandrel_import import import_spandrel
from app.engine.weight_files import PICKLE_SUFFIXES, SAFE_SUFFIXES, WeightFileError, first_line, read_weights

log = logging.getLogger(__name__)

FACE_FOLDERS: tuple[str, ...] = ("GFPGAN", "Codeformer", "CodeFormer", "RestoreFormer", "facerestore_models")
FACE_ARCHITECTURES: tuple[str, ...] = ("GFPGAN", "CodeFormer", "RestoreFormer")  # spandrel's names
HELPER_PREFIXES: tuple[str, ...] = ("detection_", "parsing_", "alignment_")  # facexlib's, not restorers
FACE_INPUT_SIZE = 512  # every supported restorer was trained on 512x512 faces
NO_MODEL_HINT = ("put a GFPGAN/CodeFormer/RestoreFormer .safetensors in models/GFPGAN, models/Codeformer or "
                 "models/facerestore_models (.pth files load when LoRA Studio is started with --allow-pickle)")

ProgressCallback = Callable[[int, int], None]  # (faces done, faces found)


class FaceRestoreError(ValueError):
    """A face-restoration file or name that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class FaceRestorerInfo:
    """One file in the face-restoration folders; ``error`` says why it cannot be used, if it cannot."""

    name: str  # the file stem; its path under models/ where two files share a stem
    path: Path
    architecture: str | None = None  # "GFPGAN", "CodeFormer" or "RestoreFormer"
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.error is None


@dataclass
class _LoadedRestorer:
    version: tuple[Path, int, int]
    architecture: str
    model: torch.nn.Module
    dtype: torch.dtype


class FaceRestorerLibrary:
    """The face restorers under ``models_dir``, the one loaded on ``device`` and the face detector.
    The ModelManager owns one."""

    def __init__(self, models_dir: Path, *, allow_pickle: bool, device: torch.device, dtype: torch.dtype) -> None:
        self.models_dir = Path(models_dir)
        self.allow_pickle = allow_pickle
        self.device = torch.device(device)
        self.dtype = dtype
        self._facts: dict[tuple[Path, int, int], tuple[str | None, str | None]] = {}  # (architecture, error)
        self._loaded: _LoadedRestorer | None = None
        self._detector: HaarFaceDetector | None = None
        self._lock = threading.Lock()  # the facts and the detector
        self._model_lock = threading.Lock()  # one restore at a time on the loaded model

    # ----- listing -------------------------------------------------------------------------
    def available(self) -> list[FaceRestorerInfo]:
        """Every candidate file, usable or not (then with its error); never raises for a bad file."""
        return [self._info(name, path) for name, path in find_face_model_files(self.models_dir)]

    def find(self, name: str) -> FaceRestorerInfo:
        """The usable restorer called ``name``: a file stem (or the listed name), else an architecture name
        ("GFPGAN", "CodeFormer", "RestoreFormer", any case; A1111's restorer names), which picks the first
        such file. Raises FaceRestoreError saying what is installed when there is none."""
        infos = self.available()
        wanted = name.strip().casefold()
        named = [info for info in infos if wanted in (info.name.casefold(), info.path.stem.casefold())]
        if named:
            if named[0].error is not None:
                raise FaceRestoreError(named[0].error)
            return named[0]
        usable = [info for info in infos if info.usable]
        by_architecture = [info for info in usable if (info.architecture or "").casefold() == wanted]
        if by_architecture:
            return by_architecture[0]
        if not usable:
            problems = "".join(f" {info.error}" for info in infos if info.error)
            raise FaceRestoreError(f"No face restoration model is installed: {NO_MODEL_HINT}.{problems}")
        known = ", ".join(f"{info.name} ({info.architecture})" for info in usable)
        raise FaceRestoreError(f"No face restoration model called {name!r}. Installed: {known}.")

    # ----- restoring -----------------------------------------------------------------------
    def restore(self, image: Image.Image, name: str, visibility: float = 1.0, codeformer_weight: float = 0.5,
                progress: ProgressCallback | None = None) -> tuple[Image.Image, int]:
        """``image`` with its faces restored by the restorer ``name`` (see ``find``), and how many faces
        were restored. ``visibility`` blends with the original (0: the original exactly, 1: fully
        restored); ``codeformer_weight`` is CodeFormer's fidelity (0: strongest restoration, 1: closest to
        the input), ignored by the others. A picture without a face comes back unchanged."""
        if not 0.0 <= visibility <= 1.0:
            raise ValueError(f"Face restoration visibility must be between 0 and 1, not {visibility}.")
        if not 0.0 <= codeformer_weight <= 1.0:
            raise ValueError(f"The CodeFormer weight must be between 0 and 1, not {codeformer_weight}.")
        info = self.find(name)
        if visibility == 0.0:
            return image.copy(), 0
        boxes = self.detector().detect(image)
        if not boxes:
            return image.copy(), 0
        canvas = np.asarray(image.convert("RGB"), dtype=np.float32)
        with self._model_lock:
            loaded = self._load(info)
            for done, box in enumerate(boxes, start=1):
                square = face_square(box)
                face = crop_face(canvas, square, FACE_INPUT_SIZE)
                paste_face(canvas, self._run(loaded, face, codeformer_weight), square, visibility)
                if progress is not None:
                    progress(done, len(boxes))
        restored = Image.fromarray(np.rint(canvas).astype(np.uint8), "RGB")
        if "A" in image.getbands():
            restored.putalpha(image.getchannel("A"))
        return restored, len(boxes)

    def detector(self) -> HaarFaceDetector:
        """The face detector, built on first use (it imports OpenCV and reads its cascade)."""
        with self._lock:
            if self._detector is None:
                self._detector = HaarFaceDetector()
            return self._detector

    def unload(self) -> None:
        """Drop the loaded restorer (the caller frees device memory)."""
        with self._model_lock:
            self._loaded = None

    # ----- internals -----------------------------------------------------------------------
    def _info(self, name: str, path: Path) -> FaceRestorerInfo:
        try:
            version = _version_key(path)
        except OSError as exc:
            return FaceRestorerInfo(name, path, error=f"{path.name} cannot be read: {exc}")
        with self._lock:
            known = self._facts.get(version)
        if known is None:  # the message is kept, not the exception: its traceback holds the tensors
            try:
                known = (identify_face_model(read_state_dict(path, allow_pickle=self.allow_pickle), path.name), None)
            except FaceRestoreError as exc:
                log.info("face restoration file not usable: %s", exc)
                known = (None, str(exc))
            with self._lock:
                self._facts[version] = known
        architecture, error = known
        return FaceRestorerInfo(name, path, architecture=architecture, error=error)

    def _load(self, info: FaceRestorerInfo) -> _LoadedRestorer:
        """The restorer of ``info`` on the device, loading it in place of the one loaded before."""
        version = _version_key(info.path)
        if self._loaded is not None and self._loaded.version == version:
            return self._loaded
        self._loaded = None
        descriptor = load_face_model(info.path, allow_pickle=self.allow_pickle)
        dtype = compute_dtype(descriptor, self.device, self.dtype)
        model = descriptor.model.eval().to(device=self.device, dtype=dtype)
        log.info("loaded face restorer %s (%s) on %s as %s", info.name, descriptor.architecture.name,
                 self.device, dtype)
        self._loaded = _LoadedRestorer(version, str(descriptor.architecture.id), model, dtype)
        return self._loaded

    def _run(self, loaded: _LoadedRestorer, face: np.ndarray, codeformer_weight: float) -> np.ndarray:
        """One size x size face (float32 0..255 RGB) through the restorer; the restored face, same layout."""
        batch = torch.from_numpy(face).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0  # the networks take -1..1
        with torch.inference_mode():
            result = forward_face(loaded.model, loaded.architecture, batch.to(self.device, loaded.dtype),
                                  codeformer_weight)
        pixels = ((result.float().clamp(-1.0, 1.0) + 1.0) * 127.5)[0].permute(1, 2, 0)
        return pixels.cpu().numpy()


def forward_face(model: torch.nn.Module, architecture: str, batch: torch.Tensor, codeformer_weight: float) -> torch.Tensor:
    """A restorer's output for faces in -1..1, called as GFPGAN's and CodeFormer's own code call them
    (spandrel's wrappers skip the -1..1 scaling and CodeFormer's weight). GFPGAN uses the noise stored in
    its file rather than fresh noise, so the same picture restores the same way every time."""
    if architecture == "GFPGAN":
        return model(batch, return_rgb=False, randomize_noise=False)[0]
    if architecture == "CodeFormer":
        return model(batch, weight=codeformer_weight)[0]
    return model(batch)[0]


def compute_dtype(descriptor: Any, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """fp32 on the CPU; on a GPU the engine's half dtype where the architecture works in it, else fp32.
    spandrel marks none of the face restorers as working in fp16 and all of them as working in bf16, so on
    CUDA they run in bf16 where the card has it."""
    if device.type == "cpu" or dtype == torch.float32:
        return torch.float32
    if dtype == torch.float16 and descriptor.supports_half:
        return torch.float16
    if device.type == "cuda" and descriptor.supports_bfloat16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def find_face_model_files(models_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of the model files in the face-restoration folders, hidden files and facexlib's helper
    networks left out. A stem found more than once is named by its path under ``models_dir``."""
    root = Path(models_dir)
    paths: list[Path] = []
    seen: set[tuple[int, int]] = set()  # (device, inode): "Codeformer" and "CodeFormer" may be one folder
    for folder in FACE_FOLDERS:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(base).parts) or not path.is_file():
                continue
            if path.suffix.lower() not in SAFE_SUFFIXES + PICKLE_SUFFIXES or path.stem.startswith(HELPER_PREFIXES):
                continue
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                paths.append(path)
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem.casefold()] = stems.get(path.stem.casefold(), 0) + 1
    return [(path.relative_to(root).as_posix() if stems[path.stem.casefold()] > 1 else path.stem, path)
            for path in paths]


def read_state_dict(path: Path, *, allow_pickle: bool) -> dict[str, Any]:
    """A face-restoration file's tensors on the CPU, unwrapped as spandrel does ("params_ema"...), or FaceRestoreError."""
    try:
        state = read_weights(path, allow_pickle=allow_pickle)
    except WeightFileError as exc:
        raise FaceRestoreError(str(exc)) from exc
    return import_spandrel().canonicalize_state_dict(state)

def identify_face_model(state: dict[str, Any], file_name: str) -> str:
    """The face-restoration architecture spandrel sees in ``state`` (only its tensor names are looked at,
    the network is not built). Raises FaceRestoreError naming the file when it is something else."""
    spandrel = import_spandrel()
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        if support.detect(state):
            architecture = str(support.architecture.id)
            if architecture not in FACE_ARCHITECTURES:
                raise FaceRestoreError(
                    f"{file_name} is a {support.architecture.name} model, not a face restorer "
                    f"({', '.join(FACE_ARCHITECTURES)}); upscalers go in models/ESRGAN.")
            return architecture
    raise FaceRestoreError(
        f"{file_name} is not a model spandrel recognises: its {len(state)} tensors match none of the face "
        f"restoration architectures ({', '.join(FACE_ARCHITECTURES)}).")


def load_face_model(path: Path, *, allow_pickle: bool) -> Any:
    """The restorer in ``path`` as a spandrel ``ImageModelDescriptor`` on the CPU in fp32."""
    path = Path(path)
    state = read_state_dict(path, allow_pickle=allow_pickle)
    architecture = identify_face_model(state, path.name)
    try:
        return import_spandrel().ModelLoader(device="cpu").load_from_state_dict(state)
    except Exception as exc:  # recognised, but the tensors do not build the network (truncated, edited)
        raise FaceRestoreError(f"{path.name} looks like a {architecture} model but its weights do not build the "
                               f"network: {type(exc).__name__}: {first_line(exc)}.") from exc


def _version_key(path: Path) -> tuple[Path, int, int]:
    stat = Path(path).stat()
    return (Path(path), stat.st_mtime_ns, stat.st_size)

