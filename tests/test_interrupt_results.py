"""An interrupted generation keeps the batches it finished, as A1111 does: the engine's cancelled event
(and ``JobCancelled`` from ``Job.wait``) carries them, and /sdapi/v1/txt2img answers them after
/sdapi/v1/interrupt."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from app.engine import Engine, Job, JobCancelled, JobEvent, Txt2ImgRequest
from app.engine.outputs import read_parameters
from app_server import RunningApp, start_app

STEPS = 10  # enough that a batch outlasts the reaction to its first step by far


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def cancel_when(engine: Engine, job: Job, batch_index: int) -> list[JobEvent]:
    """Follow ``job``; cancel it at the first sampling step of batch ``batch_index``. Its events."""
    events = []
    for event in job.events(timeout=120):
        events.append(event)
        if event.phase == "sampling" and event.step is not None and event.batch_index == batch_index:
            engine.cancel(job.id)
    return events


# ----- the engine ------------------------------------------------------------------------------
def test_cancelled_in_the_second_batch_the_first_is_kept_and_saved(engine: Engine, outputs_dir: Path) -> None:
    job = engine.submit(Txt2ImgRequest(prompt="a red circle", seed=20, width=64, height=64, steps=STEPS,
                                       batch_size=2, batch_count=3))
    events = cancel_when(engine, job, batch_index=1)
    final = events[-1]
    assert final.phase == "cancelled" and job.final_event is final and job.latest is final
    assert not any(event.phase == "done" for event in events)
    assert max(e.batch_index or 0 for e in events if e.phase == "sampling") == 1  # batch 3 never started
    result = final.result
    assert result is not None
    assert result.seeds == [20, 21] and len(result.images) == len(result.infotexts) == len(result.paths) == 2
    assert sorted(outputs_dir.rglob("*.png")) == sorted(result.paths)  # nothing of the interrupted batch
    for image, seed, text, path in zip(result.images, result.seeds, result.infotexts, result.paths):
        assert path.name.endswith(f"-{seed}.png") and f"Seed: {seed}," in text
        assert read_parameters(path) == text
        with Image.open(path) as on_disk:
            assert np.array_equal(pixels(on_disk), pixels(image))
    with pytest.raises(JobCancelled) as raised:
        job.wait(1)
    assert raised.value.result is result
    alone = engine.generate(Txt2ImgRequest(prompt="a red circle", seed=20, width=64, height=64, steps=STEPS,
                                           batch_size=2, save=False))
    for kept, fresh in zip(result.images, alone.images):  # finished pictures, not an interrupted batch's
        assert np.array_equal(pixels(kept), pixels(fresh))


def test_cancelled_in_the_first_batch_or_queued_ends_with_an_empty_result(engine: Engine, outputs_dir: Path) -> None:
    job = engine.submit(Txt2ImgRequest(prompt="a blue square", seed=7, width=64, height=64, steps=STEPS,
                                       batch_count=2))
    queued = engine.submit(Txt2ImgRequest(prompt="never drawn", seed=8, width=64, height=64, steps=STEPS))
    assert engine.cancel(queued.id)
    events = cancel_when(engine, job, batch_index=0)
    for final in (events[-1], queued.final_event):
        assert final is not None and final.phase == "cancelled" and final.result is not None
        assert (final.result.images, final.result.seeds, final.result.infotexts, final.result.paths) == ([], [], [], [])
    assert not any(event.phase in ("saving", "done") for event in events)
    with pytest.raises(JobCancelled) as raised:
        job.wait(1)
    assert raised.value.result.images == []
    assert list(outputs_dir.rglob("*.png")) == []


# ----- the API ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    running = start_app(tmp_path_factory.mktemp("api-interrupt"))
    yield running
    running.stop()


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def wait_for_batch(api: str, job_no: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = requests.get(f"{api}/progress", timeout=30).json()["state"]
        if state["job_no"] == job_no and state["sampling_step"] >= 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"batch {job_no + 1} never reported sampling steps")


def test_api_interrupt_answers_the_batches_finished_before_it(app: RunningApp) -> None:
    api = app.url + "/sdapi/v1"
    fields = {"prompt": "a green triangle", "seed": 31, "width": 64, "height": 64, "steps": STEPS}
    results: list[requests.Response] = []
    thread = threading.Thread(target=lambda: results.append(
        requests.post(f"{api}/txt2img", json={**fields, "n_iter": 3, "save_images": True}, timeout=300)))
    thread.start()
    try:
        wait_for_batch(api, job_no=1)
    finally:
        assert requests.post(f"{api}/interrupt", timeout=30).json() == {}
        thread.join(120)
    (response,) = results
    assert response.status_code == 200, response.text
    body = response.json()
    info = json.loads(body["info"])
    assert (info["seed"], info["all_seeds"], len(body["images"]), len(info["infotexts"])) == (31, [31], 1, 1)
    (text,) = info["infotexts"]
    assert "Seed: 31," in text and info["all_prompts"] == ["a green triangle"]
    (saved,) = sorted(app.outputs_dir.rglob("*.png"))
    assert saved.name.endswith("-31.png") and read_parameters(saved) == text
    with decoded(body["images"][0]) as image, Image.open(saved) as on_disk:
        assert read_parameters(image) == text
        assert np.array_equal(pixels(image), pixels(on_disk))
    alone = requests.post(f"{api}/txt2img", json=fields, timeout=120).json()
    with decoded(alone["images"][0]) as fresh, decoded(body["images"][0]) as kept:
        assert np.array_equal(pixels(fresh), pixels(kept))
    assert requests.get(f"{api}/progress", timeout=30).json()["state"]["job_count"] == 0
