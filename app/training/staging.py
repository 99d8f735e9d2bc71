"""Uploaded training files (images, captions, zips) copied into a dataset folder under outputs/.

Only image and caption files are kept; paths inside a zip stay relative (``N_name`` folders keep
their meaning) and may not climb out of the folder. The user's own folders are never written to.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath

from app.training.config import NAME
from app.training.dataset import IMAGE_SUFFIXES

KEEP_SUFFIXES = (*IMAGE_SUFFIXES, ".txt")
MAX_ZIP_BYTES = 4 * 2**30  # uncompressed; a bigger archive is refused before anything is written


def staging_root(outputs_dir: Path) -> Path:
    """Where uploaded datasets are copied: ``outputs/training/datasets``."""
    return Path(outputs_dir) / "training" / "datasets"


def staging_folder(outputs_dir: Path, name: str) -> Path:
    """The staging folder of one upload, named after the LoRA; a name that could leave the staging
    root (a path, ``..``) is refused, since the folder is emptied before the copy."""
    name = name or "dataset"
    if not NAME.match(name) or ".." in name:
        raise ValueError(f"Name {name!r}: use letters, digits, spaces, '-', '_' or '.'.")
    return staging_root(outputs_dir) / name


def stage_uploads(files: list[Path], target: Path) -> list[str]:
    """Copy ``files`` (and the members of zips among them) into ``target``; return what was ignored."""
    target.mkdir(parents=True, exist_ok=True)
    ignored: list[str] = []
    for file in map(Path, files):
        if file.suffix.lower() == ".zip":
            ignored += _extract(file, target)
        elif file.suffix.lower() in KEEP_SUFFIXES:
            shutil.copyfile(file, target / _safe_name(file.name))
        else:
            ignored.append(f"{file.name}: not an image or caption file")
    return ignored


def _extract(archive: Path, target: Path) -> list[str]:
    ignored: list[str] = []
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise ValueError(f"{archive.name} unpacks to more than {MAX_ZIP_BYTES // 2**30} GB.")
            for member in members:
                relative = PurePosixPath(member.filename)
                if relative.is_absolute() or ".." in relative.parts or relative.suffix.lower() not in KEEP_SUFFIXES:
                    ignored.append(f"{archive.name}/{member.filename}: skipped")
                    continue
                if any(part.startswith(".") or part == "__MACOSX" for part in relative.parts):
                    continue
                destination = target.joinpath(*[_safe_name(part) for part in relative.parts])
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{archive.name} is not a readable zip file: {exc}") from exc
    return ignored


def _safe_name(name: str) -> str:
    cleaned = "".join(c for c in name if c not in '<>:"\\|?*\0').strip()
    if cleaned in ("", ".", ".."):
        raise ValueError(f"Unusable file name {name!r}.")
    return cleaned
