"""``python -m app.training``: train a LoRA from the command line (flags or a TOML config).

Runs alone or under ``accelerate launch -m app.training ...`` on several processes or GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from app.training.config import OPTIMIZERS, PRECISIONS, SCHEDULERS, TrainConfig, load_toml

ROOT = Path(__file__).resolve().parent.parent.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="a TOML file with any of the settings below (flags win)")
    parser.add_argument("--base-model", help="checkpoint name in models/Stable-diffusion, or a path")
    parser.add_argument("--dataset", type=Path, help="folder of images with .txt captions (kohya N_name folders ok)")
    parser.add_argument("--output-name", help="the LoRA is written to models/Lora/<name>.safetensors")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: models/ beside launch.py")
    parser.add_argument("--outputs-dir", type=Path, default=None, help="default: outputs/ beside launch.py")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in ("rank", "conv_rank", "max_steps", "batch_size", "gradient_accumulation", "lr_warmup_steps",
                 "resolution", "bucket_step", "keep_tokens", "checkpoint_every", "sample_every", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                            help=f"default {fields[name].default}")
    for name in ("alpha", "conv_alpha", "learning_rate", "text_encoder_lr", "noise_offset", "min_snr_gamma",
                 "caption_dropout", "weight_decay", "max_grad_norm", "preserve_weight"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=None,
                            help=f"default {fields[name].default}")
    parser.add_argument("--lr-scheduler", choices=SCHEDULERS, default=None)
    parser.add_argument("--mixed-precision", choices=PRECISIONS, default=None)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    parser.add_argument("--device", choices=["auto", "cpu"], default=None)
    for name in ("train_text_encoder", "gradient_checkpointing", "flip", "shuffle_caption"):
        parser.add_argument("--" + name.replace("_", "-"), action="store_true", default=None)
    parser.add_argument("--no-cache-latents", dest="cache_latents", action="store_false", default=None)
    parser.add_argument("--no-cache-text", dest="cache_text", action="store_false", default=None)
    parser.add_argument("--sample-prompt", dest="sample_prompts", action="append", default=None,
                        help="a prompt sampled every --sample-every steps (repeatable)")
    parser.add_argument("--preserve-prompt", dest="preserve_prompts", action="append", default=None,
                        help="prior preservation: a prompt the LoRA must leave as the base model draws it (repeatable)")
    parser.add_argument("--resume", type=Path, default=None,
                        help="a checkpoint folder, or the run folder outputs/training/<name> to take its latest")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    defaults = {"models_dir": ROOT / "models", "outputs_dir": ROOT / "outputs"}
    if args.config:
        return load_toml(args.config, defaults, **values)
    values = {**defaults, **values}
    missing = [flag for flag in ("base_model", "dataset", "output_name") if flag not in values]
    if missing:
        raise ValueError("Missing: " + ", ".join("--" + m.replace("_", "-") for m in missing))
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    from app.training.trainer import train

    def report(progress) -> None:
        print(f"step {progress.step}/{progress.total_steps} loss {progress.loss:.4f} "
              f"lr {progress.learning_rate:.2e} {progress.steps_per_second:.2f} steps/s "
              f"ETA {progress.eta_seconds:.0f}s", flush=True)

    try:
        result = train(config, on_progress=report)
    except ValueError as exc:  # a model, dataset or checkpoint that cannot be used: say why, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.skipped_images:
        print("skipped images:\n  " + "\n  ".join(result.skipped_images))
    if result.lora_path:
        print(f"LoRA written to {result.lora_path} after {result.steps} steps in {result.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
