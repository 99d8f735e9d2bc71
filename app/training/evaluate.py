"""The evaluation of a LoRA (step 5 of the seed's recipe): its loss curve, a grid of samples at fixed
seeds without and with it, and a score where the base model has a checker. Saved beside the LoRA as
``<name>.report.json``, ``<name>.report.md``, ``<name>.grid.png`` and ``<name>.loss.png``.

Runs on the engine's worker thread (as a job), using the engine's own inference path: the base model
from the manager and the LoRA through its adapters, so the grid shows what the generate tabs give.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from app.engine.lora_runtime import ActiveLora
from app.engine.manager import ModelManager
from app.engine.prompt_inputs import conditioned_call, encode_for_pipeline
from app.engine.samplers import make_scheduler, resolve_sampler

DEFAULT_PROMPTS = ("a photo",)
SCORE_HOOK = Callable[[list[Image.Image], Sequence[str]], float]


@dataclass
class EvaluationReport:
    lora: str
    base_model: str
    prompts: list[str]
    seeds: list[int]
    steps: int
    size: int
    mean_pixel_change: float  # how much the LoRA changes the samples (0-255 scale)
    score_before: float | None = None
    score_after: float | None = None
    score_note: str = ""  # what the score measures, or why there is none
    losses: list[float] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def markdown(self) -> str:
        lines = [f"# LoRA report: {self.lora}", "", f"- base model: {self.base_model}",
                 f"- samples: {len(self.prompts)} prompt(s) x {len(self.seeds)} seed(s), {self.steps} steps, "
                 f"{self.size}x{self.size}",
                 f"- mean pixel change with the LoRA at weight 1: {self.mean_pixel_change:.2f} / 255"]
        if self.losses:
            lines.append(f"- training loss: first {self.losses[0]:.4f}, last {self.losses[-1]:.4f}, "
                         f"{len(self.losses)} steps")
        if self.score_after is not None:
            lines.append(f"- score: {self.score_before:.3f} before, {self.score_after:.3f} after ({self.score_note})")
        else:
            lines.append(f"- score: none ({self.score_note})")
        lines += ["", f"![samples]({Path(self.files.get('grid', '')).name})"]
        if "loss" in self.files:
            lines.append(f"![loss]({Path(self.files['loss']).name})")
        return "\n".join(lines) + "\n"


def evaluate_lora(manager: ModelManager, lora: ActiveLora, base_model: str, prompts: Sequence[str],
                  seeds: Sequence[int] = (1, 2), steps: int | None = None, size: int | None = None,
                  losses: Sequence[float] = (), scorer: SCORE_HOOK | None = None,
                  scorers: Scorers | None = None) -> EvaluationReport:
    """Sample without and with ``lora`` at fixed seeds, write the report files beside the LoRA file."""
    loaded = manager.get(base_model)
    assert loaded.adapters is not None
    card = loaded.card
    steps = steps or int(card.get("default_steps", 20))
    size = size or int(card.get("default_width", 512))
    cfg_scale = float(card.get("default_cfg_scale", 7.0))
    pipe = loaded.pipeline("txt2img")
    pipe.scheduler = make_scheduler(loaded.scheduler_config, *resolve_sampler("Euler a", "Automatic"))
    prompts = list(prompts) or list(DEFAULT_PROMPTS)
    rows: dict[bool, list[Image.Image]] = {}
    assert loaded.prompt_encoder is not None
    try:
        for with_lora in (False, True):
            active = [lora] if with_lora else []
            loaded.adapters.activate(active)
            rows[with_lora] = []
            for prompt in prompts:  # read as the generate tabs read it (A1111's prompt language)
                conditioning = encode_for_pipeline(loaded.prompt_encoder, pipe, manager.registry, prompt, "", steps,
                                                   loras=active, allow_pickle=manager.config.allow_pickle)
                rows[with_lora] += [
                    pipe(num_inference_steps=steps, width=size, height=size, guidance_scale=cfg_scale,
                         generator=torch.Generator("cpu").manual_seed(seed), **conditioned_call(conditioning, 1)
                         ).images[0]
                    for seed in seeds]
    finally:
        loaded.adapters.activate([])
    change = _mean_change(rows[False], rows[True])
    stem = lora.path.with_suffix("")
    files = {"grid": str(stem) + ".grid.png"}
    grid(rows[False], rows[True], prompts, seeds).save(files["grid"])
    if losses:
        files["loss"] = str(stem) + ".loss.png"
        loss_curve(list(losses)).save(files["loss"])
    report = EvaluationReport(lora.name, base_model, prompts, list(seeds), steps, size, change,
                              losses=list(losses), files=files)
    scorer, report.score_note = ((scorer, "the caller's score") if scorer is not None
                                 else (scorers or Scorers()).for_card(card))
    if scorer is not None:
        report.score_before = scorer(rows[False], [p for p in prompts for _ in seeds])
        report.score_after = scorer(rows[True], [p for p in prompts for _ in seeds])
    files["json"], files["markdown"] = str(stem) + ".report.json", str(stem) + ".report.md"
    Path(files["json"]).write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    Path(files["markdown"]).write_text(report.markdown(), encoding="utf-8")
    return report


class Scorers:
    """Checkers that can score a base model's pictures, by the name its card gives (``"evaluator"``).
    Filled by whoever knows one (the demo package registers "shapes"); training never imports them."""

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[SCORE_HOOK, str]] = {}

    def register(self, name: str, scorer: SCORE_HOOK, meaning: str) -> None:
        self._by_name[name] = (scorer, meaning)

    def for_card(self, card: dict) -> tuple[SCORE_HOOK | None, str]:
        """The checker a card names, with what its score means; without one, no score and a note saying so."""
        found = self._by_name.get(str(card.get("evaluator", "")))
        if found is None:
            return None, "no checker for this base model's pictures (only the bundled demo model has one)"
        return found


def _mean_change(before: list[Image.Image], after: list[Image.Image]) -> float:
    import numpy as np

    diffs = [np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean()
             for a, b in zip(before, after)]
    return float(np.mean(diffs))


def grid(before: list[Image.Image], after: list[Image.Image], prompts: Sequence[str], seeds: Sequence[int]) -> Image.Image:
    """Rows: prompt x seed; columns: without the LoRA, with it. A label strip on top."""
    width, height = before[0].size
    label = 18
    sheet = Image.new("RGB", (2 * width, label + len(before) * height), "white")
    pen = ImageDraw.Draw(sheet)
    pen.text((4, 3), "base", fill="black")
    pen.text((width + 4, 3), "with LoRA", fill="black")
    for row, (a, b) in enumerate(zip(before, after)):
        sheet.paste(a, (0, label + row * height))
        sheet.paste(b, (width, label + row * height))
    return sheet


def loss_curve(losses: list[float], size: tuple[int, int] = (480, 240)) -> Image.Image:
    """The per-step loss (grey) and its moving average (blue), drawn with PIL."""
    width, height = size
    margin = 24
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0

    def point(index: int, value: float) -> tuple[float, float]:
        x = margin + (width - 2 * margin) * (index / max(1, len(losses) - 1))
        return x, height - margin - (height - 2 * margin) * (value - low) / span

    window = max(1, len(losses) // 20)
    smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
              for i in range(len(losses))]
    if len(losses) > 1:
        pen.line([point(i, v) for i, v in enumerate(losses)], fill=(180, 180, 180), width=1)
        pen.line([point(i, v) for i, v in enumerate(smooth)], fill=(40, 90, 200), width=2)
    pen.rectangle((margin, margin, width - margin, height - margin), outline=(120, 120, 120))
    pen.text((margin, 4), f"loss: {high:.4f} max, {low:.4f} min, {len(losses)} steps", fill="black")
    return image
