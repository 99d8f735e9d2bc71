"""The prompt language on the bundled demo model, read back by its checker.

Measured on this model (Euler a, 20 steps, CFG 5, seeds 1-6; shared/reference/offline-facts.md):
with "a red circle ..." for the first k model calls and "a blue circle ..." after, k up to 10 gave
blue circles at every seed, 14 mostly blue, 16 a mix of green and red, 18 red at every seed. The
model settles colour late, so the test switches on both sides of that point. ``[from:to:W]`` draws
``from`` for W + 1 calls (A1111 counts calls from 0): W = 6 gives 7 red calls (blue result), W = 18
(written 0.9) gives 19 (red result).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.demo import BUNDLED_PATH, DEMO_MODEL
from app.demo.checker import read_picture
from app.engine import Engine, EngineConfig, Txt2ImgRequest

SEEDS = (1, 2, 3, 4)
EDIT = "[a red circle:a blue circle:{when}] on a white background"


@pytest.fixture(scope="module")
def demo_engine(tmp_path_factory: pytest.TempPathFactory):
    engine = Engine(EngineConfig(models_dir=BUNDLED_PATH.parent.parent, outputs_dir=tmp_path_factory.mktemp("out"),
                                 default_model=DEMO_MODEL, device="cpu", preview_every=0))
    yield engine
    engine.shutdown()


def picture(engine: Engine, prompt: str, seed: int):
    request = Txt2ImgRequest(prompt=prompt, seed=seed, steps=20, cfg_scale=5, width=64, height=64, save=False)
    return engine.generate(request).images[0]


@pytest.mark.parametrize(("when", "colour"), [("0.9", "red"), ("6", "blue")])  # step 18 and step 6
def test_the_switch_step_decides_the_colour(demo_engine: Engine, when: str, colour: str) -> None:
    readings = [read_picture(picture(demo_engine, EDIT.format(when=when), seed)) for seed in SEEDS]
    assert [(r.colour, r.shape) for r in readings] == [(colour, "circle")] * len(SEEDS)


def test_a_switch_at_zero_or_after_the_end_is_exactly_one_prompt(demo_engine: Engine) -> None:
    for seed in SEEDS[:2]:
        at_zero = np.asarray(picture(demo_engine, EDIT.format(when="0"), seed))
        blue = np.asarray(picture(demo_engine, "a blue circle on a white background", seed))
        after_end = np.asarray(picture(demo_engine, EDIT.format(when="25"), seed))
        red = np.asarray(picture(demo_engine, "a red circle on a white background", seed))
        assert np.array_equal(at_zero, blue) and np.array_equal(after_end, red)
