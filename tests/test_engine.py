"""The engine end to end on tiny models: determinism, parity with diffusers, shared weights,
inpaint exactness outside the mask, events, cancel, failure, outputs."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForImage2Image, DDIMScheduler, DiffusionPipeline, EulerAncestralDiscreteScheduler
from PIL import Image

from app.engine import (
    Engine,
    EngineConfig,
    Img2ImgRequest,
    InpaintRequest,
    JobCancelled,
    JobFailed,
    LoraSpec,
    Txt2ImgRequest,
)
from app.engine.outputs import read_parameters

SMALL = dict(width=64, height=64, steps=4)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_same_seed_gives_same_pixels_and_other_seed_differs(engine: Engine) -> None:
    first = engine.generate(Txt2ImgRequest(prompt="a red circle", seed=42, save=False, **SMALL))
    again = engine.generate(Txt2ImgRequest(prompt="a red circle", seed=42, save=False, **SMALL))
    other = engine.generate(Txt2ImgRequest(prompt="a red circle", seed=43, save=False, **SMALL))
    assert first.seeds == [42]
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert np.abs(pixels(first.images[0]) - pixels(other.images[0])).mean() > 1.0


def test_rng_source_is_written_as_a1111_does(models_dir: Path, tmp_path: Path) -> None:
    """``rng="gpu"`` draws on the pipeline's CUDA device; without one it draws on the CPU, as A1111 does, so
    the pixels equal those of ``rng="cpu"``. The text names where the noise was drawn: ``RNG: CPU`` for
    both here; noise drawn on CUDA is A1111's default, GPU, which its text leaves out."""
    from app.engine.infotext import format_infotext
    from app.engine.tasks import noise_generators, noise_source

    common = dict(models_dir=models_dir, outputs_dir=tmp_path, default_model="tiny-sd1", device="cpu",
                  preview_every=0)
    request = Txt2ImgRequest(prompt="a red circle", seed=3, sampler="Euler a", save=False, **SMALL)
    results = {}
    for rng in ("cpu", "gpu"):
        engine = Engine(EngineConfig(**common, rng=rng))
        try:
            results[rng] = engine.generate(request)
        finally:
            engine.shutdown()
    assert np.array_equal(pixels(results["cpu"].images[0]), pixels(results["gpu"].images[0]))
    assert all(", RNG: CPU, " in result.infotexts[0] for result in results.values())
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [noise_source(cuda, "gpu"), noise_source(cuda, "cpu"), noise_source(cpu, "gpu")] == ["GPU", "CPU", "CPU"]
    assert "RNG" not in format_infotext(request, seed=3, model_name="m", model_hash=None, rng="GPU")
    assert [g.device for g in noise_generators([1, 2], cuda, "cpu")] == [cpu, cpu]
    assert noise_generators([1], cpu, "gpu")[0].device == cpu
    assert torch.equal(torch.randn(4, generator=noise_generators([9], cpu, "cpu")[0]),
                       torch.randn(4, generator=torch.Generator().manual_seed(9)))


def test_engine_equals_direct_diffusers_call(engine: Engine, models_dir: Path) -> None:
    request = Txt2ImgRequest(prompt="a blue square", negative_prompt="blurry", seed=7, cfg_scale=5.0,
                             sampler="Euler a", save=False, **SMALL)
    ours = engine.generate(request).images[0]

    direct = DiffusionPipeline.from_pretrained(models_dir / "Stable-diffusion" / "tiny-sd1", local_files_only=True)
    # A1111 samples over the full 999..0 range ("linspace"), not the config's "leading" spacing.
    direct.scheduler = EulerAncestralDiscreteScheduler.from_config(direct.scheduler.config, timestep_spacing="linspace")
    direct.set_progress_bar_config(disable=True)
    theirs = direct(
        "a blue square", negative_prompt="blurry", num_inference_steps=4, guidance_scale=5.0, width=64, height=64,
        generator=[torch.Generator("cpu").manual_seed(7)],
    ).images[0]
    assert np.array_equal(pixels(ours), pixels(theirs))


def test_variants_share_the_txt2img_weights(engine: Engine) -> None:
    loaded = engine.manager.get("tiny-sd1")
    img2img = loaded.pipeline("img2img")
    inpaint = loaded.pipeline("inpaint")
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(img2img, name) is getattr(loaded.txt2img, name)
        assert getattr(inpaint, name) is getattr(loaded.txt2img, name)
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert type(inpaint).__name__ == "StableDiffusionInpaintPipeline"


