"""spandrel, the library that reads upscaler and face-restorer files (ESRGAN, SwinIR, GFPGAN, CodeFormer...)
and builds their networks, imported on first use: it is large, and generation never needs it."""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def import_spandrel() -> ModuleType:
    """spandrel, with the architectures of ``spandrel_extra_arches`` (CodeFormer...) added to its registry
    where that package is installed. Raises ImportError saying what to install when spandrel is missing."""
    try:
        import spandrel
    except ImportError as exc:  # torchvision's own import errors are RuntimeErrors and pass through
        raise ImportError(f"Model upscalers and face restorers need spandrel ({exc}); install the project "
                          "again with: pip install -e .") from exc
    try:
        import spandrel_extra_arches
    except ImportError:
        return spandrel
    spandrel_extra_arches.install(ignore_duplicates=True)
    return spandrel
