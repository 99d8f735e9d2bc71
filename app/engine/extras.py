"""A1111's Extras: upscale a finished picture and restore its faces, for the Extras tab and the extras API.

The steps, in A1111's order: face restoration (GFPGAN at its visibility, then CodeFormer at its
visibility and weight), then the upscale (the first upscaler, the second one blended over it at its
visibility); ``upscale_first`` puts the upscale before the faces. Each step that is off (a visibility
of 0, a first upscaler "None") leaves the picture as it is and writes nothing. The facts written are
A1111's "Postprocess ..." and face restoration keys, so PNG info shows what was done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from app.engine.jobs import JobContext, JobResult
from app.engine.outputs import output_folder, save_postprocessed

ProgressCallback = Callable[[int, int], None]

# A1111's two face sliders, and the architectures each runs, first installed first: RestoreFormer comes from
# GFPGAN's authors and is run by GFPGAN's slider where no GFPGAN file is installed.
FACE_SLIDERS: dict[str, tuple[str, ...]] = {"GFPGAN": ("GFPGAN", "RestoreFormer"), "CodeFormer": ("CodeFormer",)}


@dataclass(frozen=True)
class ExtrasSettings:
    """A1111's extras fields, by their API names. ``resize_mode`` 0: by ``upscaling_resize``; 1: to
    ``upscaling_resize_w`` x ``upscaling_resize_h`` (``upscaling_crop``: cut the overhang)."""

    resize_mode: int = 0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscale_first: bool = False

    @property
    def by_factor(self) -> bool:
        return self.resize_mode == 0

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.by_factor else (int(self.upscaling_resize_w), int(self.upscaling_resize_h))

    @property
    def crop(self) -> bool:
        return bool(self.upscaling_crop) and not self.by_factor

    def face_steps(self) -> list[tuple[str, float]]:
        """(restorer, visibility) of each face restoration that is on, in A1111's order."""
        steps = [("GFPGAN", self.gfpgan_visibility), ("CodeFormer", self.codeformer_visibility)]
        return [(name, float(visibility)) for name, visibility in steps if visibility > 0]


def check_extras(settings: ExtrasSettings, upscalers: Any, face_restorers: Any) -> None:
    """Raise ValueError (naming the field) for an unknown upscaler, a bad visibility, or a face
    restoration asked for with no such model installed; before any picture is decoded."""
    for field in ("upscaler_1", "upscaler_2"):
        try:
            upscalers.canonical(getattr(settings, field))
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None
    for field in ("extras_upscaler_2_visibility", "gfpgan_visibility", "codeformer_visibility", "codeformer_weight"):
        value = getattr(settings, field)
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{field} must be between 0 and 1, not {value!r}.")
    for slider, _ in settings.face_steps():
        try:
            restorer_for(face_restorers, slider)
        except ValueError as exc:
            raise ValueError(f"{slider.lower()}_visibility: {exc}") from None


def restorer_for(face_restorers: Any, wanted: str | None) -> str:
    """The name of the installed face model to run for ``wanted``: one of A1111's sliders ("GFPGAN",
    "CodeFormer"), a file's name or an architecture; None or "" takes the first usable one. Raises ValueError
    saying what is installed (or that nothing is, and where to put a file)."""
    candidates = FACE_SLIDERS.get(wanted or "", (wanted,) if wanted else ())
    for candidate in candidates:
        try:
            return face_restorers.find(candidate).name
        except ValueError:
            continue
    usable = [item for item in face_restorers.available() if item.error is None]
    if not candidates and usable:
        return usable[0].name
    if not usable:
        face_restorers.find(wanted or "GFPGAN")  # raises the library's "nothing installed" message
    installed = ", ".join(f"{item.name} ({item.architecture})" for item in usable)
    raise ValueError(f"No {' or '.join(candidates)} face model is installed; installed: {installed}.")


