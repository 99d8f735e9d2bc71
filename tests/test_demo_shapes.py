"""The demo world's generator and the checker that reads its pictures back."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from app.demo.checker import read_picture
from app.demo.shapes import HELD_OUT_PAIRS, HELD_OUT_SHAPE, PALETTE, SHAPES, random_scene, render, sample


def test_the_checker_reads_ground_truth_at_least_99_percent_right() -> None:
    items = sample(7, 600, shapes=(*SHAPES, HELD_OUT_SHAPE), allow_held_out_pairs=True)
    readings = [(read_picture(picture), scene) for picture, _, scene in items]
    right = sum((r.shape, r.colour, r.background) == (s.shape, s.colour, s.background) for r, s in readings)
    assert right / len(items) >= 0.99, right / len(items)


def test_generation_is_reproducible_and_keeps_the_held_out_pairs_out() -> None:
    first = sample(3, 200)
    again = sample(3, 200)
    assert [c for _, c, _ in first] == [c for _, c, _ in again]
    assert all(a.tobytes() == b.tobytes() for (a, _, _), (b, _, _) in zip(first, again))
    scenes = [s for _, _, s in first]
    assert not any((s.shape, s.colour) in HELD_OUT_PAIRS for s in scenes)
    assert all(s.shape != HELD_OUT_SHAPE and s.colour != s.background for s in scenes)
    assert {s.shape for s in scenes} == set(SHAPES) and len({s.background for s in scenes}) == len(PALETTE)
    captions = {c for _, c, _ in first}
    assert len(captions) > 150 and all(s.colour in c and s.shape in c for (_, c, s) in first)


def test_a_star_is_read_by_its_notches_even_with_an_arm_missing() -> None:
    from PIL import ImageDraw

    from app.demo.shapes import Scene, star_points

    scene = Scene(HELD_OUT_SHAPE, "red", "white", 40, (32, 32))
    drawn = read_picture(render(scene))
    assert (drawn.notches, drawn.lobes) == (5, 5)
    blunt = render(scene)
    corners = star_points(32, 32, 20)
    ImageDraw.Draw(blunt).polygon([corners[0], corners[1], corners[2]], fill=PALETTE["red"])  # fill one notch
    reading = read_picture(blunt)
    assert (reading.shape, reading.notches) == (HELD_OUT_SHAPE, 4)
    for shape in SHAPES:  # the convex shapes have none, at the smallest size drawn too
        for size in (16, 40):
            reading = read_picture(render(Scene(shape, "blue", "yellow", size, (32, 32))))
            assert (reading.shape, reading.notches) == (shape, 0)
            if shape != "circle":  # a circle's outline has no lobes to count
                assert reading.lobes == {"triangle": 3, "square": 4}[shape]


GENERATED = Path(__file__).parent / "data" / "generated"


def test_generated_pictures_are_read_as_a_person_sees_them() -> None:
    """Pictures the demo model drew with star LoRAs, named by what a person sees in them (looked at
    one by one): stars with two blunt arms (three notches, five-lobed outlines) are stars; triangles
    with three notches of soft edges and lopsided blobs are not."""
    pictures = sorted(GENERATED.glob("*.png"))
    assert len(pictures) == 11
    for path in pictures:
        seen, colour, _, background = path.stem.split("-")[:4]
        reading = read_picture(Image.open(path))
        assert (reading.colour, reading.background) == (colour, background), path.name
        if seen == "blob":
            assert reading.shape != HELD_OUT_SHAPE, path.name
        else:
            assert reading.shape == seen, (path.name, reading)
        if seen == HELD_OUT_SHAPE:  # so none passes by its notches alone
            assert (reading.notches, reading.lobes) == (3, 5), path.name


def test_stars_are_drawn_large_enough_for_their_points() -> None:
    from app.demo.shapes import smallest_size

    rng = random.Random(2)
    stars = [random_scene(rng, 64, (HELD_OUT_SHAPE,)) for _ in range(200)]
    others = [random_scene(rng, 64) for _ in range(200)]
    assert min(s.size for s in stars) == smallest_size(HELD_OUT_SHAPE, 64) == 32
    assert min(s.size for s in others) == smallest_size("circle", 64) == 16


def test_the_decoder_stage_changes_the_decoder_and_keeps_the_latent_space() -> None:
    import torch

    from app.demo.build import make_vae, refine_decoder

    torch.manual_seed(0)
    vae = make_vae()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    losses = refine_decoder(vae, steps=2, batch=2, seed=0, device=torch.device("cpu"))
    after = vae.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert len(losses) == 2 and changed
    assert all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed), sorted(changed)[:5]
    assert not any(p.requires_grad for p in vae.parameters())


def test_an_empty_picture_has_no_shape() -> None:
    scene = random_scene(random.Random(1))
    blank = render(scene).copy()
    blank.paste(PALETTE[scene.background], (0, 0, blank.width, blank.height))
    reading = read_picture(blank)
    assert reading.shape is None and reading.background == scene.background


def test_the_build_pipeline_runs_end_to_end_and_loads_in_the_engine(tmp_path) -> None:
    """--quick: a few steps of each stage. The full build is `python -m app.demo.build` (not in CI)."""
    from app.demo.build import main as build_main
    from app.demo.tokenizer import shapes_tokenizer
    from app.engine import Engine, EngineConfig, Txt2ImgRequest

    out = tmp_path / "models" / "Stable-diffusion" / "demo-shapes"
    build_main(["--quick", "--out", str(out)])
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 40 * 2**20
    assert {p.name for p in files} >= {"model_index.json", "lora_studio.json", "build_info.json", "vocab.json",
                                       "merges.txt"}
    assert not any(p.suffix in (".bin", ".pt", ".ckpt") for p in files)
    tokens = shapes_tokenizer()("a yellow star on a black background").input_ids
    assert len(tokens) == 9 and len(shapes_tokenizer()) < 1000  # each caption word is one token
    import json

    from transformers import CLIPTokenizer

    vocab = json.loads((out / "tokenizer" / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (out / "tokenizer" / "merges.txt").read_text().splitlines()[1:]]
    from_files = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    assert from_files("a yellow star on a black background").input_ids == tokens
    engine = Engine(EngineConfig(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs",
                                 default_model="demo-shapes", device="cpu", preview_every=0))
    try:
        result = engine.generate(Txt2ImgRequest(prompt="a red circle on a blue background", width=64, height=64,
                                                steps=4, seed=1, save=False))
    finally:
        engine.shutdown()
    assert result.images[0].size == (64, 64) and "Model: demo-shapes" in result.infotexts[0]


def test_prompts_are_read_in_every_caption_template() -> None:
    from app.demo.scoring import Request, parse_prompt
    from app.demo.shapes import TEMPLATES

    for template in TEMPLATES:
        prompt = template.format(colour="orange", shape="star", background="white") + " <lora:demo-star:0.8>"
        assert parse_prompt(prompt) == Request("star", "orange", "white")
    assert parse_prompt("a photo of a cat").shape is None


def test_adherence_counts_pictures_that_show_their_prompt() -> None:
    from app.demo.scoring import adherence

    items = sample(21, 40, allow_held_out_pairs=True)
    pictures = [picture for picture, _, _ in items]
    assert adherence(pictures, [caption for _, caption, _ in items]) == 1.0
    other = {scene: next(c for c in PALETTE if c not in (scene.colour, scene.background)) for _, _, scene in items}
    wrong_colour = [scene.caption().replace(scene.colour, other[scene], 1) for _, _, scene in items]
    assert adherence(pictures, wrong_colour) == 0.0
    half = [caption if i % 2 else wrong for i, (caption, wrong) in
            enumerate(zip([c for _, c, _ in items], wrong_colour))]
    assert adherence(pictures, half) == 0.5


def test_the_shipped_model_loads_through_the_normal_manager(tmp_path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from app.demo import BUNDLED_PATH, DEMO_MODEL
    from app.engine import Engine, EngineConfig

    files = [p for p in BUNDLED_PATH.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".txt"}
    engine = Engine(EngineConfig(models_dir=BUNDLED_PATH.parent.parent, outputs_dir=tmp_path, default_model=DEMO_MODEL,
                                 device="cpu", preview_every=0))
    try:
        loaded = engine.manager.get(DEMO_MODEL)
        pipe = loaded.txt2img
        assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.unet, UNet2DConditionModel)
        assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
        assert isinstance(pipe.scheduler, DDIMScheduler) and not pipe.scheduler.config.clip_sample
        assert loaded.card["evaluator"] == "shapes" and len(loaded.card["example_prompts"]) >= 3
        assert {loaded.pipeline("inpaint").unet, loaded.pipeline("img2img").unet} == {pipe.unet}
    finally:
        engine.shutdown()


def test_a_slice_of_the_evaluation_shows_the_model_follows_prompts(tmp_path) -> None:
    """A handful of each measurement of ``python -m app.demo.evaluate`` (the full run is not in CI)."""
    from app.demo import BUNDLED_PATH
    from app.demo.evaluate import QUICK, evaluate

    evaluation = evaluate(BUNDLED_PATH.parent.parent, tmp_path, QUICK)
    result = evaluation.figures
    assert result["txt2img_adherence"] >= 5 / 7  # 7 prompts: a clear majority right
    assert result["inpaint_adherence"] >= 3 / 4
    assert result["inpaint_outside_max_diff"] == 0
    distance = evaluation.details["img2img_distance_by_strength"]  # 2 pictures: compare well-spaced strengths
    assert distance["0.2"] < distance["0.6"] < distance["1.0"]


def test_the_star_lora_pictures_cover_the_palette_and_leave_the_evaluated_pairs_unseen(tmp_path) -> None:
    from app.demo.evaluate import preserved_prompts, star_dataset, star_pairs

    unseen = set(star_pairs(16))
    folder = star_dataset(tmp_path / "stars", 30, unseen=unseen)
    readings = [read_picture(Image.open(folder / f"{index:03d}.png")) for index in range(30)]
    captions = [(folder / f"{index:03d}.txt").read_text() for index in range(30)]
    stars = [(r.colour, r.background) for r in readings]
    assert all(r.shape == HELD_OUT_SHAPE for r in readings)
    assert all(f"{colour} star" in caption for (colour, _), caption in zip(stars, captions))
    assert len(set(stars)) == 30 and not set(stars) & unseen
    assert all(sum(c == colour for c, _ in stars) >= 3 and sum(b == colour for _, b in stars) >= 3 for colour in PALETTE)
    preserved = preserved_prompts()  # every ordinary shape in every pair, and never the star
    assert len(preserved) == len(SHAPES) * len(PALETTE) * (len(PALETTE) - 1) == len(set(preserved))
    assert not any(HELD_OUT_SHAPE in prompt for prompt in preserved)


def test_the_star_lora_is_a_fixed_number_of_steps_and_the_same_tensors_each_run(tmp_path) -> None:
    """The evaluation's figures must not depend on the machine: the LoRA is a step count, not a time budget,
    and two runs write the same LoRA bit for bit."""
    from dataclasses import replace

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from app.demo import BUNDLED_PATH, DEMO_MODEL
    from app.demo.evaluate import Budget, train_star_lora

    models = tmp_path / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    (models / "Stable-diffusion" / DEMO_MODEL).symlink_to(BUNDLED_PATH, target_is_directory=True)
    budget = replace(Budget(), lora_steps=3, lora_images=8)
    runs = [train_star_lora(models, tmp_path / f"out{index}", budget, f"star{index}") for index in range(2)]
    assert [run.steps for run in runs] == [3, 3] and all(run.seconds > 0 for run in runs)
    first, second = (load_file(models / "Lora" / f"star{index}.safetensors") for index in range(2))
    assert first.keys() == second.keys() and len(first) > 0
    assert all(torch.equal(first[key], second[key]) for key in first)
    with safe_open(models / "Lora" / "star0.safetensors", "pt") as file:
        assert file.metadata()["ss_steps"] == "3"
