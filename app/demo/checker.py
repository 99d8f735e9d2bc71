"""Reads a shapes picture back: which shape, which colour, which background (measured features).

The background is the commonest palette colour of the border, measured at its actual tone there.
The shape is the largest connected region far from that tone: a generated picture's small stray
specks and soft edges are left out. Its colour is the palette colour nearest the median of the
region's inner pixels (not its edge, where colours blend). Its kind is the shape whose silhouette,
drawn into the region's bounding box, overlaps the region best (intersection over union): the whole
outline decides, so a generated square with softened corners still reads as a square.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from app.demo.shapes import HELD_OUT_SHAPE, PALETTE, SHAPES, star_points

_NAMES = list(PALETTE)
_COLOURS = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    shape: str | None  # None: no shape found
    colour: str | None
    background: str
    fill: float = 0.0  # share of its bounding box the shape covers
    match: float = 0.0  # overlap (IoU) with the silhouette it was read as


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
    cut = region[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    overlaps = {name: _iou(cut, silhouette(name, cut.shape[1], cut.shape[0])) for name in (*SHAPES, HELD_OUT_SHAPE)}
    shape = max(overlaps, key=overlaps.get)
    return Reading(shape, colour, background, float(cut.mean()), overlaps[shape])


def silhouette(shape: str, width: int, height: int) -> np.ndarray:
    """The shape as the generator draws it, stretched to fill a ``width`` x ``height`` box."""
    image = Image.new("L", (width, height), 0)
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse((0, 0, width - 1, height - 1), fill=255)
    else:
        corners = {"square": [(-1, -1), (1, -1), (1, 1), (-1, 1)], "triangle": [(0, -1), (1, 1), (-1, 1)],
                   "star": star_points(0.0, 0.0, 1.0)}[shape]
        points = np.array(corners, dtype=float)
        low, high = points.min(axis=0), points.max(axis=0)
        pen.polygon([tuple(p) for p in (points - low) / (high - low) * (width - 1, height - 1)], fill=255)
    return np.asarray(image) > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
