"""Saving generated images under ``outputs/`` the way A1111 lays them out.

``outputs/<task>-images/<YYYY-MM-DD>/<NNNNN>-<seed>.png`` with the infotext in the PNG's
``parameters`` text chunk; with logins, each user's under their own folder,
``outputs/<user>/<task>-images/...`` (``user_folder`` says which names make a folder). Files are
written to a temporary name in the same folder and renamed, so a reader never sees a half-written
image and a crash leaves no partial file. The temporary name (``.saving-*.tmp``) is hidden and
matches neither ``*.png`` nor the numbering, so a process killed mid-write leaves at most such a
file, which nothing lists.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

_NUMBERED = re.compile(r"^(\d{5,})[-.]")
TEMP_PREFIX, TEMP_SUFFIX = ".saving-", ".tmp"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no EDQUOT on Windows

# A user's folder is named as the user: ASCII letters and digits, then also ``. _ @ + -``, at most 64 in all,
# not ending with a dot. No separator, no ``..``, no hidden name, the same on Linux, macOS and Windows.
_USER_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
# Names outputs/ already uses beside the users' folders (training runs, the demo's evaluation, the
# audit log, the pictures saved without logins), and names Windows gives to devices.
_TAKEN = re.compile(r"(training|demo-eval|audit\.log.*|.*-images)", re.IGNORECASE)
_WINDOWS_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)


def user_folder(user: str) -> str:
    """The folder name of ``user`` under outputs/: the name itself, or ValueError when it cannot be one
    (a path separator, ``..``, a character outside the safe set, a name outputs/ already uses)."""
    if not isinstance(user, str) or not _USER_FOLDER.fullmatch(user) or user.endswith("."):
        raise ValueError(f"The user name {user!r} cannot name a folder under outputs/: use 1 to 64 ASCII letters, "
                         "digits and . _ @ + - (starting with a letter or digit, not ending with a dot).")
    if _TAKEN.fullmatch(user) or _WINDOWS_DEVICES.fullmatch(user):
        raise ValueError(f"The user name {user!r} is taken under outputs/ (training runs, the audit log, the "
                         "shared picture folders, or a Windows device name): choose another name.")
    return user


def user_folders(users: Iterable[str]) -> dict[str, str]:
    """Each user's folder name (``user_folder``); ValueError also for two names that differ only in case,
    which would share one folder on macOS and Windows."""
    folders: dict[str, str] = {}
    seen: dict[str, str] = {}
    for user in users:
        folder = folders[user] = user_folder(user)
        other = seen.setdefault(folder.casefold(), user)
        if other != user:
            raise ValueError(f"The user names {other!r} and {user!r} differ only in case; each user needs a "
                             "folder of their own under outputs/, so rename one of them.")
    return folders


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


def output_folder(outputs_dir: Path, task: str, today: _dt.date | None = None, user: str | None = None) -> Path:
    """The folder of today's images for a task, e.g. ``outputs/txt2img-images/2026-11-25``; with a ``user``,
    ``outputs/<user>/txt2img-images/2026-11-25`` (ValueError for a name ``user_folder`` refuses)."""
    day = (today or _dt.date.today()).isoformat()
    root = Path(outputs_dir) if user is None else Path(outputs_dir) / user_folder(user)
    return root / f"{task}-images" / day


def next_image_number(folder: Path) -> int:
    """One more than the highest ``NNNNN-`` prefix in the folder (A1111 numbering)."""
    if not folder.is_dir():
        return 0
    numbers = [int(m.group(1)) for name in os.listdir(folder) if (m := _NUMBERED.match(name))]
    return max(numbers, default=-1) + 1


def png_with_parameters(image: Image.Image, parameters: str | None, postprocessing: str | None = None) -> PngInfo:
    """The PNG text chunks A1111 writes: ``parameters`` (how the picture was made) and, after the Extras,
    ``postprocessing`` (what they did to it)."""
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    if postprocessing:
        info.add_text("postprocessing", postprocessing)
    return info


def save_image(image: Image.Image, folder: Path, seed: int, parameters: str) -> Path:
    """Write ``image`` atomically as the next numbered PNG in ``folder``; return its path."""
    return _save_numbered(image, folder, f"-{seed}", png_with_parameters(image, parameters))


def save_postprocessed(image: Image.Image, folder: Path, parameters: str | None, postprocessing: str) -> Path:
    """Write an Extras result atomically as the next numbered PNG (``NNNNN.png``, as A1111's extras-images),
    keeping the source's ``parameters`` and adding what the Extras did; return its path."""
    return _save_numbered(image, folder, "", png_with_parameters(image, parameters, postprocessing))


def _save_numbered(image: Image.Image, folder: Path, suffix: str, texts: PngInfo) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{next_image_number(folder):05d}{suffix}.png"
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG", pnginfo=texts)
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
