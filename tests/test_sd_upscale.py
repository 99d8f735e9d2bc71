"""SD upscale (A1111's img2img script): the tile grid and its blend, the run on the tiny model, seams against
the untiled img2img, the request fields, infotext, the API's script_name/script_args and /scripts."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from app.engine import Engine, Img2ImgRequest, InpaintRequest
from app.engine import sd_upscale
from app.engine.a1111_request import ENGINE_DEFAULTS, request_from_a1111
from app.engine.engine import LOCAL_OWNER
from app.engine.infotext import parse_infotext
from app.engine.infotext_fields import request_from_infotext
from app.engine.jobs import JobCancelled
from app.engine.sd_upscale import TileBatch, plan_grid, redraw_in_tiles

SMALL = dict(prompt="a field", steps=2, cfg_scale=1.0, denoising_strength=0.5, save=False)  # one step a tile
UPSCALERS = ["None", "Lanczos", "Nearest"]


def _source(width: int, height: int) -> Image.Image:
    """A seeded colour gradient with a little noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 128 / (width + height)], axis=-1)
    return Image.fromarray((base + rng.integers(-10, 10, (height, width, 3))).clip(0, 255).astype(np.uint8))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


# ----- the grid and the blend ------------------------------------------------------------------
@pytest.mark.parametrize("size, tile, overlap", [
    ((1000, 700), (512, 512), 64),  # A1111's count: 3 x 2
    ((200, 130), (64, 64), 16),
    ((128, 64), (64, 64), 0),  # an exact fit: tiles side by side
    ((100, 40), (64, 64), 56),  # three tiles over some pixels; 40 px high: one tile, 64 px
    ((90, 37), (128, 128), 32),  # smaller than a tile both ways: one tile, grown to 96 x 64
])
def test_the_grid_covers_the_picture_with_the_overlap_and_the_weights_sum_to_one(size, tile, overlap) -> None:
    grid = plan_grid(size, tile, overlap)
    for starts, length, drawn, asked in ((grid.xs, size[0], grid.tile[0], tile[0]), (grid.ys, size[1], grid.tile[1],
                                                                                      tile[1])):
        assert starts[0] == 0 and starts[-1] + drawn == max(length, drawn)  # flush with both borders
        if length > asked:
            assert drawn == asked
            steps = np.diff(starts)
            assert (steps <= asked - overlap).all() and steps.max() - steps.min() <= 1  # the overlap, evenly
        else:
            assert starts == (0,) and drawn % 8 == 0 and length <= drawn <= max(asked, 64)
    assert grid.canvas[0] >= size[0] and grid.canvas[1] >= size[1]
    total = np.zeros(grid.canvas[::-1])
    for (left, top, right, bottom), weight in zip(grid.boxes(), grid.weights()):
        assert weight.shape == (bottom - top, right - left) and (weight > 0).all()
        total[top:bottom, left:right] += weight
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    if size == (1000, 700):
        assert (grid.xs, grid.ys) == ((0, 244, 488), (0, 188))
    if size == (90, 37):
        assert grid.tile == (96, 64) and len(grid.boxes()) == 1


def test_a_tile_drawn_unchanged_comes_back_exactly_and_overlaps_are_cross_faded() -> None:
    picture = _source(150, 100)
    same = redraw_in_tiles(picture, (64, 64), 16, lambda batch: batch.tiles, seed=0)
    assert same.size == picture.size and np.array_equal(_pixels(same), _pixels(picture))
    # Three 64 px tiles over 128 px (starts 0, 32, 64), each drawn as one flat grey: 60, 120, 180.
    flat = Image.new("RGB", (128, 64), (128, 128, 128))
    shades: list[int] = []

    def grey(batch: TileBatch) -> list[Image.Image]:
        shades.extend(60 + 60 * len(shades) + 60 * k for k in range(len(batch.tiles)))
        return [Image.new("RGB", tile.size, (shade,) * 3) for tile, shade in zip(batch.tiles, shades[-len(batch.tiles):])]

    row = _pixels(redraw_in_tiles(flat, (64, 64), 32, grey, seed=0))[0, :, 0]
    assert shades == [60, 120, 180]
    assert (row[:32] == 60).all() and (row[96:] == 180).all()  # where one tile alone covers the picture
    jumps = np.diff(row)
    assert (jumps >= 0).all() and jumps.max() <= 3  # a ramp of ~1.9 a pixel: a hard paste would jump by 60


