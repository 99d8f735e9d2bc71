"""Model upscaling speed: output megapixels per second of Lanczos and of a Real-ESRGAN x4plus-shaped network
(RRDB, 64 filters, 23 blocks, 4x; random weights: speed depends on the shape, not the weights), untiled and
tiled, through the engine's UpscalerLibrary on a fixed picture (128x128 -> 512x512 by default). Also times
the first listing of the models folder (reads the file: spandrel builds the network), a second listing
(cached) and the model's first load onto the device.

    .venv/bin/python bench/upscale.py [--size 128] [--runs 1] [--tile 80] [--overlap 16] [--device cpu]

Prints its figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from app.engine.spandrel_import import import_spandrel
from app.engine.tiled_upscale import count_tiles
from app.engine.upscalers import UpscalerLibrary

MODEL_NAME = "RealESRGAN_x4plus_random"


def write_model(models_dir: Path) -> Path:
    """A RealESRGAN_x4plus-shaped RRDB network with seeded random weights, as models/RealESRGAN/*.safetensors."""
    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    network = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    path = models_dir / "RealESRGAN" / f"{MODEL_NAME}.safetensors"
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, path)
    return path


def test_picture(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    smooth = np.stack([x, y, x + y], axis=-1) * (255 / (2 * size))
    return Image.fromarray(np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8), "RGB")


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="input pixels a side (the output is 4x)")
    parser.add_argument("--runs", type=int, default=1, help="timed runs of each (the median is reported)")
    parser.add_argument("--tile", type=int, default=80, help="tile size for the tiled runs (input pixels)")
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    picture = test_picture(args.size)
    output_mp = (args.size * 4) ** 2 / 1e6
    with tempfile.TemporaryDirectory() as folder:
        models_dir = Path(folder)
        size_mb = write_model(models_dir).stat().st_size / 2**20
        dtype = torch.float16 if args.dtype == "fp16" else torch.float32
        library = UpscalerLibrary(models_dir, device=args.device, dtype=dtype)
        first_listing = timed(library.available)
        second_listing = timed(library.available)
        load = timed(lambda: library.model(library.find(MODEL_NAME)))
        work = {
            "lanczos": lambda: library.upscale(picture, "Lanczos", scale=4),
            "model_untiled": lambda: library.upscale(picture, MODEL_NAME, scale=4, tile=None),
            "model_tiled": lambda: library.upscale(picture, MODEL_NAME, scale=4, tile=args.tile, overlap=args.overlap),
        }
        seconds: dict[str, list[float]] = {name: [] for name in work}
        for _ in range(args.runs):
            for name, run in work.items():
                seconds[name].append(timed(run))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    tiles = count_tiles((args.size, args.size), args.tile, args.overlap)
    print(f"device {args.device} ({args.dtype}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: RRDB 64 filters, 23 blocks, 4x ({size_mb:.1f} MiB safetensors)")
    print(f"listing: first {first_listing:.2f} s (reads the file), second {second_listing * 1000:.2f} ms; "
          f"load onto the device {load:.2f} s")
    print(f"{args.size}x{args.size} -> {args.size * 4}x{args.size * 4} ({output_mp:.3f} MP out), "
          f"median of {args.runs} runs:")
    for name, value in medians.items():
        extra = f" ({tiles} tiles of {args.tile} px, overlap {args.overlap})" if name == "model_tiled" else ""
        print(f"  {name:14s} {value:8.3f} s  {output_mp / value:10.3f} MP/s{extra}")
    print(json.dumps({
        "bench": "upscale", "device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "input": args.size, "output": args.size * 4, "runs": args.runs, "tile": args.tile, "overlap": args.overlap,
        "tiles": tiles, "first_listing_s": round(first_listing, 3), "second_listing_ms": round(second_listing * 1000, 3),
        "load_s": round(load, 3),
        "seconds": {name: round(value, 4) for name, value in medians.items()},
        "mp_per_s": {name: round(output_mp / value, 4) for name, value in medians.items()},
    }))


if __name__ == "__main__":
    main()