def test_batches_follow_a1111_seed_progression(engine: Engine) -> None:
    result = engine.generate(Txt2ImgRequest(prompt="a circle", seed=100, batch_count=2, batch_size=2, save=False, **SMALL))
    assert result.seeds == [100, 101, 102, 103]
    single = engine.generate(Txt2ImgRequest(prompt="a circle", seed=102, save=False, **SMALL)).images[0]
    # Batched convolutions may round differently, so allow a pixel level or two.
    assert np.abs(pixels(result.images[2]) - pixels(single)).max() <= 2


def test_outputs_are_saved_with_a1111_parameters(engine: Engine, outputs_dir: Path) -> None:
    result = engine.generate(Txt2ImgRequest(prompt="a green triangle, on grass", seed=5, batch_size=2, **SMALL))
    folder = outputs_dir / "txt2img-images" / dt.date.today().isoformat()
    assert [p.name for p in result.paths] == ["00000-5.png", "00001-6.png"]
    assert all(p.parent == folder for p in result.paths)
    assert sorted(p.name for p in folder.iterdir()) == ["00000-5.png", "00001-6.png"]  # no temp files left
    for path, text, image in zip(result.paths, result.infotexts, result.images):
        assert read_parameters(path) == text
        assert np.array_equal(pixels(Image.open(path)), pixels(image))
    assert result.infotexts[0].startswith("a green triangle, on grass\nSteps: 4, Sampler: Euler a")
    assert "Seed: 5," in result.infotexts[0] and "Seed: 6," in result.infotexts[1]
    assert "Model: tiny-sd1" in result.infotexts[0]
    again = engine.generate(Txt2ImgRequest(prompt="x", seed=9, **SMALL))
    assert again.paths[0].name == "00002-9.png"


def test_events_stream_progress_previews_and_eta(engine: Engine) -> None:
    job = engine.submit(Txt2ImgRequest(prompt="a circle", seed=1, width=64, height=64, steps=5, batch_count=2))
    events = list(job.events(timeout=60))
    phases = [e.phase for e in events]
    assert phases[-1] == "done"
    assert phases.index("loading") < phases.index("sampling") < phases.index("decoding") < phases.index("saving")
    sampling = [e for e in events if e.phase == "sampling"]
    assert [(e.batch_index, e.step) for e in sampling] == [(b, s) for b in range(2) for s in range(1, 6)]
    assert all(e.total_steps == 5 for e in sampling)
    assert sampling[-1].eta_seconds == pytest.approx(0.0, abs=1e-6) and sampling[0].eta_seconds > 0
    previews = [e.preview for e in sampling if e.preview is not None]
    assert len(previews) >= 4 and previews[0].size == (32, 32)  # latent-sized: not a VAE decode
    assert np.asarray(previews[0]).std() > 0


def test_img2img_runs_strength_times_steps_and_equals_diffusers(engine: Engine, models_dir: Path) -> None:
    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    job = engine.submit(Img2ImgRequest(prompt="a circle", seed=4, init_image=source, denoising_strength=0.5,
                                       sampler="DDIM", save=False, width=64, height=64, steps=10))
    events = list(job.events(timeout=60))
    assert [e.step for e in events if e.phase == "sampling"] == [1, 2, 3, 4, 5]
    ours = events[-1].result.images[0]

    direct = AutoPipelineForImage2Image.from_pretrained(models_dir / "Stable-diffusion" / "tiny-sd1",
                                                        local_files_only=True)
    direct.scheduler = DDIMScheduler.from_config(direct.scheduler.config, timestep_spacing="leading", steps_offset=1,
                                                 clip_sample=False, set_alpha_to_one=False)
    theirs = direct("a circle", image=source, strength=0.5, num_inference_steps=10, guidance_scale=7.0,
                    generator=[torch.Generator("cpu").manual_seed(4)]).images[0]
    assert np.array_equal(pixels(ours), pixels(theirs))


def _square_mask(size: int = 64, box: tuple[int, int, int, int] = (16, 16, 40, 40)) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, box)
    return mask


@pytest.mark.parametrize("area", ["Whole picture", "Only masked"])
@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sd1-inpainting"])
def test_inpaint_leaves_pixels_outside_the_blurred_mask_unchanged(engine: Engine, area: str, model: str) -> None:
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = _square_mask()
    request = InpaintRequest(prompt="a red circle", seed=11, init_image=source, mask=mask, mask_blur=2,
                             inpaint_area=area, masked_padding=8, denoising_strength=0.9, model=model, save=False,
                             **SMALL)
    out = pixels(engine.generate(request).images[0])
    from app.engine.masks import prepare_mask

    blurred = np.asarray(prepare_mask(mask, 2))
    outside, inside = blurred == 0, blurred == 255
    assert outside.sum() > 2000
    assert np.array_equal(out[outside], pixels(source)[outside])
    assert np.abs(out[inside] - pixels(source)[inside]).mean() > 10  # the masked area was repainted