def test_tiles_take_seed_plus_their_index_in_batches_and_a_cancel_stops_between_batches() -> None:
    calls: list[TileBatch] = []

    def record(batch: TileBatch) -> tuple[Image.Image, ...]:
        calls.append(batch)
        return batch.tiles

    redraw_in_tiles(_source(200, 130), (64, 64), 16, record, seed=2**32 - 2, batch_size=5)  # 4 x 3 tiles
    assert [(batch.index, batch.count, len(batch.tiles)) for batch in calls] == [(0, 3, 5), (1, 3, 5), (2, 3, 2)]
    assert [seed for batch in calls for seed in batch.seeds] == [2**32 - 2, 2**32 - 1, *range(10)]
    assert all(tile.size == (64, 64) for batch in calls for tile in batch.tiles)

    calls.clear()

    def cancel_after_two() -> None:
        if len(calls) == 2:
            raise JobCancelled("Interrupted by its owner.")

    with pytest.raises(JobCancelled):
        redraw_in_tiles(_source(200, 130), (64, 64), 16, record, seed=1, check_cancelled=cancel_after_two)
    assert len(calls) == 2  # the third tile was never drawn


# ----- the run on the tiny model ----------------------------------------------------------------
def test_sd_upscale_makes_one_picture_of_the_upscaled_size_per_batch(engine: Engine) -> None:
    source = _source(48, 32)
    request = Img2ImgRequest(init_image=source, width=64, height=64, script_name="SD Upscale", sd_upscale_overlap=16,
                             sd_upscale_scale=2.0, seed=11, batch_count=2, batch_size=2, **SMALL)
    result = engine.generate(request, timeout=600)
    assert [image.size for image in result.images] == [(96, 64), (96, 64)]  # 2 x 48x32; tiles of 64x64
    assert result.seeds == [11, 12]  # A1111: picture n starts at seed + n
    info = parse_infotext(result.infotexts[1])
    assert (info["Seed"], info["Size-1"], info["Size-2"], info["Denoising strength"]) == ("12", "64", "64", "0.5")
    assert (info["SD upscale overlap"], info["SD upscale upscaler"], info["SD upscale scale"]) == ("16", "Lanczos", "2")
    back = request_from_infotext(result.infotexts[1], task="img2img")
    assert isinstance(back, Img2ImgRequest) and back.sd_upscaling
    assert (back.sd_upscale_overlap, back.sd_upscale_upscaler, back.sd_upscale_scale, back.width) == (16, "Lanczos", 2, 64)
    assert not request_from_infotext("a\nSteps: 3, Sampler: Euler, Seed: 1", task="img2img").sd_upscaling


@pytest.fixture
def spied_tiles(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[TileBatch, list[Image.Image]]]]:
    """Each tile batch the engine draws, and what came back."""
    drawn: list[tuple[TileBatch, list[Image.Image]]] = []
    real = sd_upscale.redraw_in_tiles

    def spy(picture, tile, overlap, draw, **options):
        def recorded(batch: TileBatch) -> list[Image.Image]:
            images = list(draw(batch))
            drawn.append((batch, images))
            return images
        return real(picture, tile, overlap, recorded, **options)

    monkeypatch.setattr(sd_upscale, "redraw_in_tiles", spy)
    yield drawn


