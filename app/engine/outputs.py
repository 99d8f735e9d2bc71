"""Saving generated images under ``outputs/`` the way A1111 lays them out.

``outputs/<task>-images/<YYYY-MM-DD>/<NNNNN>-<seed>.png`` with the infotext in the PNG's
``parameters`` text chunk. Files are written to a temporary name in the same folder and renamed,
so a reader never sees a half-written image and a crash leaves no partial file. The temporary name
(``.saving-*.tmp``) is hidden and matches neither ``*.png`` nor the numbering, so a process killed
mid-write leaves at most such a file, which nothing lists.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import re
import tempfile
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

_NUMBERED = re.compile(r"^(\d{5,})-")
TEMP_PREFIX, TEMP_SUFFIX = ".saving-", ".tmp"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no EDQUOT on Windows


class ImageNotSaved(ValueError):
    """An image the job could not write (disk full, no permission), with a message for the person
    who ran it. A ValueError so the worker fails the job with this message as it is."""


def not_saved(exc: OSError, folder: Path) -> ImageNotSaved:
    """The job error of a failed save: a full disk is named as such. The folder is given relative
    to outputs/ (``txt2img-images/<day>``), not as a path on the server."""
    where = f"{folder.parent.name}/{folder.name}"
    if exc.errno in _DISK_FULL:
        return ImageNotSaved(f"The disk is full: no space left to save the image in {where} under the outputs "
                             f"folder. Nothing partial was kept; free some space and run the job again.")
    return ImageNotSaved(f"Could not save the image in {where} under the outputs folder: {exc.strerror or exc}.")


def output_folder(outputs_dir: Path, task: str, today: _dt.date | None = None) -> Path:
    """The folder of today's images for a task, e.g. ``outputs/txt2img-images/2026-11-25``."""
    day = (today or _dt.date.today()).isoformat()
    return Path(outputs_dir) / f"{task}-images" / day


def next_image_number(folder: Path) -> int:
    """One more than the highest ``NNNNN-`` prefix in the folder (A1111 numbering)."""
    if not folder.is_dir():
        return 0
    numbers = [int(m.group(1)) for name in os.listdir(folder) if (m := _NUMBERED.match(name))]
    return max(numbers, default=-1) + 1


def png_with_parameters(image: Image.Image, parameters: str) -> PngInfo:
    info = PngInfo()
    info.add_text("parameters", parameters)
    return info


def save_image(image: Image.Image, folder: Path, seed: int, parameters: str) -> Path:
    """Write ``image`` atomically as the next numbered PNG in ``folder``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{next_image_number(folder):05d}-{seed}.png"
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG", pnginfo=png_with_parameters(image, parameters))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_parameters(path_or_image: Path | str | Image.Image) -> str | None:
    """The A1111 ``parameters`` text of a PNG, or None when it has none."""
    if isinstance(path_or_image, Image.Image):
        return path_or_image.info.get("parameters")
    with Image.open(path_or_image) as image:
        return image.info.get("parameters")
