"""Running one upscaling model (a spandrel ``ImageModelDescriptor``) over a picture, in overlapping tiles.

Why tiles: the network's activations grow with the picture (Real-ESRGAN x4 keeps 64 channels at the
output size), so a 2048x2048 result made in one go needs many GiB of device memory; made from 512 px
tiles it needs a fraction of that, and only the CPU holds the whole result.

How the seams are hidden: neighbouring tiles overlap (``overlap`` input pixels at least; the tiles are
spread evenly, so the overlaps are often larger). Across each overlap the two tiles are cross-faded
with linear ramps (weight maps), so a tile's edge pixels, where its network saw the tile's border
rather than the picture, count least. Away from the overlaps every output pixel comes from one tile,
and where that tile's network saw nothing of the tile border it equals the untiled result.

Tiles are padded (reflect, then replicate where reflection cannot reach) to the model's size
requirements (SwinIR's minimum size, pixel-unshuffle models' multiple of 4...) and the padding is cut
off the output. The model runs in its own dtype and device (the caller chose them); the result is
assembled in fp32 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from app.engine.resize import working_copy
from app.engine.tile_layout import axis_starts, axis_weights

Progress = Callable[[int, int], None]  # (tiles done, tiles in all); raise from it to stop between tiles

DEFAULT_TILE = 512  # input pixels a side
DEFAULT_OVERLAP = 32  # input pixels
MIN_TILE = 16


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of a picture start, in input pixels; every tile is ``tile_w`` x ``tile_h``."""

    xs: tuple[int, ...]
    ys: tuple[int, ...]
    tile_w: int
    tile_h: int

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """(left, top, right, bottom) of every tile, row by row."""
        return [(x, y, x + self.tile_w, y + self.tile_h) for y in self.ys for x in self.xs]


def check_tiling(tile: int | None, overlap: int) -> None:
    """Raise ValueError for a tile size or overlap that cannot tile a picture."""
    if not tile:
        return
    if not isinstance(tile, int) or tile < MIN_TILE:
        raise ValueError(f"The tile size must be at least {MIN_TILE} pixels (or 0 for no tiles), not {tile!r}.")
    if not isinstance(overlap, int) or overlap < 0 or 2 * overlap >= tile:
        raise ValueError(f"The tile overlap must be 0 or more and under half the tile size ({tile}), "
                         f"not {overlap!r}.")


def tile_grid(size: tuple[int, int], tile: int | None, overlap: int, requirements: Any = None) -> TileGrid:
    """The tiles for a ``size`` (width, height) picture: one covering it when ``tile`` is None or 0. The tile
    size grows to meet ``requirements`` (a spandrel ``SizeRequirements``: minimum, multiple_of)."""
    check_tiling(tile, overlap)
    width, height = size
    if not tile:
        return TileGrid((0,), (0,), width, height)
    if requirements is not None:
        tile = max(tile, requirements.minimum)
        tile = math.ceil(tile / requirements.multiple_of) * requirements.multiple_of
    return TileGrid(axis_starts(width, tile, overlap), axis_starts(height, tile, overlap), min(tile, width),
                    min(tile, height))


def count_tiles(size: tuple[int, int], tile: int | None, overlap: int, requirements: Any = None) -> int:
    return len(tile_grid(size, tile, overlap, requirements))


def upscale_tiled(descriptor: Any, image: Image.Image, *, tile: int | None = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, progress: Progress | None = None) -> Image.Image:
    """``image`` through the model ``descriptor`` at its native scale, tile by tile (``tile`` None or 0: in one
    go). RGB in and out; grayscale and palette pictures become RGB; an alpha band is resized with Lanczos
    and kept. ``progress(done, total)`` is called after each tile."""
    picture = working_copy(image)
    alpha = picture.getchannel("A") if picture.mode == "RGBA" else None
    rgb = picture.convert("RGB")
    scale = int(descriptor.scale)
    width, height = rgb.size
    grid = tile_grid((width, height), tile, overlap, descriptor.size_requirements)
    source = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0)
    total = len(grid)
    with torch.inference_mode():
        if total == 1:
            output = _run_tile(descriptor, source)
            if progress is not None:
                progress(1, 1)
        else:
            output = torch.zeros(3, height * scale, width * scale, dtype=torch.float32)
            # blending weights in output pixels; at every pixel those of the tiles covering it sum to 1
            x_weights = axis_weights([x * scale for x in grid.xs], grid.tile_w * scale)
            y_weights = axis_weights([y * scale for y in grid.ys], grid.tile_h * scale)
            done = 0
            for j, top in enumerate(grid.ys):
                for i, left in enumerate(grid.xs):
                    piece = source[..., top:top + grid.tile_h, left:left + grid.tile_w]
                    weight = torch.from_numpy(np.outer(y_weights[j], x_weights[i]).astype(np.float32))
                    window = (slice(None), slice(top * scale, (top + grid.tile_h) * scale),
                              slice(left * scale, (left + grid.tile_w) * scale))
                    output[window] += _run_tile(descriptor, piece) * weight
                    done += 1
                    if progress is not None:
                        progress(done, total)
    result = Image.fromarray(_to_bytes(output), "RGB")
    if alpha is not None:
        result.putalpha(alpha.resize(result.size, Image.Resampling.LANCZOS))
    return result


def pad_to_requirements(batch: torch.Tensor, requirements: Any) -> torch.Tensor:
    """``batch`` (B, C, H, W) padded on the right and bottom to meet spandrel's ``SizeRequirements``: mirrored
    where the picture is large enough for that, the edge pixels repeated beyond."""
    height, width = batch.shape[-2:]
    pad_w, pad_h = requirements.get_padding(width, height)
    if pad_w == 0 and pad_h == 0:
        return batch
    reflect_w, reflect_h = min(pad_w, width - 1), min(pad_h, height - 1)
    if reflect_w or reflect_h:
        batch = F.pad(batch, (0, reflect_w, 0, reflect_h), mode="reflect")
    if pad_w > reflect_w or pad_h > reflect_h:
        batch = F.pad(batch, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")
    return batch


def _run_tile(descriptor: Any, piece: torch.Tensor) -> torch.Tensor:
    """One tile (1, 3, h, w, uint8 on the CPU) through the model: (3, h*scale, w*scale) fp32 on the CPU."""
    height, width = piece.shape[-2:]
    scale = int(descriptor.scale)
    batch = piece.to(device=descriptor.device, dtype=descriptor.dtype) / 255.0
    result = descriptor(pad_to_requirements(batch, descriptor.size_requirements))
    result = result[0, :, :height * scale, :width * scale]
    return torch.nan_to_num(result.float(), nan=0.0).clamp_(0, 1).cpu()


def _to_bytes(output: torch.Tensor) -> np.ndarray:
    return output.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