def test_seams_stay_within_the_tolerance_of_the_untiled_img2img(engine: Engine, spied_tiles) -> None:
    """48x48 upscaled to 96x96: four 64x64 tiles (overlap bands of 32 px) against one 96x96 img2img of the same
    upscaled picture. The tiny model's pictures are noisy, so the untiled and tiled results differ everywhere
    (mean 45 levels); the question is whether they differ more where the tiles meet. Measured: 42.8 in the
    overlap bands against 45.2 elsewhere (ratio 0.95); a hard paste of the same tiles (no blending) measures
    48.4 (1.07). Tolerance: the bands at most 1.05 x elsewhere, and below the hard paste."""
    source = _source(48, 48)
    tiled_job = engine.submit(Img2ImgRequest(init_image=source, width=64, height=64, script_name="sd upscale",
                                             sd_upscale_overlap=32, seed=7, **SMALL))
    events = list(tiled_job.events(timeout=600))
    tiled = tiled_job.wait(0).images[0]
    untiled = engine.generate(Img2ImgRequest(init_image=source, width=96, height=96, script_name="sd upscale",
                                             sd_upscale_overlap=32, seed=7, **SMALL), timeout=600).images[0]
    assert tiled.size == untiled.size == (96, 96)
    batches = [batch for batch, _ in spied_tiles[:4]]
    assert [batch.seeds for batch in batches] == [(7,), (8,), (9,), (10,)] and len(spied_tiles) == 5  # + untiled
    steps = [(event.step, event.total_steps) for event in events if event.phase == "sampling" and event.step]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # progress counts every tile's steps
    assert any(event.preview is not None for event in events)

    grid = plan_grid((96, 96), (64, 64), 32)
    tiles = [images[0] for _, images in spied_tiles[:4]]
    blended, hard = np.zeros((96, 96, 3), dtype=np.float32), np.zeros((96, 96, 3), dtype=np.float32)
    for (left, top, right, bottom), weight, tile in zip(grid.boxes(), grid.weights(), tiles):
        blended[top:bottom, left:right] += _pixels(tile) * weight[..., None]
        hard[top:bottom, left:right] = _pixels(tile)
    assert np.array_equal(np.clip(np.rint(blended), 0, 255), _pixels(tiled))  # the result is the blend of the tiles

    band = np.zeros((96, 96), dtype=bool)
    band[:, 32:64] = band[32:64, :] = True  # where two or four tiles overlap
    reference = _pixels(untiled)

    def band_ratio(picture: np.ndarray) -> float:
        difference = np.abs(picture - reference).mean(axis=-1)
        return float(difference[band].mean() / difference[~band].mean())

    assert band_ratio(_pixels(tiled)) <= 1.05
    assert band_ratio(_pixels(tiled)) < band_ratio(hard)