def test_inpainting_checkpoint_runs_as_nine_channels_and_does_txt2img(engine: Engine) -> None:
    loaded = engine.manager.get("tiny-sd1-inpainting")
    assert loaded.is_inpainting_model and loaded.pipeline("inpaint").unet.config.in_channels == 9
    result = engine.generate(Txt2ImgRequest(prompt="a square", model="tiny-sd1-inpainting", seed=1, save=False, **SMALL))
    assert result.images[0].size == (64, 64) and pixels(result.images[0]).std() > 0
    again = engine.generate(Img2ImgRequest(prompt="a square", model="tiny-sd1-inpainting", seed=1, save=False,
                                           init_image=result.images[0], **SMALL))
    assert again.images[0].size == (64, 64) and not np.array_equal(pixels(again.images[0]), pixels(result.images[0]))


@pytest.mark.parametrize("model", ["tiny-sd2-v", "tiny-sdxl"])
def test_other_architectures_run_every_task(engine: Engine, model: str) -> None:
    source = engine.generate(Txt2ImgRequest(prompt="a star", model=model, seed=2, save=False, **SMALL)).images[0]
    assert pixels(source).std() > 0
    img = engine.generate(Img2ImgRequest(prompt="a star", model=model, seed=2, init_image=source, save=False, **SMALL))
    inp = engine.generate(InpaintRequest(prompt="a star", model=model, seed=2, init_image=source, mask=_square_mask(),
                                         save=False, **SMALL))
    assert img.images[0].size == inp.images[0].size == (64, 64)
    if model == "tiny-sd2-v":
        assert engine.manager.get(model).scheduler_config["prediction_type"] == "v_prediction"


def test_cancel_a_running_job_stops_within_a_step(engine: Engine, outputs_dir: Path) -> None:
    job = engine.submit(Txt2ImgRequest(prompt="long", seed=1, width=64, height=64, steps=150, batch_count=3))
    steps_seen = []
    for event in job.events(timeout=60):
        if event.phase == "sampling":
            steps_seen.append(event.step)
            if len(steps_seen) == 3:
                assert engine.cancel(job.id)
    assert event.phase == "cancelled"
    assert len(steps_seen) <= 4  # at most the step that was running when cancel came
    with pytest.raises(JobCancelled):
        job.wait(1)
    assert not (outputs_dir / "txt2img-images").exists()
    assert engine.generate(Txt2ImgRequest(prompt="after", seed=1, save=False, **SMALL)).images  # worker lives on


def test_cancel_a_queued_job_and_only_by_its_owner(engine: Engine) -> None:
    blocker = engine.submit(Txt2ImgRequest(prompt="slow", seed=1, width=64, height=64, steps=60), owner="alice")
    queued = engine.submit(Txt2ImgRequest(prompt="waiting", seed=1, **SMALL), owner="bob")
    with pytest.raises(PermissionError):
        engine.cancel(queued.id, owner="alice")
    assert engine.cancel(queued.id, owner="bob")
    events = list(queued.events(timeout=30))
    assert events[0].phase == "queued" and events[0].position >= 1
    assert events[-1].phase == "cancelled" and not any(e.phase == "sampling" for e in events)
    engine.cancel(blocker.id, owner="alice")
    with pytest.raises(JobCancelled):
        blocker.wait(30)