def run_extras(picture: Image.Image, settings: ExtrasSettings, upscalers: Any, face_restorers: Any,
               progress: ProgressCallback | None = None) -> tuple[Image.Image, dict[str, str]]:
    """(the processed picture, A1111's facts of what was done). ``upscalers``: the manager's
    UpscalerLibrary; ``face_restorers``: its FaceRestorerLibrary; ``progress``: called per upscaler tile
    (the caller raises JobCancelled from it to stop). Raises ValueError for bad settings."""
    info: dict[str, str] = {}
    steps: list[Callable[[Image.Image], Image.Image]] = [
        lambda image: _restore_faces(image, settings, face_restorers, info),
        lambda image: _upscale(image, settings, upscalers, info, progress),
    ]
    if settings.upscale_first:
        steps.reverse()
    for step in steps:
        picture = step(picture)
    return picture, info


def _upscale(picture: Image.Image, settings: ExtrasSettings, upscalers: Any, info: dict[str, str],
             progress: ProgressCallback | None) -> Image.Image:
    first, second = upscalers.canonical(settings.upscaler_1), upscalers.canonical(settings.upscaler_2)
    if first == "None":
        return picture
    result = upscalers.blend(picture, first, second, settings.extras_upscaler_2_visibility,
                             scale=settings.upscaling_resize if settings.by_factor else None, size=settings.size,
                             crop=settings.crop, progress=progress)
    if settings.by_factor:
        info["Postprocess upscale by"] = f"{settings.upscaling_resize:g}"
    else:
        width, height = settings.size or result.size
        info["Postprocess upscale to"] = f"{width}x{height}"
        if settings.crop:
            info["Postprocess crop to"] = f"{result.width}x{result.height}"
    info["Postprocess upscaler"] = first
    if second != "None" and settings.extras_upscaler_2_visibility > 0:
        info["Postprocess upscaler 2"] = second
    return result


def _restore_faces(picture: Image.Image, settings: ExtrasSettings, face_restorers: Any,
                   info: dict[str, str]) -> Image.Image:
    for slider, visibility in settings.face_steps():
        picture, _faces = face_restorers.restore(picture, restorer_for(face_restorers, slider), visibility=visibility,
                                                 codeformer_weight=settings.codeformer_weight)
        if slider == "GFPGAN":
            info["GFPGAN visibility"] = f"{visibility:g}"
        else:
            info["CodeFormer visibility"] = f"{visibility:g}"
            info["CodeFormer weight"] = f"{settings.codeformer_weight:g}"
    return picture


def extras_job(ctx: JobContext, pictures: Iterable[Image.Image], count: int, settings: ExtrasSettings, upscalers: Any,
               face_restorers: Any, save_to: tuple[Path, str | None] | None = None) -> JobResult:
    """The Extras over ``count`` pictures as one job on the worker: one picture in memory at a time
    (``pictures`` may decode lazily), progress per upscaler tile, cancel between tiles and pictures.
    ``save_to``: (outputs folder, user or None) to save each result under ``extras-images``, keeping the
    source's ``parameters`` text; None keeps them in memory only (the API). The result's ``infotexts`` hold
    each picture's facts as A1111's "postprocessing" text, ``info["facts"]`` the last one's as a dict."""
    result = ctx.partial
    for index, picture in enumerate(pictures):
        ctx.check_cancelled()

        def tile_done(done: int, total: int, index: int = index) -> None:
            ctx.emit("sampling", step=done, total_steps=total, batch_index=index, batch_count=count,
                     message="Upscaling")
            ctx.check_cancelled()

        processed, facts = run_extras(picture, settings, upscalers, face_restorers, tile_done)
        text = ", ".join(f"{key}: {value}" for key, value in facts.items())
        parameters = picture.info.get("parameters")
        parameters = parameters if isinstance(parameters, str) else None
        if parameters is not None:
            processed.info["parameters"] = parameters
        if save_to is not None:
            ctx.emit("saving", message=f"Saving {index + 1}/{count}")
            outputs_dir, user = save_to
            result.paths.append(save_postprocessed(processed, output_folder(outputs_dir, "extras", user=user),
                                                   parameters, text))
        result.images.append(processed)
        result.infotexts.append(text)
        result.info["facts"] = facts
    return result
