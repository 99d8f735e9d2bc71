"""Files a killed training run must not leave half-written under their real name (caches, the
checkpoint's ``progress.json``): each is written to a hidden temporary name and renamed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_PREFIX = ".partial-"


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` with a temporary path beside ``path``, then rename that file to ``path``.

    A process killed meanwhile leaves at most a ``.partial-*`` file that nothing reads; the real
    name holds the old file, or none, until the new one is complete.
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temp))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