def test_a_failing_job_fails_alone_and_the_worker_lives_on(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    real_get = engine.manager.get

    def out_of_memory(name: str | None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(engine.manager, "get", out_of_memory)
    job = engine.submit(Txt2ImgRequest(prompt="big", seed=1, **SMALL))
    with pytest.raises(JobFailed, match="Out of device memory"):
        job.wait(30)
    monkeypatch.setattr(engine.manager, "get", real_get)
    assert engine.worker.alive
    assert engine.generate(Txt2ImgRequest(prompt="fine", seed=1, save=False, **SMALL)).images


def test_broken_model_fails_with_a_clear_message(engine: Engine, models_dir: Path) -> None:
    broken = models_dir / "Stable-diffusion" / "broken-model"
    broken.mkdir(exist_ok=True)
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}')
    try:
        job = engine.submit(Txt2ImgRequest(prompt="x", model="broken-model", seed=1, **SMALL))
        with pytest.raises(JobFailed, match="broken-model"):
            job.wait(30)
    finally:
        import shutil

        shutil.rmtree(broken)


def test_round_robin_between_owners(engine: Engine) -> None:
    order: list[str] = []
    lock = threading.Lock()
    blocker = engine.submit(Txt2ImgRequest(prompt="hold", seed=1, width=64, height=64, steps=30), owner="carol")
    jobs = [engine.submit(Txt2ImgRequest(prompt=f"a{i}", seed=1, save=False, width=64, height=64, steps=1), owner="alice")
            for i in range(3)]
    jobs.append(engine.submit(Txt2ImgRequest(prompt="b0", seed=1, save=False, width=64, height=64, steps=1), owner="bob"))
    for job in jobs:

        def record(job=job) -> None:
            for event in job.events(timeout=60):
                if event.phase == "loading":
                    with lock:
                        order.append(job.description.split(": ")[1])
        threading.Thread(target=record, daemon=True).start()
    blocker.wait(60)
    for job in jobs:
        job.wait(60)
    time.sleep(0.1)
    assert order == ["a0", "b0", "a1", "a2"]


def test_hub_id_offline_gives_a_clear_error(engine: Engine) -> None:
    job = engine.submit(Txt2ImgRequest(prompt="x", model="someone/some-model", seed=1, **SMALL))
    with pytest.raises(JobFailed, match="cannot reach it|models/Stable-diffusion"):
        job.wait(60)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(width=100), "multiple of 8"),
        (dict(steps=0), "Steps"),
        (dict(sampler="Nonsense"), "Nonsense"),
        (dict(model="no-such-model"), "No checkpoint called 'no-such-model'"),
        (dict(vae="no-such-vae"), "No VAE"),
        (dict(batch_size=0), "Batch size"),
        (dict(loras=(LoraSpec("style"),)), "No LoRA called 'style'"),
    ],
)
def test_bad_requests_get_clear_errors(engine: Engine, changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        engine.submit(Txt2ImgRequest(prompt="x", **{**SMALL, **changes}))
    assert len(engine.worker.queue) == 0


def test_bad_img2img_and_inpaint_requests(engine: Engine) -> None:
    image = Image.new("RGB", (64, 64))
    with pytest.raises(ValueError, match="input image"):
        engine.submit(Img2ImgRequest(prompt="x", **SMALL))
    with pytest.raises(ValueError, match="Denoising strength"):
        engine.submit(Img2ImgRequest(prompt="x", init_image=image, denoising_strength=1.5, **SMALL))
    with pytest.raises(ValueError, match="same size"):
        engine.submit(InpaintRequest(prompt="x", init_image=image, mask=Image.new("L", (32, 32)), **SMALL))
    job = engine.submit(InpaintRequest(prompt="x", init_image=image, mask=Image.new("L", (64, 64)), **SMALL))
    with pytest.raises(JobFailed, match="mask is empty"):
        job.wait(30)


def test_vae_override_changes_output_and_is_recorded(engine: Engine, models_dir: Path) -> None:
    from app.engine.tiny import tiny_vae

    torch.manual_seed(123)
    tiny_vae().save_pretrained(models_dir / "VAE" / "other-vae")
    base = engine.generate(Txt2ImgRequest(prompt="x", seed=1, save=False, **SMALL))
    other = engine.generate(Txt2ImgRequest(prompt="x", seed=1, vae="other-vae", save=False, **SMALL))
    assert np.abs(pixels(base.images[0]) - pixels(other.images[0])).mean() > 1
    assert "VAE: other-vae" in other.infotexts[0]
    loaded = engine.manager.get(None)
    assert loaded.pipeline("txt2img", None, None).vae is loaded.txt2img.vae  # the base is untouched
    again = engine.generate(Txt2ImgRequest(prompt="x", seed=1, save=False, **SMALL))
    assert np.array_equal(pixels(again.images[0]), pixels(base.images[0]))


def test_skip_drops_the_batch_being_drawn_and_goes_on(engine: Engine) -> None:
    """A1111's Skip: asked before the job's first step, the first batch is dropped, the others are drawn."""
    blocker = engine.submit(Txt2ImgRequest(prompt="keep the worker busy", seed=1, save=False, **SMALL), owner="other")
    job = engine.submit(Txt2ImgRequest(prompt="a circle", seed=10, batch_count=3, save=False, **SMALL), owner="me")
    assert engine.skip("me")
    blocker.wait(60)
    result = job.wait(120)
    assert result.seeds == [11, 12] and len(result.images) == 2
    assert not engine.skip("me")  # nothing left to skip
