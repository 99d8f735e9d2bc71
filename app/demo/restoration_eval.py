"""Restoration on the bundled demo model, where the truth is known: ``python -m app.demo.restoration_eval [--json]``.

A fixed set of ground-truth scenes (the demo's own drawer, at the model card's size) is corrupted
four ways and each corruption is undone three ways, all measured against the original:

============  ==========================================  =====================  ==============================
corruption    what the restoration gets                   classical baseline     the app's restoration
============  ==========================================  =====================  ==============================
noise_low     Gaussian noise, sigma 0.05 of the range     median filter 5x5      img2img at a low strength
noise_high    Gaussian noise, sigma 0.15 of the range     median filter 5x5      img2img at a low strength
hole          a 20x20 rectangle painted mid grey (128)    OpenCV inpaint, Telea  inpaint of the rectangle
downscale     the 2x box-averaged picture (32x32)         Lanczos 2x             Lanczos 2x, hires-style img2img
============  ==========================================  =====================  ==============================

"input" is the corrupted picture itself (for ``downscale``, its pixels shown 2x2 each: nearest
neighbour). Figures, against the originals (torchmetrics, data range 1.0): PSNR of the whole set
(from the mean squared error over all its pictures' pixels), the mean of each picture's SSIM, and
the checker's agreement: the share of pictures whose shape and colour it reads as the scene's. The
prompt of every diffusion call is the scene's caption; its seed is the scene's.

The work is fixed (scenes, seeds, steps, strengths); the seconds it took are reported, never used to
decide how much to do. The recipe's settings were chosen once with ``--sweep`` on tuning scenes of
their own (not the evaluated ones) and then written down in ``RECIPE``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from app.demo import DEMO_MODEL, REPO_ROOT
from app.demo.checker import read_picture
from app.demo.evaluate import Settings  # the model card's size, steps and CFG, as the demo's evaluation uses them
from app.demo.shapes import Scene, random_scene, render
from app.engine import Engine, EngineConfig, Img2ImgRequest, InpaintRequest
from app.engine.hires import second_pass_schedule
from app.engine.masks import Box
from app.engine.resize import upscale

log = logging.getLogger("app.demo.restoration_eval")

CORRUPTIONS = ("noise_low", "noise_high", "hole", "downscale")
NOISE_SIGMAS = {"noise_low": 0.05, "noise_high": 0.15}  # of the 0..1 range
HOLE_SIDE = 20  # pixels; about a tenth of a 64x64 picture
HOLE_GREY = (128, 128, 128)  # no palette colour: the checker cannot mistake the hole for a shape's colour
SCENES = 64  # the full run
QUICK_SCENES = 4  # the test suite's slice: the first scenes of the full run
EXAMPLES = 4  # scenes per saved example strip


@dataclass(frozen=True)
class Recipe:
    """How each corruption is undone: the classical baselines' and the diffusion calls' settings."""
    noise_strength: tuple[tuple[str, float], ...] = (("noise_low", 0.05), ("noise_high", 0.1))  # 1 and 2 steps of 20
    noise_sampler: str = "Euler a"
    median_size: tuple[tuple[str, int], ...] = (("noise_low", 5), ("noise_high", 5))
    hole_content: str = "fill"  # the inpaint's masked content: "fill" spreads the surrounding colours in
    hole_strength: float = 0.75
    hole_blur: int = 0  # a blurred mask, grown so that it still covers the hole, blends VAE errors around it
    hole_sampler: str = "Euler"
    upscale_strength: float = 0.15  # of the hires-style pass: the least its 20 steps allow (150 steps at most)
    upscale_sampler: str = "Euler"

    def strength_for(self, corruption: str) -> float:
        return dict(self.noise_strength)[corruption]

    def median_for(self, corruption: str) -> int:
        return dict(self.median_size)[corruption]


RECIPE = Recipe()


@dataclass(frozen=True)
class Case:
    """One ground-truth scene, its picture, its seed and where its hole goes."""
    index: int
    scene: Scene
    original: Image.Image
    seed: int
    hole: Box


# ----- scenes and corruptions ------------------------------------------------------------------

def cases(count: int, size: int, namespace: str = "restoration") -> list[Case]:
    """The first ``count`` scenes of ``namespace``: each from its own seeded generator, so a short
    slice is the start of a long one ("restoration-tuning" holds the sweep's scenes)."""
    made = []
    for index in range(count):
        rng = random.Random(f"{namespace}-{index}")
        scene = random_scene(rng, size)
        made.append(Case(index, scene, render(scene, size), 1000 + index, hole_box(rng, scene, size)))
    return made


def hole_box(rng: random.Random, scene: Scene, size: int, side: int = HOLE_SIDE) -> Box:
    """A ``side`` x ``side`` box inside the picture whose centre lies within the shape's bounding box:
    the hole takes part of the shape, mostly with part of the background (an edge to restore)."""
    half = scene.size // 2
    x = min(max(scene.centre[0] + rng.randint(-half, half), side // 2), size - side // 2)
    y = min(max(scene.centre[1] + rng.randint(-half, half), side // 2), size - side // 2)
    return (x - side // 2, y - side // 2, x - side // 2 + side, y - side // 2 + side)


def add_noise(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """Gaussian noise of ``sigma`` (a share of the 0..255 range), clipped and rounded to 8 bits."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    noise = np.random.default_rng(seed).normal(0.0, sigma * 255.0, pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels + noise), 0, 255).astype(np.uint8))


def cut_hole(image: Image.Image, box: Box) -> Image.Image:
    damaged = image.convert("RGB")
    damaged.paste(HOLE_GREY, box)
    return damaged


def hole_mask(image_size: tuple[int, int], box: Box) -> Image.Image:
    """White on the box (what to repaint), black elsewhere."""
    mask = Image.new("L", image_size, 0)
    mask.paste(255, box)
    return mask


def downscale(image: Image.Image) -> Image.Image:
    """Half the size, each pixel the mean of a 2x2 block (what a camera of half the resolution sees)."""
    return image.convert("RGB").reduce(2)


def corrupt(case: Case, corruption: str) -> Image.Image:
    """What the restoration is given."""
    if corruption in NOISE_SIGMAS:
        return add_noise(case.original, NOISE_SIGMAS[corruption], seed=case.seed * 10 + CORRUPTIONS.index(corruption))
    if corruption == "hole":
        return cut_hole(case.original, case.hole)
    if corruption == "downscale":
        return downscale(case.original)
    raise ValueError(f"unknown corruption {corruption!r}")


def as_shown(corrupted: Image.Image, size: int) -> Image.Image:
    """The corrupted picture at the original's size, as a viewer shows it (a small one's pixels 2x2 each)."""
    return corrupted if corrupted.size == (size, size) else upscale(corrupted, "Nearest", size=(size, size))


# ----- baselines and restorations -------------------------------------------------------------

def baseline(case: Case, corruption: str, corrupted: Image.Image, recipe: Recipe = RECIPE) -> Image.Image:
    """The classical answer: a median filter, OpenCV's inpainting (Telea), or Lanczos."""
    if corruption in NOISE_SIGMAS:
        return Image.fromarray(cv2.medianBlur(np.asarray(corrupted), recipe.median_for(corruption)))
    if corruption == "hole":
        mask = np.asarray(hole_mask(corrupted.size, case.hole))
        return Image.fromarray(cv2.inpaint(np.asarray(corrupted), mask, 3, cv2.INPAINT_TELEA))
    if corruption == "downscale":
        return upscale(corrupted, "Lanczos", scale=2)
    raise ValueError(f"unknown corruption {corruption!r}")


def restore(engine: Engine, settings: Settings, case: Case, corruption: str, corrupted: Image.Image,
            recipe: Recipe = RECIPE) -> Image.Image:
    """The app's answer, through its engine, with the scene's caption as the prompt."""
    common = {**settings.common(), "prompt": case.scene.caption(), "seed": case.seed}
    if corruption in NOISE_SIGMAS:
        request = Img2ImgRequest(init_image=corrupted, denoising_strength=recipe.strength_for(corruption),
                                 **{**common, "sampler": recipe.noise_sampler})
    elif corruption == "hole":
        mask = hole_mask(corrupted.size, grown(case.hole, 2 * recipe.hole_blur, settings.size))
        request = InpaintRequest(init_image=corrupted, mask=mask, mask_blur=recipe.hole_blur,
                                 masked_content=recipe.hole_content, denoising_strength=recipe.hole_strength,
                                 **{**common, "sampler": recipe.hole_sampler})
    elif corruption == "downscale":
        request = hires_style(upscale(corrupted, "Lanczos", scale=2), recipe, common)
    else:
        raise ValueError(f"unknown corruption {corruption!r}")
    return engine.generate(request).images[0]


def grown(box: Box, margin: int, size: int) -> Box:
    """``box`` with ``margin`` pixels more on each side, inside the picture: with a blurred mask, the
    hole itself is then repainted fully and only the margin is blended."""
    left, top, right, bottom = box
    return (max(0, left - margin), max(0, top - margin), min(size, right + margin), min(size, bottom + margin))


def hires_style(picture: Image.Image, recipe: Recipe, common: dict) -> Img2ImgRequest:
    """An img2img request that runs the card's steps at the end of a longer schedule, as hires fix's
    second pass does (app.engine.hires.second_pass_schedule), rather than a few steps of a short one."""
    pass_ = SimpleNamespace(steps=common["steps"], hr_second_pass_steps=0, denoising_strength=recipe.upscale_strength)
    total, strength = second_pass_schedule(pass_)
    return Img2ImgRequest(init_image=picture, denoising_strength=strength,
                          **{**common, "steps": total, "sampler": recipe.upscale_sampler})


# ----- measuring ------------------------------------------------------------------------------

def as_batch(pictures: Sequence[Image.Image]) -> torch.Tensor:
    """N x 3 x H x W in 0..1."""
    return torch.from_numpy(np.stack([np.asarray(p.convert("RGB"), dtype=np.float32) / 255.0 for p in pictures])
                            ).permute(0, 3, 1, 2)


def psnr(pictures: Sequence[Image.Image], truths: Sequence[Image.Image]) -> float:
    """The PSNR of the whole set: of the mean squared error over all its pixels. (A mean of each
    picture's PSNR would be infinite whenever one picture comes back exact, as a 2x2-aligned square
    does from the nearest-neighbour view of its down-sampled picture.)"""
    return round(float(peak_signal_noise_ratio(as_batch(pictures), as_batch(truths), data_range=1.0)), 4)


def ssim(pictures: Sequence[Image.Image], truths: Sequence[Image.Image]) -> float:
    """The mean of each picture's SSIM."""
    return round(float(structural_similarity_index_measure(as_batch(pictures), as_batch(truths), data_range=1.0)), 4)


def checker_agrees(image: Image.Image, scene: Scene) -> bool:
    """Whether the checker reads the scene's shape and colour in ``image``."""
    reading = read_picture(image)
    return (reading.shape, reading.colour) == (scene.shape, scene.colour)


def agreement(pictures: Sequence[Image.Image], chosen: Sequence[Case]) -> float:
    """The share of ``pictures`` in which the checker reads their scene's shape and colour."""
    return round(float(np.mean([checker_agrees(p, case.scene) for p, case in zip(pictures, chosen)])), 4)


STAGES = ("input", "baseline", "restored")


def measure(engine: Engine, settings: Settings, chosen: Sequence[Case], corruption: str, recipe: Recipe = RECIPE,
            strips: list[Image.Image] | None = None) -> dict[str, float]:
    """``<corruption>_{psnr,ssim,checker}_{input,baseline,restored}`` and ``<corruption>_restored_wins``
    over ``chosen``; the first EXAMPLES cases' pictures (original, input, baseline, restored) go into
    ``strips`` when it is given."""
    shown: dict[str, list[Image.Image]] = {stage: [] for stage in STAGES}
    for case in chosen:
        corrupted = corrupt(case, corruption)
        pictures = {"input": as_shown(corrupted, settings.size),
                    "baseline": baseline(case, corruption, corrupted, recipe),
                    "restored": restore(engine, settings, case, corruption, corrupted, recipe)}
        for stage, picture in pictures.items():
            shown[stage].append(picture)
        if strips is not None and case.index < EXAMPLES:
            strips.append(strip([case.original, *pictures.values()]))
    truths = [case.original for case in chosen]
    figures = {}
    for stage, pictures_of_stage in shown.items():
        figures[f"{corruption}_psnr_{stage}"] = psnr(pictures_of_stage, truths)
        figures[f"{corruption}_ssim_{stage}"] = ssim(pictures_of_stage, truths)
        figures[f"{corruption}_checker_{stage}"] = agreement(pictures_of_stage, chosen)
    figures[f"{corruption}_restored_wins"] = wins(shown["restored"], shown["baseline"], truths)
    return figures


def wins(restored: Sequence[Image.Image], baseline: Sequence[Image.Image], truths: Sequence[Image.Image]) -> float:
    """The share of scenes whose restoration is closer to the original (smaller squared error) than its baseline."""
    target = as_batch(truths)
    restored_error = ((as_batch(restored) - target) ** 2).mean(dim=(1, 2, 3))
    baseline_error = ((as_batch(baseline) - target) ** 2).mean(dim=(1, 2, 3))
    return round(float((restored_error < baseline_error).float().mean()), 4)


def run_restoration(engine: Engine, settings: Settings | None = None, scenes: int = SCENES, recipe: Recipe = RECIPE,
                    examples_dir: Path | None = None,
                    progress: Callable[[str], None] = log.info) -> dict[str, float | int]:
    """Every corruption over the first ``scenes`` scenes: the figures, the checker's agreement on the
    originals and the seconds it took, the model's loading not counted (``examples_dir``: one picture
    strip per corruption saved there)."""
    settings = settings or Settings.of(engine.manager.get(DEMO_MODEL).card)
    started = time.monotonic()
    chosen = cases(scenes, settings.size)
    figures: dict[str, float | int] = {"restoration_scenes": scenes,
                                       "checker_original": agreement([c.original for c in chosen], chosen),
                                       **roundtrip(engine, settings, chosen, recipe)}
    for corruption in CORRUPTIONS:
        strips: list[Image.Image] | None = [] if examples_dir else None
        figures.update(measure(engine, settings, chosen, corruption, recipe, strips))
        progress(table_row(figures, corruption))
        if examples_dir and strips:
            examples_dir.mkdir(parents=True, exist_ok=True)
            stack(strips).save(examples_dir / f"restoration_{corruption}.png")
    figures["restoration_seconds"] = round(time.monotonic() - started, 1)
    return figures


def roundtrip(engine: Engine, settings: Settings, chosen: Sequence[Case], recipe: Recipe = RECIPE) -> dict[str, float]:
    """``roundtrip_{psnr,ssim}``: the ``noise_low`` restoration of the clean originals. What the
    autoencoder and one step lose on a picture with nothing to restore: about the best any img2img
    restoration of this model can score."""
    pictures = [restore(engine, settings, case, "noise_low", case.original, recipe) for case in chosen]
    truths = [case.original for case in chosen]
    return {"roundtrip_psnr": psnr(pictures, truths), "roundtrip_ssim": ssim(pictures, truths)}


def strip(pictures: Sequence[Image.Image], zoom: int = 4, gap: int = 4) -> Image.Image:
    """The pictures side by side, each ``zoom`` times larger (nearest neighbour), on white."""
    side = pictures[0].width * zoom
    canvas = Image.new("RGB", (len(pictures) * (side + gap) - gap, side), "white")
    for slot, picture in enumerate(pictures):
        canvas.paste(picture.resize((side, side), Image.Resampling.NEAREST), (slot * (side + gap), 0))
    return canvas


def stack(strips: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    canvas = Image.new("RGB", (strips[0].width, len(strips) * (strips[0].height + gap) - gap), "white")
    for row, picture in enumerate(strips):
        canvas.paste(picture, (0, row * (picture.height + gap)))
    return canvas


HEADER = (f"{'corruption':<11} {'PSNR in':>8} {'base':>6} {'restored':>8}   {'SSIM in':>7} {'base':>6} {'restored':>8}"
          f"   {'checker in':>10} {'base':>5} {'restored':>8}   {'wins':>4}")

LEGEND = ("(PSNR: dB, over the set; SSIM: mean per picture; checker: share read as the scene; "
          "wins: share of scenes restored closer to the original than the baseline)")


def table_row(figures: dict, corruption: str) -> str:
    def value(metric: str, stage: str) -> float:
        return figures[f"{corruption}_{metric}_{stage}"]

    return (f"{corruption:<11} {value('psnr', 'input'):>8.2f} {value('psnr', 'baseline'):>6.2f} "
            f"{value('psnr', 'restored'):>8.2f}   {value('ssim', 'input'):>7.3f} {value('ssim', 'baseline'):>6.3f} "
            f"{value('ssim', 'restored'):>8.3f}   {value('checker', 'input'):>10.2f} "
            f"{value('checker', 'baseline'):>5.2f} {value('checker', 'restored'):>8.2f}   "
            f"{figures[f'{corruption}_restored_wins']:>4.2f}")


# ----- the sweep that chose RECIPE --------------------------------------------------------------

SWEEP = {  # corruption -> the recipe fields tried, every combination
    "noise_low": {"noise_strength": [(("noise_low", s), ("noise_high", 0.1)) for s in (0.05, 0.1, 0.15, 0.2, 0.3)],
                  "noise_sampler": ["Euler", "Euler a"],
                  "median_size": [(("noise_low", k), ("noise_high", 5)) for k in (3, 5)]},
    "noise_high": {"noise_strength": [(("noise_low", 0.05), ("noise_high", s)) for s in (0.1, 0.2, 0.3, 0.4, 0.5)],
                   "noise_sampler": ["Euler", "Euler a"],
                   "median_size": [(("noise_low", 5), ("noise_high", k)) for k in (3, 5)]},
    "hole": {"hole_content": ["fill", "original"], "hole_strength": [0.5, 0.75, 1.0], "hole_blur": [0, 2],
             "hole_sampler": ["Euler", "Euler a"]},
    "downscale": {"upscale_strength": [0.15, 0.2, 0.3, 0.4], "upscale_sampler": ["Euler", "Euler a"]},
}


def sweep(engine: Engine, settings: Settings, scenes: int, progress: Callable[[str], None] = print) -> None:
    """PSNR and SSIM of each setting in SWEEP on tuning scenes (not the evaluated ones)."""
    tuning = cases(scenes, settings.size, namespace="restoration-tuning")
    for corruption, grid in SWEEP.items():
        for values in itertools.product(*grid.values()):
            changes = dict(zip(grid, values))
            figures = measure(engine, settings, tuning, corruption, replace(RECIPE, **changes))
            progress(f"{corruption} {changes}: " + table_row(figures, corruption))


# ----- command line ---------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.demo.restoration_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK_SCENES} scenes only")
    parser.add_argument("--save-examples", type=Path, metavar="DIR",
                        help=f"save a strip (original, input, baseline, restored) of {EXAMPLES} scenes per corruption")
    parser.add_argument("--sweep", type=int, metavar="SCENES", default=0,
                        help="instead of the evaluation, try the settings that chose the recipe on SCENES tuning scenes")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--outputs-dir", type=Path, default=REPO_ROOT / "outputs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    engine = Engine(EngineConfig(models_dir=args.models_dir, outputs_dir=args.outputs_dir, default_model=DEMO_MODEL,
                                 device="cpu", preview_every=0))
    try:
        settings = Settings.of(engine.manager.get(DEMO_MODEL).card)
        if args.sweep:
            sweep(engine, settings, args.sweep)
            return 0
        print(f"{HEADER}\n{LEGEND}")
        figures = run_restoration(engine, settings, QUICK_SCENES if args.quick else SCENES,
                                  examples_dir=args.save_examples, progress=print)
    finally:
        engine.shutdown()
    print(f"img2img of the clean originals (noise_low's pass): PSNR {figures['roundtrip_psnr']:.2f}, "
          f"SSIM {figures['roundtrip_ssim']:.3f}")
    print(f"checker on the originals {figures['checker_original']:.2f}; {figures['restoration_scenes']} scenes "
          f"in {figures['restoration_seconds']} s ({settings.size}x{settings.size}, {settings.steps} steps, "
          f"CFG {settings.cfg_scale:g})")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
