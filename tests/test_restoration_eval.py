"""The restoration evaluation (``python -m app.demo.restoration_eval``): its corruptions, and a fast
slice of the run on the bundled demo model (the full run's figures are in bench/RESULTS.md)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.demo import BUNDLED_PATH
from app.demo.restoration_eval import (
    CORRUPTIONS,
    EXAMPLES,
    HOLE_GREY,
    HOLE_SIDE,
    QUICK_SCENES,
    add_noise,
    as_shown,
    baseline,
    cases,
    corrupt,
    cut_hole,
    downscale,
    main,
)

GREY = Image.new("RGB", (64, 64), (128, 128, 128))


def test_the_noise_is_seeded_and_of_the_asked_spread() -> None:
    first, again, other = add_noise(GREY, 0.05, seed=7), add_noise(GREY, 0.05, seed=7), add_noise(GREY, 0.05, seed=8)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    spread = (np.asarray(add_noise(GREY, 0.15, seed=7), np.float64) - 128).std()
    assert spread == pytest.approx(0.15 * 255, rel=0.05)  # mid grey: nothing is clipped


def test_the_hole_is_exactly_the_rectangle() -> None:
    case = cases(1, 64)[0]
    damaged = np.asarray(cut_hole(case.original, case.hole))
    left, top, right, bottom = case.hole
    assert (right - left, bottom - top) == (HOLE_SIDE, HOLE_SIDE)
    inside = np.zeros((64, 64), bool)
    inside[top:bottom, left:right] = True
    assert (damaged[inside] == HOLE_GREY).all()
    assert np.array_equal(damaged[~inside], np.asarray(case.original)[~inside])
    telea = np.asarray(baseline(case, "hole", Image.fromarray(damaged)))
    assert np.array_equal(telea[~inside], damaged[~inside])  # the baseline, too, repaints only the hole


def test_every_hole_takes_part_of_its_shape_and_stays_inside_the_picture() -> None:
    on_an_edge = 0
    for case in cases(64, 64):
        left, top, right, bottom = case.hole
        assert 0 <= left < right <= 64 and 0 <= top < bottom <= 64
        mask = np.zeros((64, 64), bool)
        mask[top:bottom, left:right] = True
        shape = np.any(np.asarray(case.original) != np.asarray(case.original)[0, 0], axis=2)
        assert (shape & mask).any()
        on_an_edge += bool((~shape & mask).any())
    assert on_an_edge >= 48  # most take some background too: the restoration must find the outline


def test_downscale_halves_the_size_by_block_means() -> None:
    picture = Image.fromarray(np.kron(np.array([[0, 200], [100, 50]], np.uint8), np.ones((32, 32), np.uint8)))
    small = downscale(picture)
    assert small.size == (32, 32)
    assert np.asarray(small)[0, 0].tolist() == [0, 0, 0] and np.asarray(small)[20, 20].tolist() == [50, 50, 50]
    case = cases(1, 64)[0]
    shrunk = corrupt(case, "downscale")
    assert shrunk.size == (32, 32) and as_shown(shrunk, 64).size == (64, 64)
    assert baseline(case, "downscale", shrunk).size == (64, 64)


def test_the_scenes_are_fixed_and_a_slice_is_the_start_of_the_full_set() -> None:
    short, full = cases(3, 64), cases(8, 64)
    assert [c.scene for c in short] == [c.scene for c in full[:3]]
    assert [c.hole for c in short] == [c.hole for c in full[:3]]
    assert len({c.scene for c in full}) == 8
    noisy = [np.asarray(corrupt(full[0], "noise_high")) for _ in range(2)]
    assert np.array_equal(*noisy)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """``--quick --json --save-examples`` on the bundled demo model: the JSON line's figures and the examples' folder."""
    root = tmp_path_factory.mktemp("restoration")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--quick", "--json", "--models-dir", str(BUNDLED_PATH.parent.parent),
                     "--outputs-dir", str(root / "outputs"), "--save-examples", str(root / "examples")])
    assert code == 0
    return json.loads(out.getvalue().strip().splitlines()[-1]), root / "examples"


def test_the_json_line_has_every_figure(quick_run: tuple[dict, Path]) -> None:
    figures, _ = quick_run
    for corruption in CORRUPTIONS:
        for metric in ("psnr", "ssim", "checker"):
            for stage in ("input", "baseline", "restored"):
                assert isinstance(figures[f"{corruption}_{metric}_{stage}"], float)
    assert figures["restoration_scenes"] == QUICK_SCENES and figures["restoration_seconds"] > 0
    assert figures["checker_original"] == 1.0


def test_restoration_beats_the_corrupted_input_on_noise_and_the_hole(quick_run: tuple[dict, Path]) -> None:
    figures, _ = quick_run
    for corruption in ("noise_low", "noise_high", "hole"):
        assert figures[f"{corruption}_psnr_restored"] > figures[f"{corruption}_psnr_input"] + 1.0, corruption
    assert figures["noise_high_ssim_restored"] > figures["noise_high_ssim_input"]


def test_the_examples_are_one_strip_per_corruption(quick_run: tuple[dict, Path]) -> None:
    _, folder = quick_run
    for corruption in CORRUPTIONS:
        with Image.open(folder / f"restoration_{corruption}.png") as strip:
            columns, rows = 4, min(EXAMPLES, QUICK_SCENES)
            assert strip.size == (columns * 256 + (columns - 1) * 4, rows * 256 + (rows - 1) * 4)
