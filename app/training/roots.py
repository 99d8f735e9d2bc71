"""The folders a person using the web UI may train from (``--dataset-roots``).

The server reads a dataset folder typed into the Train tab, so on a LAN that field could read any
folder the server process can. Folders are accepted only inside the allowed roots, after symlinks
and ``..`` are resolved. The operator's own ``python -m app.training`` command is not limited.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.training.staging import staging_root

DATASETS_FOLDER = "datasets"  # beside models/


class DatasetFolderError(ValueError):
    """A dataset folder that is missing or outside the allowed roots; the message says which roots."""


def default_dataset_roots(models_dir: Path, outputs_dir: Path) -> tuple[Path, ...]:
    """``datasets/`` beside ``models/`` and the upload staging folder ``outputs/training/datasets``."""
    return Path(models_dir).parent / DATASETS_FOLDER, staging_root(outputs_dir)


def parse_roots(text: str) -> tuple[Path, ...]:
    """The folders of a ``DIR[,DIR]`` flag value (blank entries dropped, ``~`` expanded)."""
    return tuple(Path(part.strip()).expanduser() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class DatasetRoots:
    """Allowed roots of dataset folders; ``check`` turns a folder from a person into a safe path."""

    roots: tuple[Path, ...]

    @classmethod
    def for_server(cls, models_dir: Path, outputs_dir: Path, extra: Iterable[Path] = ()) -> DatasetRoots:
        """``extra`` (the flag's folders) in place of ``datasets/``, or the defaults without it.

        The staging folder is always allowed: uploads are copied there by the server itself.
        """
        chosen = tuple(extra) or default_dataset_roots(models_dir, outputs_dir)[:1]
        staging = staging_root(outputs_dir)
        return cls(tuple(dict.fromkeys(Path(p).resolve() for p in (*chosen, staging))))

    def describe(self) -> str:
        return ", ".join(str(root) for root in self.roots)

    def check(self, folder: Path | str) -> Path:
        """The resolved folder if it is an existing folder inside a root, else DatasetFolderError.

        A relative name is taken inside the first root. Containment is judged on the fully resolved
        path (symlinks and ``..`` followed) before existence, so the answer tells nothing about
        folders outside the roots.
        """
        path = Path(folder).expanduser()
        if not path.is_absolute():
            path = self.roots[0] / path
        resolved = path.resolve()
        if not any(_inside(resolved, root.resolve()) for root in self.roots):
            raise DatasetFolderError(f"The dataset folder {folder} is outside the folders this server may train "
                                     f"from: {self.describe()}. Put the images in one of them, or upload them "
                                     f"(the server operator can add folders with --dataset-roots).")
        if not resolved.is_dir():
            raise DatasetFolderError(f"The dataset folder {folder} does not exist on the machine running "
                                     f"LoRA Studio (allowed folders: {self.describe()}).")
        return resolved


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
