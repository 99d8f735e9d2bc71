"""The Extras (upscale, then or after face restoration) through the engine's worker, the Extras tab's handler,
and hires fix with an upscaler model file: sizes, pixels, the facts written, files saved, progress."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from app.engine import Engine, EngineConfig, Txt2ImgRequest
from app.engine.extras import ExtrasSettings, check_extras, extras_job, run_extras
from app.engine.infotext import parse_infotext
from app.engine.infotext_fields import request_from_infotext
from app.ui.extras_tab import extras_handler, upscaler_choices
from restoration_fixtures import write_face_restorer, write_upscaler

UPSCALER = "2x_tiny_esrgan"


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def noise_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def extras_engine(tmp_path_factory: pytest.TempPathFactory, models_dir: Path):
    """An engine over the tiny test models plus a 2x upscaler file and a face restorer file."""
    work = tmp_path_factory.mktemp("extras")
    models = work / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    (models / "Stable-diffusion" / "tiny-sd1").symlink_to(models_dir / "Stable-diffusion" / "tiny-sd1")
    write_upscaler(models, UPSCALER, scale=2)
    write_face_restorer(models)
    engine = Engine(EngineConfig(models_dir=models, outputs_dir=work / "outputs", default_model="tiny-sd1",
                                 device="cpu", preview_every=0))
    yield engine
    engine.shutdown()


def test_a_model_upscaler_doubles_the_picture_and_blends_with_a_second(extras_engine: Engine) -> None:
    upscalers, faces = extras_engine.manager.upscalers, extras_engine.manager.face_restorers
    picture = noise_picture(40, 30)
    result, facts = run_extras(picture, ExtrasSettings(upscaler_1=UPSCALER), upscalers, faces)
    assert result.size == (80, 60)
    assert facts == {"Postprocess upscale by": "2", "Postprocess upscaler": UPSCALER}
    lanczos, _ = run_extras(picture, ExtrasSettings(upscaler_1="Lanczos"), upscalers, faces)
    assert np.abs(pixels(result) - pixels(lanczos)).mean() > 5  # the model, not a resize
    mixed, facts = run_extras(picture, ExtrasSettings(upscaler_1=UPSCALER, upscaler_2="Lanczos",
                                                      extras_upscaler_2_visibility=0.5), upscalers, faces)
    assert np.abs(pixels(mixed) - (pixels(result) + pixels(lanczos)) / 2).max() <= 1
    assert facts["Postprocess upscaler 2"] == "Lanczos"
    fitted, facts = run_extras(picture, ExtrasSettings(upscaler_1=UPSCALER, resize_mode=1, upscaling_resize_w=50,
                                                       upscaling_resize_h=50, upscaling_crop=True), upscalers, faces)
    assert fitted.size == (50, 50) and facts["Postprocess crop to"] == "50x50"


def test_bad_settings_are_refused_before_any_work(extras_engine: Engine) -> None:
    upscalers, faces = extras_engine.manager.upscalers, extras_engine.manager.face_restorers
    with pytest.raises(ValueError, match=f"upscaler_1: .*{UPSCALER}"):  # the message lists what is there
        check_extras(ExtrasSettings(upscaler_1="4x-UltraSharp"), upscalers, faces)
    with pytest.raises(ValueError, match="codeformer_visibility: No CodeFormer face model is installed"):
        check_extras(ExtrasSettings(codeformer_visibility=0.5), upscalers, faces)
    check_extras(ExtrasSettings(gfpgan_visibility=0.5), upscalers, faces)  # GFPGAN's slider runs RestoreFormer


def test_faces_are_restored_before_the_upscale(extras_engine: Engine) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    upscalers, faces = extras_engine.manager.upscalers, extras_engine.manager.face_restorers
    astronaut = Image.fromarray(skimage_data.astronaut()).resize((256, 256))
    restored, facts = run_extras(astronaut, ExtrasSettings(gfpgan_visibility=1.0), upscalers, faces)
    assert facts == {"GFPGAN visibility": "1"}
    changed = np.abs(pixels(restored) - pixels(astronaut)).max(axis=2) > 0
    rows, columns = np.nonzero(changed)
    assert changed.any() and rows.min() > 0 and columns.min() > 40 and columns.max() < 180  # her face, not the suit
    both, facts = run_extras(astronaut, ExtrasSettings(gfpgan_visibility=1.0, upscaler_1="Lanczos"), upscalers, faces)
    assert both.size == (512, 512) and list(facts) == ["GFPGAN visibility", "Postprocess upscale by",
                                                      "Postprocess upscaler"]
    expected, _ = run_extras(restored, ExtrasSettings(upscaler_1="Lanczos"), upscalers, faces)
    assert np.array_equal(pixels(both), pixels(expected))


def test_the_job_saves_each_result_with_its_parameters_and_reports_tiles(extras_engine: Engine) -> None:
    upscalers, faces = extras_engine.manager.upscalers, extras_engine.manager.face_restorers
    source = noise_picture(24, 24, seed=3)
    source.info["parameters"] = "a red circle\nSteps: 4, Seed: 1"
    outputs = extras_engine.config.outputs_dir
    job = extras_engine.submit_work(
        lambda ctx: extras_job(ctx, [source, noise_picture(16, 8)], 2, ExtrasSettings(upscaler_1=UPSCALER), upscalers,
                               faces, (outputs, None)), "extras: 2 pictures")
    tiles = [event for event in job.events(timeout=120) if event.phase == "sampling"]
    result = job.wait(0)
    assert [image.size for image in result.images] == [(48, 48), (32, 16)]
    assert [(event.batch_index, event.step, event.total_steps) for event in tiles] == [(0, 1, 1), (1, 1, 1)]
    folder = outputs / "extras-images" / dt.date.today().isoformat()
    assert result.paths == [folder / "00000.png", folder / "00001.png"]
    with Image.open(result.paths[0]) as saved:
        assert saved.info["parameters"] == "a red circle\nSteps: 4, Seed: 1"
        assert saved.info["postprocessing"] == f"Postprocess upscale by: 2, Postprocess upscaler: {UPSCALER}"
        assert np.array_equal(pixels(saved), pixels(result.images[0]))
    assert not [path for path in folder.iterdir() if path.suffix != ".png"]  # no temporary file left


def test_the_tab_lists_the_upscaler_files_and_runs_on_the_worker(extras_engine: Engine, tmp_path: Path) -> None:
    choices = upscaler_choices(extras_engine)
    assert choices[:3] == [("None", "None"), ("Lanczos", "Lanczos"), ("Nearest", "Nearest")]
    assert (f"{UPSCALER} (ESRGAN 2x)", UPSCALER) in choices
    names = ["resize_mode", "upscaling_resize", "upscaler_1"]
    handler = extras_handler(extras_engine, names)
    request = SimpleNamespace(session_hash="extras-test", username=None)
    batch = []
    for index, size in enumerate(((10, 12), (14, 6))):
        path = tmp_path / f"in{index}.png"
        info = PngInfo()
        info.add_text("parameters", f"picture {index}")
        noise_picture(*size, seed=index).save(path, pnginfo=info)
        batch.append(str(path))
    updates = list(handler(request, None, batch, 0, 2, UPSCALER))
    gallery, progress, info = updates[-1]
    assert [Image.open(path).size for path, _ in gallery] == [(20, 24), (28, 12)]
    assert [Image.open(path).info["parameters"] for path, _ in gallery] == ["picture 0", "picture 1"]
    assert "Done" in progress and "Postprocess upscaler: " + UPSCALER in info
    with pytest.raises(gr.Error, match="Drop a picture"):
        list(handler(request, None, [], 0, 2, UPSCALER))
    with pytest.raises(gr.Error, match="upscaler_1"):
        list(handler(request, noise_picture(8, 8), None, 0, 2, "Magic"))


def test_hires_fix_with_an_upscaler_file(extras_engine: Engine) -> None:
    base = Txt2ImgRequest(prompt="a red circle", width=64, height=64, steps=4, seed=5, save=False, enable_hr=True,
                          hr_scale=2.0, denoising_strength=0.3)
    model = extras_engine.generate(base.with_changes(hr_upscaler=UPSCALER.upper()), timeout=300)
    lanczos = extras_engine.generate(base.with_changes(hr_upscaler="Lanczos"), timeout=300)
    assert model.images[0].size == (128, 128)
    assert np.abs(pixels(model.images[0]) - pixels(lanczos.images[0])).mean() > 1
    assert parse_infotext(model.infotexts[0])["Hires upscaler"] == UPSCALER  # as the file is named
    assert request_from_infotext(model.infotexts[0]).hr_upscaler == UPSCALER
    with pytest.raises(ValueError, match="(?i)hires upscaler.*4x-UltraSharp"):
        extras_engine.submit(base.with_changes(hr_upscaler="4x-UltraSharp"))


def test_restore_faces_runs_the_face_model_on_each_finished_picture(extras_engine: Engine,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The generation option hands every finished picture to the face library (whose restoring is proved in
    test_face_restore.py) and keeps what it returns; the infotext names the model, and reads back."""
    library = extras_engine.manager.face_restorers
    calls: list[tuple[tuple[int, int], str, float]] = []

    def restore(image: Image.Image, name: str, visibility: float = 1.0, codeformer_weight: float = 0.5,
                progress=None) -> tuple[Image.Image, int]:
        calls.append((image.size, name, codeformer_weight))
        return Image.new("RGB", image.size, (10, 20, 30)), 1

    monkeypatch.setattr(library, "restore", restore)
    request = Txt2ImgRequest(prompt="a face", width=64, height=64, steps=2, seed=3, batch_size=2, save=False,
                             restore_faces=True, codeformer_weight=0.7)
    result = extras_engine.generate(request, timeout=300)
    assert calls == [((64, 64), "tiny_restoreformer", 0.7)] * 2
    assert all(np.all(pixels(image) == (10, 20, 30)) for image in result.images)
    assert parse_infotext(result.infotexts[0])["Face restoration"] == "tiny_restoreformer"
    again = request_from_infotext(result.infotexts[0])
    assert (again.restore_faces, again.face_restorer) == (True, "tiny_restoreformer")
    with pytest.raises(ValueError, match="restore_faces: No CodeFormer face model is installed"):
        extras_engine.submit(request.with_changes(face_restorer="CodeFormer"))
    plain = extras_engine.generate(request.with_changes(restore_faces=False), timeout=300)
    assert "Face restoration" not in parse_infotext(plain.infotexts[0]) and len(calls) == 2
