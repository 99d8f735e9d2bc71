"""SD upscale (A1111's img2img script "SD upscale"): upscale a picture, then redraw it with img2img in
overlapping tiles of the request's width x height at the request's denoising strength, the tiles'
overlaps blended with linear ramps so no seam shows.

The geometry and the blending are here, with the loop over the tiles (``redraw_in_tiles``), which
draws each batch of tiles through a callable: ``tasks.run_generation`` passes one that runs the
img2img pipeline (with progress, previews and cancel), the tests pass plain functions.

How it follows A1111 (``scripts/sd_upscale.py``, ``images.split_grid``): the tiles cover the picture
with at least ``overlap`` pixels shared between neighbours, spread evenly, the first and the last
flush with the borders; tile k of a picture is drawn with ``seed + k`` (A1111 at batch size 1; its
seeds overlap between batches at larger batch sizes, here batch size only groups tiles, so it never
changes the pixels); the upscaler "None" leaves the picture at its size. Where LoRA Studio differs:
A1111 pastes each overlap with a ramp ``overlap`` pixels wide over the previous tile; here every
shared band is cross-faded over its whole width, with weights that sum to exactly 1. A picture
smaller than a tile one way gets one tile that way, as small as the picture (grown to a multiple of
8, at least 64 px, by repeating its edge pixels; A1111 pads with black to the full tile).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.engine.tile_layout import axis_starts, axis_weights
from app.engine.upscalers import UpscalerLibrary

NO_UPSCALER = "None"  # A1111's SD upscale then redraws the picture at its own size
MAX_SIDE = 4096  # pixels a side of an SD upscale result (the blend holds it as float32: 192 MiB at most)
MIN_TILE = 64  # the smallest tile drawn where the picture is smaller than a tile
TILE_MULTIPLE = 8

Box = tuple[int, int, int, int]


# ----- upscaling -------------------------------------------------------------------------------
def upscaler_names(upscalers: UpscalerLibrary) -> list[str]:
    """The usable upscalers in the order GET /sdapi/v1/upscalers lists them (A1111's script_args index them)."""
    return [info.name for info in upscalers.available() if info.usable]


def upscaled_size(size: tuple[int, int], upscaler: str, scale: float) -> tuple[int, int]:
    """The size SD upscale redraws (and returns) for a picture of ``size``."""
    if upscaler.strip().casefold() == NO_UPSCALER.casefold():
        return size
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def upscaled_picture(upscalers: UpscalerLibrary, picture: Image.Image, upscaler: str, scale: float,
                     progress: Callable[[int, int], None] | None = None) -> Image.Image:
    """``picture`` (in RGB) upscaled by ``scale``; the upscaler "None" keeps its size, as A1111's script does.
    ``progress(done, total)``: a model upscaler's tiles. Raises ValueError for an unknown upscaler."""
    name = upscalers.canonical(upscaler)
    rgb = picture.convert("RGB")
    if name == NO_UPSCALER:
        return rgb
    return upscalers.upscale(rgb, name, scale=scale, progress=progress).convert("RGB")


# ----- the grid --------------------------------------------------------------------------------
def tile_extent(length: int, tile: int) -> int:
    """How long a tile is drawn along a side: ``tile``, or for a shorter side the side grown to a
    multiple of 8 and at least ``MIN_TILE`` (never past ``tile``)."""
    if length >= tile:
        return tile
    grown = -(-length // TILE_MULTIPLE) * TILE_MULTIPLE
    return min(tile, max(MIN_TILE, grown))


@dataclass(frozen=True)
class TileGrid:
    """The tiles that redraw a picture of ``size``: boxes of ``tile`` pixels at every (x, y) of ``xs`` x ``ys``
    on a canvas of ``canvas`` pixels (the picture, grown where it is smaller than a tile)."""

    size: tuple[int, int]
    tile: tuple[int, int]
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @property
    def canvas(self) -> tuple[int, int]:
        return self.xs[-1] + self.tile[0], self.ys[-1] + self.tile[1]

    def boxes(self) -> list[Box]:
        """Each tile's (left, top, right, bottom) on the canvas, row by row."""
        width, height = self.tile
        return [(x, y, x + width, y + height) for y in self.ys for x in self.xs]

    def weights(self) -> list[np.ndarray]:
        """Each tile's blending weights (height x width, float32), in ``boxes()``' order."""
        along_x, along_y = axis_weights(self.xs, self.tile[0]), axis_weights(self.ys, self.tile[1])
        return [np.outer(wy, wx).astype(np.float32) for wy in along_y for wx in along_x]


def plan_grid(size: tuple[int, int], tile: tuple[int, int], overlap: int) -> TileGrid:
    """The tile grid for a picture of ``size`` with tiles of ``tile`` (width, height) sharing at least ``overlap``
    pixels. Raises ValueError for an overlap not smaller than a tile that has neighbours."""
    width = tile_extent(size[0], tile[0])
    height = tile_extent(size[1], tile[1])
    return TileGrid(size, (width, height), axis_starts(size[0], width, overlap),
                    axis_starts(size[1], height, overlap))


def grown_canvas(picture: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    """``picture`` on a canvas of ``canvas`` size (never smaller), its edge pixels repeated to fill the rest."""
    pixels = np.asarray(picture.convert("RGB"))
    extra_y, extra_x = canvas[1] - pixels.shape[0], canvas[0] - pixels.shape[1]
    if extra_x <= 0 and extra_y <= 0:
        return picture.convert("RGB")
    return Image.fromarray(np.pad(pixels, ((0, max(extra_y, 0)), (0, max(extra_x, 0)), (0, 0)), mode="edge"))


# ----- the redraw ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileBatch:
    """One call of the tile drawer: img2img each tile with its seed and return the tiles, same size."""

    index: int  # which batch of the picture's tiles, from 0
    count: int  # how many batches the picture takes
    tiles: tuple[Image.Image, ...]
    seeds: tuple[int, ...]


TileDrawer = Callable[[TileBatch], Sequence[Image.Image]]


def redraw_in_tiles(picture: Image.Image, tile: tuple[int, int], overlap: int, draw: TileDrawer, *, seed: int,
                    batch_size: int = 1, check_cancelled: Callable[[], None] = lambda: None) -> Image.Image:
    """``picture`` redrawn tile by tile through ``draw`` (``batch_size`` tiles a call; tile k gets ``seed + k``)
    and blended back; the result has the picture's size. ``check_cancelled`` runs before each batch, so a
    cancelled job stops between tiles."""
    grid = plan_grid(picture.size, tile, overlap)
    canvas = grown_canvas(picture, grid.canvas)
    boxes, weights = grid.boxes(), grid.weights()
    blended = np.zeros((grid.canvas[1], grid.canvas[0], 3), dtype=np.float32)
    count = math.ceil(len(boxes) / batch_size)
    for index in range(count):
        check_cancelled()
        first = index * batch_size
        chosen = range(first, min(first + batch_size, len(boxes)))
        batch = TileBatch(index, count, tuple(canvas.crop(boxes[k]) for k in chosen),
                          tuple((seed + k) % 2**32 for k in chosen))
        drawn = list(draw(batch))
        if len(drawn) != len(chosen):
            raise RuntimeError(f"The tile drawer returned {len(drawn)} tiles for {len(chosen)}.")
        for k, image in zip(chosen, drawn):
            left, top, right, bottom = boxes[k]
            if image.size != (right - left, bottom - top):
                raise RuntimeError(f"A tile came back {image.size[0]}x{image.size[1]}, not {right - left}x{bottom - top}.")
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
            blended[top:bottom, left:right] += pixels * weights[k][..., None]
    result = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
    return result.crop((0, 0, *picture.size)) if result.size != picture.size else result


def describe(upscaler: str, overlap: int, scale: float) -> dict[str, object]:
    """The infotext keys: A1111's two ("SD upscale overlap", "SD upscale upscaler") and LoRA Studio's
    "SD upscale scale" (A1111 does not record its factor, so its infotexts restore the default 2)."""
    return {"SD upscale overlap": overlap, "SD upscale upscaler": upscaler, "SD upscale scale": scale}
