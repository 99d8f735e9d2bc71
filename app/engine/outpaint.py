"""Outpainting: extend the canvas on any side, fill the new area, inpaint only it.

Pure picture geometry; ``tasks.run_generation`` runs the inpaint on the extended canvas with the mask
from ``extend_canvas`` and then ``paste_original`` puts the original pixels back exactly, so only
the new area (softly blended into the original's edge colours by the mask blur) is generated.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.engine.masks import Box

OUTPAINT_FILLS = ("stretch", "noise")  # edge colours stretched outwards, or seeded RGB noise
SIZE_MULTIPLE = 8
OVERLAP = 8  # pixels the mask reaches into the original on each extended side (one latent cell)


def extended_sides(width: int, height: int, left: int, right: int, up: int, down: int) -> tuple[int, int, int, int]:
    """(left, right, up, down) grown so that the canvas is a multiple of 8 each way: the extra pixels go to
    the right (bottom) side, or to the left (top) when only that side is extended. The original is never cropped."""
    extra_x = -(width + left + right) % SIZE_MULTIPLE
    extra_y = -(height + up + down) % SIZE_MULTIPLE
    if left and not right:
        left += extra_x
    else:
        right += extra_x
    if up and not down:
        up += extra_y
    else:
        down += extra_y
    return left, right, up, down


def extend_canvas(picture: Image.Image, left: int, right: int, up: int, down: int, fill: str = "stretch",
                  seed: int = 0) -> tuple[Image.Image, Image.Image, Box]:
    """(canvas, mask, box): the picture on a larger canvas whose new area is filled (``fill``), the mask
    white over the new area plus ``OVERLAP`` pixels into the original on each extended side, and the
    original's box on the canvas."""
    if fill not in OUTPAINT_FILLS:
        raise ValueError(f"Unknown outpaint fill {fill!r}; choose one of {', '.join(OUTPAINT_FILLS)}.")
    rgb = np.asarray(picture.convert("RGB"))
    height, width = rgb.shape[:2]
    left, right, up, down = extended_sides(width, height, left, right, up, down)
    rows = np.clip(np.arange(-up, height + down), 0, height - 1)  # each new pixel copies its nearest edge pixel
    cols = np.clip(np.arange(-left, width + right), 0, width - 1)
    canvas = rgb[rows][:, cols].copy()
    box = (left, up, left + width, up + height)
    new_area = np.ones(canvas.shape[:2], dtype=bool)
    new_area[up:up + height, left:left + width] = False
    if fill == "noise":
        noise = np.random.default_rng(seed).integers(0, 256, canvas.shape, dtype=np.uint8)
        canvas[new_area] = noise[new_area]
    mask = new_area.copy()
    reach_x, reach_y = min(OVERLAP, width // 2), min(OVERLAP, height // 2)
    if left:
        mask[up:up + height, left:left + reach_x] = True
    if right:
        mask[up:up + height, left + width - reach_x:left + width] = True
    if up:
        mask[up:up + reach_y, left:left + width] = True
    if down:
        mask[up + height - reach_y:up + height, left:left + width] = True
    return Image.fromarray(canvas), Image.fromarray((mask * 255).astype(np.uint8), mode="L"), box


def paste_original(result: Image.Image, original: Image.Image, box: Box) -> Image.Image:
    """``result`` with ``original`` pasted back exactly at ``box``: the original region is byte-identical."""
    out = result.convert("RGB")
    out.paste(original.convert("RGB"), box[:2])
    return out


def describe(left: int, right: int, up: int, down: int) -> str:
    """The infotext value: "left 64, right 0, up 0, down 0" (the sides as run, after rounding)."""
    return f"left {left}, right {right}, up {up}, down {down}"