def test_an_interrupt_stops_the_job_between_tiles(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[int] = []
    real = sd_upscale.redraw_in_tiles

    def interrupting(picture, tile, overlap, draw, **options):
        def then_interrupt(batch: TileBatch) -> list[Image.Image]:
            images = list(draw(batch))
            drawn.append(batch.index)
            engine.cancel_all_of(LOCAL_OWNER)  # the UI's Interrupt, once the first tile is done
            return images
        return real(picture, tile, overlap, then_interrupt, **options)

    monkeypatch.setattr(sd_upscale, "redraw_in_tiles", interrupting)
    job = engine.submit(Img2ImgRequest(init_image=_source(48, 48), width=64, height=64, script_name="sd upscale",
                                       sd_upscale_overlap=32, **SMALL))
    with pytest.raises(JobCancelled):
        job.wait(600)
    assert drawn == [0]  # the other three tiles were never drawn


def test_the_none_upscaler_keeps_the_size_and_an_unknown_one_is_refused(engine: Engine) -> None:
    source = _source(64, 40)
    kept = engine.generate(Img2ImgRequest(init_image=source, width=64, height=64, script_name="sd upscale",
                                          sd_upscale_upscaler="none", sd_upscale_overlap=16, seed=1, **SMALL), timeout=600)
    assert kept.images[0].size == (64, 40)  # no upscale, as A1111's "None" (one tile, its bottom edge repeated)
    assert parse_infotext(kept.infotexts[0])["SD upscale upscaler"] == "None"
    with pytest.raises(ValueError, match="Unknown upscaler 'Magic 8x'"):  # at submit, before the queue
        engine.submit(Img2ImgRequest(init_image=source, width=64, height=64, script_name="sd upscale",
                                     sd_upscale_upscaler="Magic 8x", sd_upscale_overlap=16, **SMALL))


def test_requests_that_cannot_run_are_refused_readably() -> None:
    source = _source(64, 64)
    ok = Img2ImgRequest(init_image=source, width=64, height=64, script_name="sd upscale", sd_upscale_overlap=16, **SMALL)
    ok.validate()
    refusals = [
        (dict(script_name="x/y/z plot"), "Unknown script 'x/y/z plot'; LoRA Studio runs the img2img script 'sd upscale'"),
        (dict(sd_upscale_overlap=64), "SD upscale overlap 64 must be smaller than the tile"),
        (dict(sd_upscale_scale=5.0), "SD upscale scale must be between 1 and 4"),
        (dict(init_image=Image.new("RGB", (1200, 1100)), sd_upscale_scale=4.0), "SD upscale would make 4800x4400"),
        (dict(sd_upscale_upscaler=""), "SD upscale needs an upscaler name"),
    ]
    for changes, message in refusals:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            ok.with_changes(**changes).validate()
    ok.with_changes(sd_upscale_overlap=12).validate()  # any whole number of pixels below the tile
    inpaint = InpaintRequest(init_image=source, mask=Image.new("L", (64, 64), 255), width=64, height=64,
                             script_name="sd upscale", sd_upscale_overlap=16, **SMALL)
    with pytest.raises(ValueError, match="run it in img2img, without a mask"):
        inpaint.validate()


def test_the_img2img_tab_has_sd_upscale_controls_that_infotexts_fill(engine: Engine) -> None:
    import gradio as gr

    from app.ui.generate_tab import quick_settings, request_from_ui
    from app.ui.img2img_tab import build_img2img_tab
    from app.ui.send_to import target_values

    with gr.Blocks():
        tab = build_img2img_tab(engine, quick_settings())
    controls = tab.fields()
    assert list(controls)[-4:] == ["sd_upscale", "sd_upscale_upscaler", "sd_upscale_scale", "sd_upscale_overlap"]
    text = ("a field\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.3, SD upscale overlap: 32, "
            "SD upscale upscaler: Nearest, SD upscale scale: 1.5, Version: x")
    filled = dict(zip(controls, target_values(engine, text, tab)))
    assert [filled[name] for name in list(controls)[-4:]] == [True, "Nearest", 1.5, 32]
    assert dict(zip(controls, target_values(engine, "a\nSteps: 2, Sampler: Euler, Seed: 1", tab)))["sd_upscale"] is False
    as_shown = {name: controls[name].value for name in ("sd_upscale_upscaler", "sd_upscale_scale", "sd_upscale_overlap")}
    request = request_from_ui("img2img", {"init_image": _source(32, 32), "sd_upscale": True, **as_shown})
    assert isinstance(request, Img2ImgRequest) and request.sd_upscaling
    assert request == Img2ImgRequest(init_image=request.init_image, script_name="sd upscale")  # the defaults, shown


# ----- the A1111 mapping and the API -------------------------------------------------------------
def test_script_name_and_script_args_map_as_a1111_sends_them() -> None:
    source = _source(32, 32)

    def mapped(**fields) -> Img2ImgRequest:
        request = request_from_a1111("img2img", {"init_image": source, **fields}, defaults={}, upscalers=UPSCALERS)
        assert isinstance(request, Img2ImgRequest)
        return request

    by_index = mapped(script_name="SD upscale", script_args=["<p>info</p>", 32.0, 2, 1.5])
    assert (by_index.script_name, by_index.sd_upscale_overlap, by_index.sd_upscale_upscaler,
            by_index.sd_upscale_scale) == ("sd upscale", 32, "Nearest", 1.5)
    by_name = mapped(script_name="sd upscale", script_args=[None, 16, "lanczos"])
    assert (by_name.sd_upscale_overlap, by_name.sd_upscale_upscaler, by_name.sd_upscale_scale) == (16, "Lanczos", 2)
    bare = mapped(script_name="sd upscale")
    assert (bare.sd_upscale_overlap, bare.sd_upscale_upscaler, bare.sd_upscale_scale) == (64, "Lanczos", 2)
    assert not mapped(script_name=None, script_args=[]).sd_upscaling
    ui = request_from_a1111("img2img", {"init_image": source, "sd_upscale": True, "sd_upscale_upscaler": "Nearest",
                                        "sd_upscale_scale": 3.0, "sd_upscale_overlap": 8.0}, defaults={},
                            field_defaults=ENGINE_DEFAULTS)
    assert isinstance(ui, Img2ImgRequest) and ui.sd_upscaling
    assert (ui.sd_upscale_upscaler, ui.sd_upscale_scale, ui.sd_upscale_overlap) == ("Nearest", 3, 8)
    refusals = [
        (dict(script_name="Loopback"), "script_name = 'Loopback' is not a script LoRA Studio runs in img2img"),
        (dict(script_name="sd upscale", script_args=[None, 64, 7]), r"script_args\[2\]: upscaler index 7 is out of "
                                                                   r"range; GET /sdapi/v1/upscalers lists 3 \(0 to 2\)"),
        (dict(script_name="sd upscale", script_args=[None, 64, "ESRGAN_4x"]), "unknown upscaler 'ESRGAN_4x'; "
                                                                             "available: None, Lanczos, Nearest"),
        (dict(script_args=[None, 64]), "script_args = .* is not supported by LoRA Studio without a script_name"),
        (dict(script_name="sd upscale", script_args="64"), "script_args must be a list"),
    ]
    for fields, message in refusals:
        with pytest.raises(ValueError, match=message):
            mapped(**fields)
    with pytest.raises(ValueError, match="txt2img runs none"):
        request_from_a1111("txt2img", {"script_name": "sd upscale"}, defaults={})


@pytest.fixture
def api(engine: Engine):
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from app.api import add_api
    from app.api.context import ApiContext
    from app.api.options import OPTIONS_FILE, OptionsStore, default_options

    app = FastAPI()
    add_api(app, ApiContext(engine, OptionsStore(engine.config.outputs_dir / OPTIONS_FILE, default_options(None))))
    with TestClient(app) as client:
        yield client


def test_the_api_runs_sd_upscale_from_script_name_and_script_args(api) -> None:
    names = [item["name"] for item in api.get("/sdapi/v1/upscalers").json()]
    buffer = io.BytesIO()
    _source(48, 32).save(buffer, format="PNG")
    body = {"init_images": [base64.b64encode(buffer.getvalue()).decode()], "prompt": "a field", "seed": 3,
            "steps": 2, "cfg_scale": 1, "denoising_strength": 0.5, "width": 64, "height": 64,
            "script_name": "SD upscale", "script_args": ["", 16, names.index("Nearest"), 2]}
    answer = api.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text
    picture = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    assert picture.size == (96, 64)
    info = parse_infotext(picture.info["parameters"])
    assert (info["SD upscale upscaler"], info["SD upscale overlap"], info["Size-1"]) == ("Nearest", "16", "64")
    unknown = api.post("/sdapi/v1/img2img", json={**body, "script_name": "X/Y/Z plot"})
    assert unknown.status_code == 422 and "'sd upscale'" in unknown.json()["detail"]
    out_of_range = api.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 16, len(names), 2]})
    assert out_of_range.status_code == 422 and "out of range" in out_of_range.json()["detail"]
    assert api.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": ["sd upscale"]}
    (script,) = api.get("/sdapi/v1/script-info").json()
    assert (script["name"], script["is_img2img"], script["is_alwayson"]) == ("sd upscale", True, False)
    labels = [arg["label"] for arg in script["args"]]
    assert labels == [None, "Tile overlap", "Upscaler", "Scale Factor"] and script["args"][2]["choices"] == names
    assert (script["args"][1]["value"], script["args"][3]["value"]) == (64, 2.0)
