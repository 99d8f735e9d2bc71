"""Reads a shapes picture back: which shape, which colour, which background (measured features).

The background is the commonest palette colour of the border, measured at its actual tone there.
The shape is the largest connected region far from that tone: a generated picture's small stray
specks and soft edges are left out. Its colour is the palette colour nearest the median of the
region's inner pixels (not its edge, where colours blend). A region with at least four notches
(pockets between its outline and its convex hull) is a star: a five-pointed star has five, the other
shapes none, and a generated star with a blunt or tilted arm still keeps most of them. Three notches
make a star only when the outline is five-lobed too: its distance from the centre swings mostly five
times around it (a generated star with two blunt arms), where a triangle's swings three times, a
square's four and a lopsided blob's once or twice. Otherwise its
kind is the convex shape whose silhouette, drawn into the region's bounding box, overlaps the region
best (intersection over union): the whole outline decides, so a generated square with softened
corners still reads as a square.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull

from app.demo.shapes import HELD_OUT_SHAPE, PALETTE, SHAPES

_NAMES = list(PALETTE)
_COLOURS = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    shape: str | None  # None: no shape found
    colour: str | None
    background: str
    fill: float = 0.0  # share of its bounding box the shape covers
    match: float = 0.0  # overlap (IoU) with the convex silhouette that fits best
    notches: int = 0  # pockets between the outline and its convex hull
    lobes: int = 0  # how many times the outline's distance from the centre swings, strongest (2-5)


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
    overlaps = {name: _iou(cut, silhouette(name, cut.shape[1], cut.shape[0])) for name in SHAPES}
    convex = max(overlaps, key=overlaps.get)
    pockets = notches(cut)
    swings = outline_swings(cut)
    lobed = 2 + int(np.argmax(swings[2:6]))
    star = pockets >= STAR_NOTCHES or (pockets >= STAR_NOTCHES - 1 and lobed == 5 and swings[5] >= FIVE_LOBE_SWING)
    return Reading(HELD_OUT_SHAPE if star else convex, colour, background, float(cut.mean()), overlaps[convex],
                   pockets, lobed)


STAR_NOTCHES = 4  # of a star's five: one may be filled in by a blunt arm or an arm cut by the border
FIVE_LOBE_SWING = 0.1  # a drawn star's is about 0.33 of its mean radius; a circle's swings are noise


def outline_swings(region: np.ndarray, bins: int = 72) -> np.ndarray:
    """How strongly the outline's distance from the region's centre swings k times around it, for k =
    0..bins/2, as a share of the mean distance (the amplitudes of its Fourier series over the angle)."""
    rows, cols = np.nonzero(region)
    edge_rows, edge_cols = np.nonzero(region & ~ndimage.binary_erosion(region))
    down, right = edge_rows - rows.mean(), edge_cols - cols.mean()
    sector = ((np.arctan2(down, right) + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    reach = np.full(bins, -1.0)
    np.maximum.at(reach, sector, np.hypot(down, right))  # the farthest edge pixel in each sector
    known = np.nonzero(reach >= 0)[0]
    reach = np.interp(np.arange(bins), known, reach[known], period=bins)  # a sector without an edge pixel
    return np.abs(np.fft.rfft(reach)) * 2 / bins / reach.mean()


def notches(region: np.ndarray, share: float = 0.015) -> int:
    """The pockets between ``region`` and its convex hull that cover at least ``share`` of the hull
    (after an opening, so the one-pixel slivers of a drawn edge don't count)."""
    rows, cols = np.nonzero(region)
    corners = np.concatenate([np.stack([cols + dx, rows + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    hull = Image.new("L", (region.shape[1] + 1, region.shape[0] + 1), 0)
    ImageDraw.Draw(hull).polygon([tuple(corners[v] - 0.5) for v in ConvexHull(corners).vertices], fill=255)
    inside = (np.asarray(hull) > 0)[:region.shape[0], :region.shape[1]]
    gaps = ndimage.binary_opening(inside & ~region)
    labels, count = ndimage.label(gaps)
    if count == 0:
        return 0
    areas = ndimage.sum(gaps, labels, index=range(1, count + 1))
    return int((areas >= share * inside.sum()).sum())


def silhouette(shape: str, width: int, height: int) -> np.ndarray:
    """The shape as the generator draws it, stretched to fill a ``width`` x ``height`` box."""
    image = Image.new("L", (width, height), 0)
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse((0, 0, width - 1, height - 1), fill=255)
    else:
        corners = {"square": [(-1, -1), (1, -1), (1, 1), (-1, 1)], "triangle": [(0, -1), (1, 1), (-1, 1)]}[shape]
        points = np.array(corners, dtype=float)
        low, high = points.min(axis=0), points.max(axis=0)
        pen.polygon([tuple(p) for p in (points - low) / (high - low) * (width - 1, height - 1)], fill=255)
    return np.asarray(image) > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
