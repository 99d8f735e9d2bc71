"""The upscalers every front end uses (Extras tab, extras API, hires fix, SD upscale): the built-in ones
(None, Lanczos, Nearest: ``resize``) and the model files (ESRGAN, SwinIR...: ``upscale_models``).

A model upscales the way A1111's do: the model runs at its native scale, again on its own result
while the picture is still smaller than the target (at most ``MAX_PASSES`` times; a 4x model makes
16x in two passes), then Lanczos brings the picture to the exact target size (cropping as
``resize.upscale`` does). A 1x (restoration) model runs once. Target sizes are ``resize.target_size``'s.

The last ``max_loaded`` models used stay on the device (least recently used dropped first);
``unload`` drops them all.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from app.engine.config import EngineConfig
from app.engine.resize import BUILTIN_UPSCALERS, max_pixels, resize_to, target_size, working_copy
from app.engine.tiled_upscale import DEFAULT_OVERLAP, DEFAULT_TILE, Progress, check_tiling, count_tiles, upscale_tiled
from app.engine.upscale_models import (UpscalerFacts, UpscalerFile, UpscalerFileError, find_upscaler_files,
                                       load_descriptor)

BUILTIN_SCALE = 4.0  # the scale A1111 reports for its built-in upscalers
MAX_PASSES = 3  # model runs for one upscale, as A1111


@dataclass(frozen=True)
class UpscalerInfo:
    """One upscaler as the pickers and /sdapi/v1/upscalers list it."""

    name: str
    scale: float | None  # a model's native scale (None when its file cannot be read); BUILTIN_SCALE for built-ins
    architecture: str | None = None  # "ESRGAN", "SwinIR"... (None for built-ins and unreadable files)
    path: Path | None = None  # None for built-ins
    error: str | None = None  # why the file cannot be used
    purpose: str | None = None  # "SR", or "Restoration" for 1x models

    @property
    def builtin(self) -> bool:
        return self.path is None

    @property
    def usable(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        """What a picker shows: "RealESRGAN_x4plus (ESRGAN 4x)"; built-ins by name alone."""
        if self.builtin:
            return self.name
        if self.error is not None:
            return f"{self.name} (not usable)"
        return f"{self.name} ({self.architecture} {self.scale:g}x)"


@dataclass(frozen=True)
class _Plan:
    """How one upscaler makes one result: the model (None for built-ins), the size of the picture each pass
    starts from, and the tiles of all passes together."""

    info: UpscalerInfo
    result: tuple[int, int]
    crop: bool  # cut the result's overhang (a target size with "crop to fit")
    descriptor: Any = None
    passes: tuple[tuple[int, int], ...] = ()
    tile: int | None = None
    overlap: int = 0
    tiles: int = 0


class UpscalerLibrary:
    """Lists, loads and runs upscalers; the engine's ModelManager owns one (``manager.upscalers``)."""

    def __init__(self, models_dir: Path, *, allow_pickle: bool = False, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, max_loaded: int = 2) -> None:
        self.models_dir = Path(models_dir)
        self.allow_pickle = allow_pickle
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_loaded = max(1, max_loaded)
        self._facts = UpscalerFacts(allow_pickle=allow_pickle)
        self._loaded: OrderedDict[tuple[Path, int, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EngineConfig) -> UpscalerLibrary:
        return cls(config.models_dir, allow_pickle=config.allow_pickle, device=config.resolved_device(),
                   dtype=config.resolved_dtype())

    # ----- listing -------------------------------------------------------------------------
    def available(self) -> list[UpscalerInfo]:
        """The built-in upscalers, then every model file in the upscaler folders (unusable ones with their
        ``error``). Each file is read once per version; later listings only look at the folders."""
        builtins = [UpscalerInfo(name, BUILTIN_SCALE) for name in BUILTIN_UPSCALERS]
        return builtins + [self._describe(file) for file in find_upscaler_files(self.models_dir)]

    def canonical(self, name: str) -> str:
        """The upscaler called ``name`` (case does not matter; a model also by its file name). Raises ValueError
        listing the usable names for an unknown name, and UpscalerFileError (a ValueError) with the file's
        problem for a model that cannot be used."""
        return self.find(name).name

    def find(self, name: str) -> UpscalerInfo:
        """The UpscalerInfo of ``name``; raises as ``canonical`` does. Only the file named is read."""
        if isinstance(name, str):
            wanted = name.strip().casefold()
            for known in BUILTIN_UPSCALERS:
                if wanted == known.casefold():
                    return UpscalerInfo(known, BUILTIN_SCALE)
            files = find_upscaler_files(self.models_dir)
            matches = ([file for file in files if file.name.casefold() == wanted]
                       or [file for file in files if file.path.name.casefold() == wanted])
            if len(matches) == 1:
                info = self._describe(matches[0])
                if info.error is not None:
                    raise UpscalerFileError(info.error)
                return info
        usable = ", ".join(info.name for info in self.available() if info.usable)
        raise ValueError(f"Unknown upscaler {name!r}; available: {usable}.")

    def _describe(self, file: UpscalerFile) -> UpscalerInfo:
        facts = self._facts.get(file.path)
        return UpscalerInfo(file.name, float(facts.scale) if facts.scale else None, facts.architecture, file.path,
                            facts.error, facts.purpose)

    # ----- upscaling -----------------------------------------------------------------------
    def upscale(self, image: Image.Image, name: str, *, scale: float | None = None,
                size: tuple[int, int] | None = None, crop: bool = False, progress: Progress | None = None,
                tile: int | None = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> Image.Image:
        """``image`` resized by ``scale`` or to ``size`` with the upscaler ``name``; RGB, or RGBA when the input has
        transparency. ``progress(done, total)`` is called after each model tile (never for built-ins); raise from
        it to stop between tiles. ``tile`` None or 0 runs a model on the whole picture at once. Raises ValueError
        for an unknown or unusable upscaler, a bad scale, size or tiling, or a result over the limits."""
        plan = self._plan(image.size, name, scale=scale, size=size, crop=crop, tile=tile, overlap=overlap)
        return self._execute(plan, image, progress, 0, plan.tiles)

    def blend(self, image: Image.Image, first: str, second: str = "None", visibility: float = 0.0, *,
              scale: float | None = None, size: tuple[int, int] | None = None, crop: bool = False,
              progress: Progress | None = None, tile: int | None = DEFAULT_TILE,
              overlap: int = DEFAULT_OVERLAP) -> Image.Image:
        """A1111's extras upscale, as ``resize.blend_upscalers`` with model upscalers too: ``image`` through
        ``first``, mixed with ``second`` at ``visibility`` (0: first only, 1: second only). A ``first`` of "None"
        leaves the picture as it is (a copy); a ``second`` of "None" or a visibility of 0 adds nothing. The
        progress counts the tiles of both upscalers together."""
        first_info, second_info = self.find(first), self.find(second)
        if not isinstance(visibility, (int, float)) or not 0.0 <= visibility <= 1.0:
            raise ValueError(f"The second upscaler's visibility must be between 0 and 1, not {visibility!r}.")
        if first_info.name == "None":
            return working_copy(image)
        options = dict(scale=scale, size=size, crop=crop, tile=tile, overlap=overlap)
        plans = [self._plan(image.size, first_info.name, **options)]
        if second_info.name != "None" and visibility > 0:
            plans.append(self._plan(image.size, second_info.name, **options))
        total = sum(plan.tiles for plan in plans)
        upscaled = self._execute(plans[0], image, progress, 0, total)
        if len(plans) == 1:
            return upscaled
        other = self._execute(plans[1], image, progress, plans[0].tiles, total)
        return Image.blend(upscaled, other, float(visibility))

    # ----- loaded models -------------------------------------------------------------------
    def loaded(self) -> list[Path]:
        """The files of the models on the device, least recently used first."""
        with self._lock:
            return [key[0] for key in self._loaded]

    def unload(self) -> None:
        """Drop every loaded model (their device memory is freed)."""
        with self._lock:
            self._loaded.clear()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def model(self, info: UpscalerInfo) -> Any:
        """The spandrel descriptor of a model upscaler, on the device and in eval mode (loaded once, kept
        among the last ``max_loaded`` used)."""
        assert info.path is not None
        try:
            stat = info.path.stat()
        except OSError as exc:
            raise UpscalerFileError(f"{info.path.name} cannot be read: {exc}") from exc
        key = (info.path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            descriptor = load_descriptor(info.path, allow_pickle=self.allow_pickle)
            self._facts.remember(info.path, descriptor)
            descriptor.to(device=self.device, dtype=self._run_dtype(descriptor)).eval()
            while len(self._loaded) >= self.max_loaded:
                self._loaded.popitem(last=False)
            self._loaded[key] = descriptor
            return descriptor

    def _run_dtype(self, descriptor: Any) -> torch.dtype:
        """Half precision where the engine runs in it on a GPU and the model supports it; fp32 otherwise
        (and always on the CPU, where half-precision convolutions are slow or missing)."""
        if self.device.type == "cpu":
            return torch.float32
        if self.dtype == torch.float16 and descriptor.supports_half:
            return torch.float16
        if self.dtype == torch.bfloat16 and descriptor.supports_bfloat16:
            return torch.bfloat16
        return torch.float32

    # ----- planning and running ------------------------------------------------------------
    def _plan(self, source: tuple[int, int], name: str, *, scale: float | None, size: tuple[int, int] | None,
              crop: bool, tile: int | None, overlap: int) -> _Plan:
        """Check everything and load the model before any work: the passes a model makes and their tiles."""
        info = self.find(name)
        result = target_size(source, scale=scale, size=size, crop=crop)
        cropping = size is not None and crop
        if info.builtin:
            return _Plan(info, result, cropping)
        check_tiling(tile, overlap)
        descriptor = self.model(info)
        passes = model_passes(source, result, int(descriptor.scale))
        for start in passes:
            made = (start[0] * descriptor.scale, start[1] * descriptor.scale)
            if made[0] * made[1] > max_pixels():
                raise ValueError(
                    f"{info.name} ({descriptor.scale}x) would have to make a {made[0]}x{made[1]} picture on the way "
                    f"to {result[0]}x{result[1]}; LoRA Studio makes pictures up to {max_pixels():,} pixels. Choose "
                    "a smaller size, a model with a smaller scale, or Lanczos.")
        tiles = sum(count_tiles(start, tile, overlap, descriptor.size_requirements) for start in passes)
        return _Plan(info, result, cropping, descriptor, tuple(passes), tile, overlap, tiles)

    def _execute(self, plan: _Plan, image: Image.Image, progress: Progress | None, done_before: int,
                 total: int) -> Image.Image:
        """Carry out ``plan``, reporting its tiles as ``done_before + n`` of ``total``."""
        picture = working_copy(image)
        if plan.info.builtin:  # what resize.upscale does once the size is known
            return resize_to(picture, plan.result, plan.info.name, crop=plan.crop)
        for start in plan.passes:
            assert picture.size == start

            def report(done: int, _pass_total: int, before: int = done_before) -> None:
                if progress is not None:
                    progress(before + done, total)

            picture = upscale_tiled(plan.descriptor, picture, tile=plan.tile, overlap=plan.overlap, progress=report)
            done_before += count_tiles(start, plan.tile, plan.overlap, plan.descriptor.size_requirements)
        if picture.size == plan.result and not plan.crop:
            return picture
        return resize_to(picture, plan.result, "Lanczos", crop=plan.crop)


def model_passes(source: tuple[int, int], result: tuple[int, int], scale: int) -> list[tuple[int, int]]:
    """The size of the picture each run of a ``scale``x model starts from, A1111's way: run while the picture
    does not cover ``result`` (at least once when the result keeps the source's size, so a 1x model still
    restores), at most MAX_PASSES times, and once only for a 1x model."""
    passes: list[tuple[int, int]] = []
    current = source
    while len(passes) < MAX_PASSES:
        covers = current[0] >= result[0] and current[1] >= result[1]
        same_size_first_run = not passes and result == source
        if covers and not same_size_first_run:
            break
        passes.append(current)
        if scale <= 1:
            break
        current = (current[0] * scale, current[1] * scale)
    return passes
