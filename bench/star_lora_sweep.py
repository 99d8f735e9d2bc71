"""Train the evaluation's star LoRA with other settings and measure it, as ``app.demo.evaluate`` does:
star adherence with the LoRA, and adherence on the ordinary prompts with it, over the evaluation's
prompts and seeds. The evaluation's LoRA settings were chosen with it (bench/RESULTS.md).

    python bench/star_lora_sweep.py NAME '{"conv_rank": 0, "lora_preserve_weight": 3.0}' [--device cuda]
    python bench/star_lora_sweep.py base --no-lora       # the model alone

The JSON holds ``Budget`` fields (``lora_preserve_weight``, ``lora_seconds``, ``lora_steps``...) and any other
``TrainConfig`` settings. On a GPU, give ``lora_steps`` the number of steps the CPU manages in the
evaluation's time (the log of ``python -m app.demo.evaluate`` says it) and a large ``lora_seconds``.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from app.demo import DEMO_MODEL, REPO_ROOT
from app.demo import evaluate as ev
from app.engine import Engine, EngineConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the LoRA's file name (models/Lora/<name>.safetensors)")
    parser.add_argument("settings", nargs="?", default="{}", help="JSON: Budget fields and TrainConfig settings")
    parser.add_argument("--no-lora", action="store_true", help="measure the model alone")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--outputs-dir", type=Path, default=REPO_ROOT / "outputs" / "star-lora-sweep")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 as on the CPU

    settings = json.loads(args.settings)
    budget_fields = {f.name for f in dataclasses.fields(ev.Budget)}
    budget = dataclasses.replace(ev.Budget(), **{k: v for k, v in settings.items() if k in budget_fields})
    overrides = {k: v for k, v in settings.items() if k not in budget_fields}
    out: dict = {"name": args.name, "settings": settings, "device": args.device}
    suffix = ""
    if not args.no_lora:
        seconds, steps = ev.train_star_lora(args.models_dir, args.outputs_dir / args.name, budget, args.name,
                                            args.device, **overrides)
        out.update(train_seconds=round(seconds, 1), steps=steps)
        suffix = f" <lora:{args.name}:1>"
    started = time.monotonic()
    engine = Engine(EngineConfig(models_dir=args.models_dir, outputs_dir=args.outputs_dir, default_model=DEMO_MODEL,
                                 device=args.device, dtype="fp32", preview_every=0))
    try:
        card = ev.Settings.of(engine.manager.get(DEMO_MODEL).card)
        stars = ev.txt2img(engine, card, ev.star_prompts(budget.star_prompts), budget.seeds, suffix)
        ordinary = ev.txt2img(engine, card, ev.ordinary_prompts()[::budget.ordinary_stride], budget.seeds, suffix)
        out["star_adherence"], out["star_misses"] = ev.check(stars)
        out["ordinary_adherence"], out["ordinary_misses"] = ev.check(ordinary)
    finally:
        engine.shutdown()
    out["generate_seconds"] = round(time.monotonic() - started, 1)
    for key in ("star_misses", "ordinary_misses"):
        print(f"{key}: {out[key]}")
    print(f"star adherence {out['star_adherence']:.3f}, ordinary adherence {out['ordinary_adherence']:.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
