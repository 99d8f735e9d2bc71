"""Train the evaluation's star LoRA with other settings and measure it, as ``app.demo.evaluate`` does:
star adherence with the LoRA, and adherence on the ordinary prompts with it, over the evaluation's
prompts and seeds. The evaluation's LoRA settings and step count were chosen with it (bench/RESULTS.md).

    python bench/star_lora_sweep.py NAME '{"conv_rank": 0, "lora_preserve_weight": 3.0}' [--device cuda]
    python bench/star_lora_sweep.py NAME '{}' --at 800 1000 1200 1400   # one run, measured at four step counts
    python bench/star_lora_sweep.py base --no-lora       # the model alone

The JSON holds ``Budget`` fields (``lora_preserve_weight``, ``lora_steps``...) and any other ``TrainConfig``
settings. The LoRA trains a fixed number of steps (``lora_steps``, or the largest of ``--at``), so a
run gives the same figures on a GPU as on the CPU only as far as their arithmetic agrees.

``--at`` trains once and measures the LoRA as it was at each of those steps (checkpoints of the one
run, exported by resuming them): the same LoRA as a run of that many steps, because nothing in the
run depends on how many steps it will take, as long as the learning rate schedule does not (constant,
constant_with_warmup); other schedules are refused. Ends with one JSON line per LoRA measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from functools import reduce
from pathlib import Path

import torch

from app.demo import DEMO_MODEL, REPO_ROOT
from app.demo import evaluate as ev
from app.engine import Engine, EngineConfig
from app.training.trainer import TrainProgress, train

SCHEDULES_BLIND_TO_LENGTH = ("constant", "constant_with_warmup")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A LoRA to measure: its file name, and the steps and seconds of training it had."""
    name: str
    steps: int
    seconds: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the LoRA's file name (models/Lora/<name>.safetensors)")
    parser.add_argument("settings", nargs="?", default="{}", help="JSON: Budget fields and TrainConfig settings")
    parser.add_argument("--at", type=int, nargs="+", metavar="STEPS",
                        help="measure the one run's LoRA at each of these step counts")
    parser.add_argument("--no-lora", action="store_true", help="measure the model alone")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--outputs-dir", type=Path, default=REPO_ROOT / "outputs" / "star-lora-sweep")
    return parser.parse_args()


def split_settings(settings: dict) -> tuple[ev.Budget, dict]:
    """The JSON's ``Budget`` fields as a Budget, and the rest (TrainConfig settings)."""
    budget_fields = {f.name for f in dataclasses.fields(ev.Budget)}
    budget = dataclasses.replace(ev.Budget(), **{k: v for k, v in settings.items() if k in budget_fields})
    return budget, {k: v for k, v in settings.items() if k not in budget_fields}


def train_once(args: argparse.Namespace, budget: ev.Budget, overrides: dict) -> list[Snapshot]:
    trained = ev.train_star_lora(args.models_dir, args.outputs_dir / args.name, budget, args.name, args.device,
                                 **overrides)
    return [Snapshot(args.name, trained.steps, trained.seconds)]


def train_with_snapshots(args: argparse.Namespace, budget: ev.Budget, overrides: dict) -> list[Snapshot]:
    """One run to the largest of ``args.at``, checkpointed at each of them; each checkpoint is then
    resumed with its own step count as the end, which writes its LoRA file without a step more."""
    steps = sorted(set(args.at))
    outputs = args.outputs_dir / args.name
    config = ev.star_lora_config(args.models_dir, outputs, dataclasses.replace(budget, lora_steps=steps[-1]),
                                 args.name, args.device, checkpoint_every=reduce(math.gcd, steps), **overrides)
    if config.lr_scheduler not in SCHEDULES_BLIND_TO_LENGTH:
        raise SystemExit(f"--at needs a schedule that does not depend on the run's length, not {config.lr_scheduler}")
    started, seconds_at = time.monotonic(), {}

    def note(progress: TrainProgress) -> None:
        seconds_at[progress.step] = time.monotonic() - started

    train(config, on_progress=note)
    snapshots = []
    for count in steps:
        name = f"{args.name}-{count}"
        checkpoint = config.run_dir / "checkpoints" / f"step-{count:06d}"
        train(dataclasses.replace(config, output_name=name, max_steps=count, resume=checkpoint))
        snapshots.append(Snapshot(name, count, seconds_at[count]))
    return snapshots


def measure(engine: Engine, budget: ev.Budget, suffix: str) -> dict:
    """Star and ordinary adherence, over the evaluation's prompts and seeds, with ``suffix`` (a LoRA tag)."""
    card = ev.Settings.of(engine.manager.get(DEMO_MODEL).card)
    stars = ev.txt2img(engine, card, ev.star_prompts(budget.star_prompts), budget.seeds, suffix)
    ordinary = ev.txt2img(engine, card, ev.ordinary_prompts()[::budget.ordinary_stride], budget.seeds, suffix)
    out: dict = {}
    out["star_adherence"], out["star_misses"] = ev.check(stars)
    out["ordinary_adherence"], out["ordinary_misses"] = ev.check(ordinary)
    return out


def report(out: dict) -> None:
    for key in ("star_misses", "ordinary_misses"):
        print(f"{key}: {out[key]}")
    print(f"star adherence {out['star_adherence']:.3f}, ordinary adherence {out['ordinary_adherence']:.3f}")
    print(json.dumps(out), flush=True)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 as on the CPU
    settings = json.loads(args.settings)
    budget, overrides = split_settings(settings)
    snapshots: list[Snapshot | None] = [None]
    if not args.no_lora:
        snapshots = (train_with_snapshots if args.at else train_once)(args, budget, overrides)
    engine = Engine(EngineConfig(models_dir=args.models_dir, outputs_dir=args.outputs_dir, default_model=DEMO_MODEL,
                                 device=args.device, dtype="fp32", preview_every=0))
    try:
        for snapshot in snapshots:
            out: dict = {"name": snapshot.name if snapshot else args.name, "settings": settings, "device": args.device}
            if snapshot:
                out.update(steps=snapshot.steps, train_seconds=round(snapshot.seconds, 1))
            started = time.monotonic()
            out.update(measure(engine, budget, f" <lora:{snapshot.name}:1>" if snapshot else ""))
            out["generate_seconds"] = round(time.monotonic() - started, 1)
            report(out)
    finally:
        engine.shutdown()


if __name__ == "__main__":
    main()
