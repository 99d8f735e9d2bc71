"""A1111's "Tiling": seamless pictures from circular padding in every convolution of the UNet and VAE.

With circular padding the model works on a torus, so the picture's right edge continues its left
edge and its bottom its top. The padding mode is set for one job and put back afterwards (as LoRA
weights are), so other jobs are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def circular_padding(*models: torch.nn.Module) -> Iterator[None]:
    """Every Conv2d of ``models`` pads circularly inside the ``with`` block."""
    convs = [layer for model in models for layer in model.modules() if isinstance(layer, torch.nn.Conv2d)]
    saved = [layer.padding_mode for layer in convs]
    for layer in convs:
        layer.padding_mode = "circular"
    try:
        yield
    finally:
        for layer, mode in zip(convs, saved):
            layer.padding_mode = mode
