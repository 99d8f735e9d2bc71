"""The demo world's generator and the checker that reads its pictures back."""

from __future__ import annotations

import random

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


def test_an_empty_picture_has_no_shape() -> None:
    scene = random_scene(random.Random(1))
    blank = render(scene).copy()
    blank.paste(PALETTE[scene.background], (0, 0, blank.width, blank.height))
    reading = read_picture(blank)
    assert reading.shape is None and reading.background == scene.background
