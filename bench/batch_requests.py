"""Batching across queued requests (``--batch-requests``): images per second of N queued txt2img jobs of N
people drawn as one batch, against the same jobs drawn one after another, on one engine in one run; and
how far each batched picture is from its picture alone.

    .venv/bin/python bench/batch_requests.py [--arch tiny|sd15] [--size 512] [--steps 20] [--jobs 4] [--runs 3]

Prints its figures, then one JSON line. Target (issue 23, on a GPU): batched_speedup >= 2 with 4 jobs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import app  # noqa: F401  (first: it makes torchvision importable before diffusers imports it)
import numpy as np
import torch
from PIL import Image

from app.engine import Engine, EngineConfig, Txt2ImgRequest
from app.engine.config import dtype_name
from app.engine.jobs import JobContext, JobResult
from app.engine.placeholder import ensure_placeholder_model
from random_sd15 import build_sd15


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "sd15"], default="tiny",
                        help="the tiny placeholder, or SD 1.5's architecture with random weights")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    return parser.parse_args()


def queued_together(engine: Engine, requests: list[Txt2ImgRequest]) -> tuple[float, list[JobResult]]:
    """Seconds from the moment the worker is free until every job ended, the jobs queued behind a job
    that holds the worker (so that the worker finds them all queued), each of its own owner."""
    release, started = threading.Event(), threading.Event()

    def hold(ctx: JobContext) -> JobResult:
        started.set()
        release.wait(600)
        return JobResult()

    holder = engine.submit_work(hold, "hold the worker", owner="holder")
    started.wait(600)
    jobs = [engine.submit(request, owner=f"user{i}") for i, request in enumerate(requests)]
    begin = time.perf_counter()
    release.set()
    holder.wait(600)
    results = [job.wait(600) for job in jobs]
    return time.perf_counter() - begin, results


def largest_difference(a: Image.Image, b: Image.Image) -> int:
    """The largest difference of two pictures' 8-bit channel values."""
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def one_after_another(engine: Engine, requests: list[Txt2ImgRequest]) -> tuple[float, list[JobResult]]:
    begin = time.perf_counter()
    results = [engine.generate(request, owner=f"user{i}") for i, request in enumerate(requests)]
    return time.perf_counter() - begin, results


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    models_dir = workdir / "models"
    if args.arch == "sd15":
        model = build_sd15(models_dir, torch.float16 if torch.cuda.is_available() else torch.float32)
    else:
        model = ensure_placeholder_model(models_dir)
    engine = Engine(EngineConfig(models_dir=models_dir, outputs_dir=workdir / "outputs", default_model=model,
                                 device=args.device, dtype=args.dtype, batch_requests=args.jobs))
    try:
        requests = [Txt2ImgRequest(prompt=f"picture {i}: a red circle on a blue background", seed=100 + i,
                                   width=args.size, height=args.size, steps=args.steps, save=False)
                    for i in range(args.jobs)]
        one_after_another(engine, requests[:1])  # load and warm up
        alone, batched, worst = [], [], 0
        for _ in range(args.runs):
            seconds, singles = one_after_another(engine, requests)  # nothing else queued: each drawn alone
            alone.append(seconds)
            seconds, together = queued_together(engine, requests)
            batched.append(seconds)
            worst = max([worst] + [largest_difference(single.images[0], joint.images[0])
                                   for single, joint in zip(singles, together)])
        line = {
            "device": str(engine.manager.device), "dtype": dtype_name(engine.manager.dtype),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "arch": args.arch, "size": args.size, "steps": args.steps, "jobs": args.jobs,
            "alone_s": round(statistics.median(alone), 3), "batched_s": round(statistics.median(batched), 3),
            "alone_images_per_s": round(args.jobs / statistics.median(alone), 3),
            "batched_images_per_s": round(args.jobs / statistics.median(batched), 3),
            "batched_speedup": round(statistics.median(alone) / statistics.median(batched), 3),
            "max_pixel_diff": worst,
        }
        print(f"{args.jobs} jobs one after another: {line['alone_s']} s; queued and batched: {line['batched_s']} s "
              f"({line['batched_speedup']}x); largest pixel difference {worst}/255")
        print(json.dumps(line))
    finally:
        engine.shutdown()


if __name__ == "__main__":
    main()
