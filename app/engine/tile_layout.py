"""Where overlapping tiles go along one side of a picture, and how their overlaps are blended: shared by
SD upscale (``sd_upscale``, tiles redrawn by img2img) and the upscaling models (``tiled_upscale``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def axis_starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Where tiles of ``tile`` pixels start along a side of ``length``: as few as cover it with at least
    ``overlap`` pixels shared between neighbours (A1111's count), spread evenly, the last flush with the
    end. One tile when the side is no longer than a tile."""
    if length <= tile:
        return (0,)
    if not 0 <= overlap < tile:
        raise ValueError(f"The tile overlap must be at least 0 and smaller than the tile ({tile} px), got {overlap}.")
    count = math.ceil((length - overlap) / (tile - overlap))
    return tuple(round(i * (length - tile) / (count - 1)) for i in range(count))


def axis_weights(starts: Sequence[int], tile: int) -> list[np.ndarray]:
    """Each tile's blending weight along one side: 1 inside, a linear ramp across each band it shares
    with a neighbour (up where it enters, down where it leaves), normalised so that at every pixel the
    weights of the tiles covering it sum to 1."""
    centres = np.arange(tile, dtype=np.float64) + 0.5
    raw = []
    for i, start in enumerate(starts):
        weight = np.ones(tile)
        if i > 0 and (shared := starts[i - 1] + tile - start) > 0:
            weight = np.minimum(weight, centres / shared)
        if i + 1 < len(starts) and (shared := start + tile - starts[i + 1]) > 0:
            weight = np.minimum(weight, (tile - centres) / shared)
        raw.append(weight)
    total = np.zeros(starts[-1] + tile)
    for start, weight in zip(starts, raw):
        total[start:start + tile] += weight
    return [weight / total[start:start + tile] for start, weight in zip(starts, raw)]
