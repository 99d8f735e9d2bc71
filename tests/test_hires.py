"""Hires fix on tiny models and the demo model: the final size, both passes in the progress, the same
pixels for the same seed, latent against pixel upscalers, the infotext and reading it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.engine import Engine, Txt2ImgRequest
from app.engine.hires import hires_size
from app.engine.infotext import parse_infotext
from app.engine.infotext_fields import request_from_infotext

SMALL = dict(width=64, height=64, steps=6, save=False)


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_second_pass_runs_its_steps_at_the_end_of_a_longer_schedule() -> None:
    from app.engine.hires import second_pass_schedule

    for steps, denoising in ((20, 0.5), (20, 0.7), (12, 0.35), (7, 1.0), (30, 0.05)):
        request = Txt2ImgRequest(steps=steps, enable_hr=True, denoising_strength=denoising)
        total, strength = second_pass_schedule(request)
        assert total == max(steps, int(steps / min(denoising, 0.999)))
        assert min(int(total * strength), total) == steps  # what diffusers' img2img runs


def test_target_sizes_follow_a1111() -> None:
    def size(**fields):
        return hires_size(Txt2ImgRequest(width=512, height=768, **fields))

    assert size(hr_scale=2.0) == (1024, 1536)
    assert size(hr_scale=1.5) == (768, 1152)
    assert size(hr_resize_x=1024) == (1024, 1536)  # the other side follows the aspect ratio
    assert size(hr_resize_y=1000) == (664, 1000)  # 666 rounded down to a multiple of 8
    assert size(hr_resize_x=1024, hr_resize_y=1024) == (1024, 1024)  # covered, then cropped


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_hires_makes_the_bigger_picture_in_two_passes(engine: Engine, model: str) -> None:
    request = Txt2ImgRequest(prompt="a red circle", model=model, seed=4, enable_hr=True, hr_scale=2.0,
                             hr_second_pass_steps=4, denoising_strength=0.5, **SMALL)
    job = engine.submit(request)
    totals = {event.total_steps for event in job.events() if event.phase == "sampling"}
    result = job.wait()
    assert result.images[0].size == (128, 128)
    assert totals == {6 + 4}  # the first pass's 6 steps and the second's 4 (A1111's hires runs all its steps)
    again = engine.generate(request)
    assert np.array_equal(pixels(again.images[0]), pixels(result.images[0]))
    lanczos = engine.generate(request.with_changes(hr_upscaler="Lanczos"))
    assert lanczos.images[0].size == (128, 128)
    assert np.abs(pixels(lanczos.images[0]) - pixels(result.images[0])).mean() > 0.5
    plain = engine.generate(request.with_changes(enable_hr=False))
    assert plain.images[0].size == (64, 64)


def test_hires_parameters_are_written_and_read_back(engine: Engine) -> None:
    request = Txt2ImgRequest(prompt="a red circle", negative_prompt="blurry", seed=2, enable_hr=True,
                             hr_resize_x=96, hr_resize_y=128, hr_upscaler="Latent (bicubic)", hr_second_pass_steps=4,
                             denoising_strength=0.5, hr_prompt="a red circle, detailed", **SMALL)
    text = engine.generate(request).infotexts[0]
    params = parse_infotext(text)
    assert (params["Size-1"], params["Denoising strength"], params["Hires resize-1"], params["Hires resize-2"]) == (
        "64", "0.5", "96", "128")
    assert params["Hires upscaler"] == "Latent (bicubic)" and params["Hires steps"] == "4"
    assert params["Hires prompt"] == "a red circle, detailed"
    assert text.index("Denoising strength") < text.index("Hires resize") < text.index("Hires upscaler")
    back = request_from_infotext(text)
    for name in ("enable_hr", "hr_resize_x", "hr_resize_y", "hr_upscaler", "hr_second_pass_steps",
                 "denoising_strength", "hr_prompt"):
        assert getattr(back, name) == getattr(request, name), name
    assert not request_from_infotext(engine.generate(request.with_changes(enable_hr=False)).infotexts[0]).enable_hr


def test_the_hires_schedule_type_drives_the_second_pass_only(engine: Engine) -> None:
    request = Txt2ImgRequest(prompt="a red circle", model="tiny-sd1", seed=7, sampler="DPM++ 2M",
                             schedule_type="Exponential", enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4,
                             denoising_strength=0.6, **SMALL)
    same = engine.generate(request)
    karras = engine.generate(request.with_changes(hr_schedule_type="Karras"))
    first = engine.generate(request.with_changes(enable_hr=False))
    first_karras = engine.generate(request.with_changes(enable_hr=False, hr_schedule_type="Karras"))
    assert np.array_equal(pixels(first.images[0]), pixels(first_karras.images[0]))  # the first pass is untouched
    assert np.abs(pixels(karras.images[0]) - pixels(same.images[0])).mean() > 0.5  # the second pass is not
    assert parse_infotext(karras.infotexts[0])["Hires schedule type"] == "Karras"
    assert "Hires schedule type" not in parse_infotext(same.infotexts[0])
    assert request_from_infotext(karras.infotexts[0]).hr_schedule_type == "Karras"
    with pytest.raises(ValueError, match="schedule type"):
        request.with_changes(hr_schedule_type="Sideways").validate()


def test_hires_bad_values_are_refused_with_a_reason(engine: Engine) -> None:
    base = Txt2ImgRequest(prompt="x", enable_hr=True, **SMALL)
    for changes, words in ((dict(hr_upscaler="Magic"), "hires upscaler"), (dict(hr_scale=9.0), "Hires upscale"),
                           (dict(denoising_strength=0.0), "Denoising strength"),
                           (dict(hr_scale=1.0, width=64, hr_resize_x=16), "each side"), (dict(hr_sampler="Nope"), "Nope")):
        with pytest.raises(ValueError, match=f"(?i){words}"):
            engine.submit(base.with_changes(**changes))


def test_hires_on_the_demo_model_keeps_the_shape_and_colour(tmp_path: Path) -> None:
    from app.demo import BUNDLED_PATH, DEMO_MODEL
    from app.demo.scoring import judge
    from app.engine import EngineConfig

    demo = Engine(EngineConfig(models_dir=BUNDLED_PATH.parent.parent, outputs_dir=tmp_path, default_model=DEMO_MODEL,
                               device="cpu", preview_every=0))
    try:
        prompt = "a red circle on a blue background"
        for upscaler in ("Latent", "Lanczos"):
            result = demo.generate(Txt2ImgRequest(prompt=prompt, seed=3, steps=20, cfg_scale=5, width=64, height=64,
                                                  enable_hr=True, hr_upscaler=upscaler, denoising_strength=0.5,
                                                  save=False))
            picture = result.images[0]
            assert picture.size == (128, 128)
            right, _, reading = judge(picture.resize((64, 64)), prompt)
            assert right, (upscaler, reading)
    finally:
        demo.shutdown()
