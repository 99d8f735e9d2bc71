"""LoRA training speed with cached latents/text embeddings and without, and peak memory.

    .venv/bin/python bench/train_throughput.py [--arch tiny|sd15] [--resolution 64] [--steps 30] [--batch 1 4]

For each batch size: ``steps_per_s_cached`` (latents and text embeddings cached before the run),
``steps_per_s_uncached`` (VAE and text encoder run every step), ``cache_speedup`` (their ratio) and
peak memory (CUDA: max allocated; CPU: the process's peak resident size so far). Step rates are the
mean of the last steps of each run (the first steps warm up). ``--arch sd15`` uses an SD 1.5
architecture with random weights (the GPU benchmark of the training issue: 512x512, rank 16).
Prints the figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from app.engine.placeholder import ensure_placeholder_model
from app.training.config import TrainConfig
from app.training.trainer import train
from random_sd15 import build_sd15


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--resolution", type=int, default=None, help="default 64 (tiny) or 512 (sd15)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--mixed-precision", default=None, help="default fp16 on CUDA, none on the CPU")
    return parser.parse_args()


def make_dataset(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    colours = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
    for index in range(count):
        colour = colours[index % len(colours)]
        image = Image.new("RGB", (size, size), "grey")
        ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=colour)
        image.save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"a {colour} circle on a grey background")


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(config: TrainConfig, device: str) -> tuple[float, float]:
    rates: list[float] = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train(config, on_progress=lambda p: rates.append(p.steps_per_second))
    steady = rates[len(rates) // 2:] or rates
    return sum(steady) / len(steady), peak_memory_mb(device)


def main() -> None:
    args = parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = args.mixed_precision or ("fp16" if device == "cuda" else "no")
    workdir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    models_dir = workdir / "models"
    if args.arch == "sd15":
        model = build_sd15(models_dir, torch.float32)
    else:
        model = ensure_placeholder_model(models_dir)
    resolution = args.resolution or (512 if args.arch == "sd15" else 64)
    make_dataset(workdir / "data", args.images, resolution)
    rows = []
    for batch in args.batch:
        figures = {}
        for cached in (True, False):
            config = TrainConfig(base_model=model, dataset=workdir / "data", output_name=f"bench-{batch}-{cached}",
                                 models_dir=models_dir, outputs_dir=workdir / "outputs", rank=args.rank,
                                 alpha=float(args.rank), resolution=resolution, bucket_step=8 if resolution < 256 else 64,
                                 max_steps=args.steps, batch_size=batch, cache_latents=cached, cache_text=cached,
                                 mixed_precision=precision, device="cpu" if device == "cpu" else "auto")
            if cached:  # fill the caches first, so the measured run only reads them
                train(TrainConfig(**{**config.__dict__, "max_steps": 1, "output_name": "bench-warm"}))
            figures[cached] = run(config, device)
        row = {"batch": batch, "steps_per_s_cached": round(figures[True][0], 3),
               "steps_per_s_uncached": round(figures[False][0], 3),
               "cache_speedup": round(figures[True][0] / figures[False][0], 3),
               "peak_memory_mb_cached": round(figures[True][1], 1), "peak_memory_mb_uncached": round(figures[False][1], 1)}
        rows.append(row)
        print(f"batch {batch}: {row['steps_per_s_cached']} steps/s cached, {row['steps_per_s_uncached']} uncached "
              f"-> cache_speedup {row['cache_speedup']}; peak {row['peak_memory_mb_cached']} / "
              f"{row['peak_memory_mb_uncached']} MB")
    result = {"arch": args.arch, "device": device, "precision": precision, "resolution": resolution,
              "rank": args.rank, "steps": args.steps, "runs": rows,
              "steps_per_s": rows[0]["steps_per_s_cached"], "cache_speedup": rows[0]["cache_speedup"]}
    if device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
