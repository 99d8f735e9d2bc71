"""Training and evaluation as engine jobs: progress events, Stop, the report, and the hand-off to
generation without a restart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shape_data import dot_dataset

from app.engine import Engine, EngineConfig, Txt2ImgRequest
from app.engine.tiny import build_tiny_pipeline
from app.demo import register_scorers
from app.training.config import TrainConfig
from app.training.evaluate import Scorers
from app.training.job import Training


@pytest.fixture
def setup(tmp_path: Path):
    models = tmp_path / "models"
    build_tiny_pipeline("sd1", seed=0).save_pretrained(models / "Stable-diffusion" / "tiny")
    (models / "Lora").mkdir()
    data = dot_dataset(tmp_path / "data")
    engine = Engine(EngineConfig(models_dir=models, outputs_dir=tmp_path / "outputs", default_model="tiny",
                                 device="cpu", preview_every=0))
    yield engine, data
    engine.shutdown()


def jobs(engine: Engine) -> Training:
    """Training jobs on ``engine`` with the demo model's checker registered, as app/cli.py wires them."""
    scorers = Scorers()
    register_scorers(scorers)
    return Training(engine, scorers)


def _config(engine: Engine, data: Path, name: str, **changes) -> TrainConfig:
    values = dict(base_model="tiny", dataset=data, output_name=name, models_dir=engine.config.models_dir,
                  outputs_dir=engine.config.outputs_dir, rank=4, alpha=4.0, resolution=64, bucket_step=8,
                  max_steps=4, learning_rate=5e-3, device="cpu", sample_every=2, sample_prompts=("a red circle",))
    values.update(changes)
    return TrainConfig(**values)


def test_training_job_reports_progress_writes_a_report_and_hands_off(setup) -> None:
    engine, data = setup
    job = jobs(engine).submit_training(_config(engine, data, "job-lora"))
    queued_generation = engine.submit(Txt2ImgRequest(prompt="a red circle", steps=2, width=64, height=64, seed=3))
    events = list(job.events())
    training = [e for e in events if e.phase == "training"]
    assert [e.step for e in training] == [1, 2, 3, 4] and all(e.total_steps == 4 for e in training)
    assert all(np.isfinite(e.loss) for e in training) and "steps/s" in training[-1].message
    assert [len(e.samples) for e in training] == [0, 1, 0, 1]  # every 2 steps, one prompt
    info = events[-1].result.info
    assert events[-1].phase == "done" and info["steps"] == 4 and not info["stopped_early"]
    lora_path = Path(info["lora_path"])
    assert lora_path == engine.config.models_dir / "Lora" / "job-lora.safetensors"
    report = json.loads(Path(info["report"]["json"]).read_text())
    assert report["lora"] == "job-lora" and report["losses"] == info["losses"] and report["mean_pixel_change"] > 0
    for key in ("grid", "loss", "markdown"):
        assert Path(info["report"][key]).is_file() and Path(info["report"][key]).parent == lora_path.parent
    with Image.open(info["report"]["grid"]) as grid:
        assert grid.size == (128, 18 + 2 * 64)  # base | with LoRA, one row per seed
    # generation waited for the training job, then the new LoRA works with no restart
    assert queued_generation.wait(120).images
    plain = engine.generate(Txt2ImgRequest(prompt="a red circle", steps=3, width=64, height=64, seed=5))
    styled = engine.generate(Txt2ImgRequest(prompt="a red circle <lora:job-lora:1>", steps=3, width=64, height=64,
                                            seed=5))
    assert 'Lora hashes: "job-lora: ' in styled.infotexts[0]
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(styled.images[0]))


def test_stopping_a_training_job_keeps_the_steps_done(setup) -> None:
    engine, data = setup
    job = jobs(engine).submit_training(_config(engine, data, "stopped", max_steps=500, sample_every=0))
    for event in job.events():
        if event.phase == "training" and event.step == 2:
            engine.cancel(job.id)
    info = job.final_event.result.info
    assert job.final_event.phase == "done" and info["stopped_early"] and 2 <= info["steps"] < 500
    assert Path(info["lora_path"]).is_file()
    assert (engine.config.outputs_dir / "training" / "stopped" / "checkpoints" / f"step-{info['steps']:06d}").is_dir()


def test_bad_training_requests_fail_before_queueing(setup) -> None:
    engine, data = setup
    with pytest.raises(ValueError, match="No checkpoint called 'nope'"):
        jobs(engine).submit_training(_config(engine, data, "x", base_model="nope"))
    with pytest.raises(ValueError, match="does not exist"):
        jobs(engine).submit_training(_config(engine, data / "missing", "x"))
    with pytest.raises(ValueError, match="Output name"):
        jobs(engine).submit_training(_config(engine, data, "../escape"))


def test_any_lora_can_be_evaluated_on_demand(setup) -> None:
    engine, data = setup
    jobs(engine).submit_training(_config(engine, data, "to-evaluate", max_steps=2, sample_every=0)).wait(300)
    for suffix in (".report.json", ".grid.png", ".report.md"):
        (engine.config.models_dir / "Lora" / f"to-evaluate{suffix}").unlink()
    result = jobs(engine).submit_evaluation("to-evaluate", "tiny", ("a blue circle",), size=64, steps=4).wait(300)
    assert Path(result.info["report"]["grid"]).is_file()
    assert "a blue circle" in Path(result.info["report"]["json"]).read_text()


def test_the_report_scores_samples_with_the_checker_the_base_models_card_names(setup) -> None:
    """A base model whose card says ``"evaluator": "shapes"`` (the bundled demo model's) gets the shapes
    checker's adherence before and after, computed from the very samples in the grid."""
    from app.demo.scoring import adherence

    engine, data = setup
    card = engine.config.models_dir / "Stable-diffusion" / "tiny" / "lora_studio.json"
    card.write_text(json.dumps({"evaluator": "shapes", "default_width": 64, "default_steps": 4}))
    jobs(engine).submit_training(_config(engine, data, "scored", max_steps=2, sample_every=0)).wait(300)
    prompts = ("a red circle on a white background", "a blue square on a white background")
    result = jobs(engine).submit_evaluation("scored", "tiny", prompts, size=64, steps=4).wait(300)
    report = json.loads(Path(result.info["report"]["json"]).read_text())
    assert "shapes checker" in report["score_note"]
    sheet = Image.open(result.info["report"]["grid"])
    cells = [[sheet.crop((col * 64, 18 + row * 64, col * 64 + 64, 18 + row * 64 + 64)) for row in range(4)]
             for col in (0, 1)]
    asked = [p for p in prompts for _ in report["seeds"]]
    assert report["score_before"] == adherence(cells[0], asked)
    assert report["score_after"] == adherence(cells[1], asked)
    assert "score:" in Path(result.info["report"]["markdown"]).read_text()
