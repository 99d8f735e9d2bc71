"""Cutting a face out for a restorer and putting the restored face back, soft-edged.

The restorers (GFPGAN, CodeFormer, RestoreFormer) were trained on 512x512 faces aligned like FFHQ's:
eyes a little above the middle, the face filling about the central half. Without landmarks the face
cannot be rotated upright, so the crop is a square around the detector's box, ``CROP_SCALE`` times its
side and raised by ``CROP_RAISE`` of its side (a frontal Haar box runs from the brows to below the
mouth, and sits lower in the face than FFHQ's centre). Where the square runs past the picture's edge,
the edge pixels are repeated.

The restored square is pasted back through a mask that is 1 inside and falls smoothly to 0 over the
outer ``FEATHER_FRACTION`` of the square, times the visibility: pixels outside the square keep their
exact values, and so does every pixel at visibility 0.

Pictures are float32 arrays (height, width, 3) holding 0..255 values, so unchanged pixels round-trip
to the same bytes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from app.engine.face_detect import FaceBox

CROP_SCALE = 1.6
CROP_RAISE = 0.05
FEATHER_FRACTION = 0.125


class FaceSquare(NamedTuple):
    """The square cut out around a face, in picture pixels; it may run past the picture's edges."""

    left: int
    top: int
    side: int


def face_square(box: FaceBox, scale: float = CROP_SCALE, raise_by: float = CROP_RAISE) -> FaceSquare:
    side = max(1, round(max(box.width, box.height) * scale))
    centre_x = box.x + box.width / 2
    centre_y = box.y + box.height / 2 - raise_by * side
    return FaceSquare(round(centre_x - side / 2), round(centre_y - side / 2), side)


def crop_face(picture: np.ndarray, square: FaceSquare, size: int) -> np.ndarray:
    """The square of ``picture`` (edge pixels repeated where it runs past the picture), resized to size x size."""
    import cv2

    height, width = picture.shape[:2]
    left, top, side = square
    x0, y0 = min(max(left, 0), width), min(max(top, 0), height)
    x1, y1 = max(min(left + side, width), x0), max(min(top + side, height), y0)
    if x1 == x0 or y1 == y0:
        raise ValueError(f"The face square {square} lies outside the {width}x{height} picture.")
    inside = np.ascontiguousarray(picture[y0:y1, x0:x1])
    square_pixels = cv2.copyMakeBorder(inside, y0 - top, top + side - y1, x0 - left, left + side - x1,
                                       cv2.BORDER_REPLICATE)
    return _resized(square_pixels, size)


def paste_face(picture: np.ndarray, restored: np.ndarray, square: FaceSquare, strength: float) -> None:
    """Blend ``restored`` (a square of any size) into ``picture`` in place over ``square``, through the
    feathered mask times ``strength`` (0 keeps the picture, 1 shows the restored face inside the mask)."""
    height, width = picture.shape[:2]
    left, top, side = square
    patch = _resized(restored, side)
    weight = feather_mask(side) * np.float32(strength)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    if x1 <= x0 or y1 <= y0:
        return
    region = picture[y0:y1, x0:x1]
    inner = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    region += (patch[inner] - region) * weight[inner][..., None]


def feather_mask(side: int, fraction: float = FEATHER_FRACTION) -> np.ndarray:
    """A side x side float32 mask: 1 in the middle, easing to 0 at the square's edges (smoothstep)."""
    feather = max(1.0, side * fraction)
    index = np.arange(side, dtype=np.float32)
    distance = np.minimum(index, side - 1 - index) + 0.5  # to the nearer edge, from the pixel's centre
    ramp = np.clip(distance / feather, 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)
    return np.minimum.outer(ramp, ramp).astype(np.float32)


def _resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """Area averaging to shrink, bicubic to enlarge; bicubic's overshoot clipped back to 0..255."""
    import cv2

    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels.astype(np.float32, copy=True)
    shrinking = pixels.shape[0] > size
    result = cv2.resize(pixels.astype(np.float32), (size, size),
                        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return np.clip(result, 0.0, 255.0)
