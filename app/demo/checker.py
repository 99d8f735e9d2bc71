"""Reads a shapes picture back: which shape, which colour, which background (measured features).

The background is the commonest palette colour of the border, measured at its actual tone there.
The shape is the largest connected region far from that tone: a generated picture's small stray
specks and soft edges are left out. Its colour is the palette colour nearest the median of the
region's inner pixels (not its edge, where colours blend), and its kind comes from how much of its
bounding box it fills: a square about 1, a circle about pi/4, a triangle about 1/2, a star about 0.4
(its points leave the box mostly empty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from app.demo.shapes import PALETTE

_NAMES = list(PALETTE)
_COLOURS = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)
# fill ratio -> shape, boundaries halfway between the ideal ratios (star 0.33, triangle 0.5,
# circle 0.785, square 1.0); drawn stars measure 0.36-0.43, triangles 0.50-0.53
_FILL_BOUNDS = ((0.46, "star"), (0.64, "triangle"), (0.89, "circle"), (9.0, "square"))


@dataclass(frozen=True)
class Reading:
    shape: str | None  # None: no shape found
    colour: str | None
    background: str
    fill: float = 0.0


def nearest_colour(rgb: np.ndarray) -> str:
    return _NAMES[int(np.argmin(((_COLOURS - rgb.astype(np.float32)) ** 2).sum(axis=1)))]


def read_picture(image: Image.Image, min_pixels: int = 12) -> Reading:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    labels = [nearest_colour(p) for p in border]
    background = max(set(labels), key=labels.count)
    tone = np.median(border[[label == background for label in labels]], axis=0)
    far = np.sqrt(((pixels - tone) ** 2).sum(axis=2)) > 60
    regions, count = ndimage.label(far)
    if count == 0:
        return Reading(None, None, background)
    sizes = ndimage.sum(far, regions, index=range(1, count + 1))
    region = ndimage.binary_fill_holes(regions == 1 + int(np.argmax(sizes)))
    if region.sum() < min_pixels:
        return Reading(None, None, background)
    inner = ndimage.binary_erosion(region)
    colour = nearest_colour(np.median(pixels[inner if inner.sum() >= min_pixels else region], axis=0))
    rows, cols = np.nonzero(region)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill = float(region.sum() / box)
    shape = next(name for bound, name in _FILL_BOUNDS if fill < bound)
    return Reading(shape, colour, background, fill)
