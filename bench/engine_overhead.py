"""Engine overhead: the same txt2img through the engine's worker (queue, events, previews,
infotext, PNG save) and as a direct diffusers call, alternated; plus the cost of building the
img2img/inpaint variants from the loaded txt2img pipeline.

    .venv/bin/python bench/engine_overhead.py [--model NAME | --arch tiny|sd15] [--size 256] [--steps 20] [--runs 5]

Prints its figures, then one JSON line. Target: overhead_ratio <= 1.03 with a model that needs
at least 0.5 s per image, variant_extra_params == 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import app  # noqa: F401  (first: it makes torchvision importable before diffusers imports it)
import torch
from diffusers import DiffusionPipeline

from app.engine import Engine, EngineConfig, Txt2ImgRequest
from app.engine.placeholder import ensure_placeholder_model
from app.engine.samplers import make_scheduler, resolve_sampler
from random_sd15 import build_sd15


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=None, help="default: a temporary folder with the placeholder")
    parser.add_argument("--model", default=None, help="checkpoint name in models/Stable-diffusion")
    parser.add_argument("--arch", choices=["tiny", "sd15"], default="tiny",
                        help="without --model: the tiny placeholder, or SD 1.5's architecture with random weights")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--sampler", default="Euler a")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    models_dir = args.models_dir or workdir / "models"
    if args.model:
        model = args.model
    elif args.arch == "sd15":
        model = build_sd15(models_dir, torch.float16 if torch.cuda.is_available() else torch.float32)
    else:
        model = ensure_placeholder_model(models_dir)
    engine = Engine(EngineConfig(models_dir=models_dir, outputs_dir=workdir / "outputs", default_model=model,
                                 device=args.device, dtype=args.dtype, preview_every=2))
    request = Txt2ImgRequest(prompt="a red circle on a blue background", seed=1234, width=args.size,
                             height=args.size, steps=args.steps, sampler=args.sampler, save=True)

    loaded = engine.manager.get(model)
    direct = DiffusionPipeline.from_pretrained(loaded.entry.path, dtype=engine.manager.dtype,
                                               local_files_only=True, safety_checker=None) \
        if loaded.entry.kind == "diffusers" else None
    if direct is None:
        raise SystemExit("the benchmark compares against a diffusers folder model")
    direct.to(engine.manager.device)
    direct.set_progress_bar_config(disable=True)
    direct.scheduler = make_scheduler(loaded.scheduler_config, *resolve_sampler(args.sampler, "Automatic"))

    def run_direct() -> float:
        start = time.perf_counter()
        direct(request.prompt, num_inference_steps=args.steps, guidance_scale=request.cfg_scale, width=args.size,
               height=args.size, generator=[torch.Generator("cpu").manual_seed(request.seed)])
        _sync()
        return time.perf_counter() - start

    def run_engine() -> float:
        start = time.perf_counter()
        engine.generate(request)
        _sync()
        return time.perf_counter() - start

    run_engine(), run_direct()  # warm-up
    engine_times, direct_times = [], []
    for _ in range(args.runs):
        engine_times.append(run_engine())
        direct_times.append(run_direct())
    ratios = [e / d for e, d in zip(engine_times, direct_times)]

    base_params = {p.data_ptr() for p in _parameters(loaded.txt2img)}
    start = time.perf_counter()
    variants = [loaded.pipeline("img2img"), loaded.pipeline("inpaint")]
    variant_build_ms = (time.perf_counter() - start) * 1000
    extra = sum(p.numel() for v in variants for p in _parameters(v) if p.data_ptr() not in base_params)
    engine.shutdown()

    result = {
        "device": str(engine.manager.device),
        "dtype": str(engine.manager.dtype),
        "model": model,
        "size": args.size,
        "steps": args.steps,
        "engine_s_median": round(statistics.median(engine_times), 4),
        "direct_s_median": round(statistics.median(direct_times), 4),
        "it_per_s_direct": round(args.steps / statistics.median(direct_times), 2),
        "overhead_ratio": round(statistics.median(ratios), 4),
        "variant_build_ms": round(variant_build_ms, 2),
        "variant_extra_params": extra,
    }
    for key, value in result.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(result))


def _parameters(pipe: DiffusionPipeline):
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            yield from component.parameters()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
