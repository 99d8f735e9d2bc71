"""Make ``import torchvision`` work where its compiled operators cannot load (the CPU torch wheel).

PyPI's torchvision wheels are CUDA builds. With the CPU torch wheel that LoRA Studio installs on
machines without a GPU, ``torchvision/_C.so`` cannot load (it links torch's CUDA libraries), and
``import torchvision`` then fails with "operator torchvision::nms does not exist": torchvision
registers shape functions for its ``nms`` and ``qnms`` operators without checking that they were
loaded (for every other operator it checks). transformers imports torchvision whenever it is
installed, and spandrel (model upscalers, face restorers) needs it.

``make_torchvision_importable`` runs when the ``app`` package is imported, before anything imports
torchvision. Where torchvision's operators load (any CUDA torch, or a CPU torchvision) it only loads
them. Where they cannot, it declares the schemas of those two operators, with no kernel, so that
torchvision's Python modules import. Nothing LoRA Studio runs calls torchvision's compiled operators
(spandrel uses its pure-Python transforms); a call to one would fail with "no kernel".
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_UNGUARDED_OPERATORS = (  # torchvision/_meta_registrations.py registers these without checking _has_ops()
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


@functools.cache
def make_torchvision_importable() -> Any:
    """Load torchvision's compiled operators, or declare the two its import needs. Returns the
    ``torch.library.Library`` holding the declarations, or None when none were needed or possible (no
    torch, no torchvision, torchvision already imported). The cache keeps that library alive: a dropped
    ``Library`` unregisters its operators."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torch") is None:
        return None
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return None
    import torch

    folder = Path(spec.origin).parent
    for path in sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd")):
        try:
            torch.ops.load_library(str(path))
            return None
        except OSError as exc:
            log.debug("torchvision's operators do not load with torch %s (%s)", torch.__version__,
                      str(exc).splitlines()[0][:200])
    library = torch.library.Library("torchvision", "DEF")
    for schema in _UNGUARDED_OPERATORS:
        library.define(schema)
    return library
