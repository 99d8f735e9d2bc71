"""Bounded queues: a per-owner cap on queued-or-running jobs and a cap on all queued jobs.

The jobs here are cheap submit_work jobs that hold the worker until a gate opens: no model runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.engine import Engine, EngineConfig, Txt2ImgRequest
from app.engine.jobs import Job, JobCancelled, JobContext, JobResult, QueueFull

WAIT = 30.0


class Gate:
    """Work functions that wait for ``open()`` (and stop when cancelled); ``started`` is set by the first."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self.started = threading.Event()

    def work(self, ctx: JobContext) -> JobResult:
        self.started.set()
        while not self._open.wait(0.01):
            ctx.check_cancelled()
        return JobResult(info={"ok": True})

    def open(self) -> None:
        self._open.set()


def make_engine(tmp_path: Path, **limits: int) -> Engine:
    return Engine(EngineConfig(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs",
                               default_model="tiny-sd1", device="cpu", **limits))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine with the default limits (20 per owner, 200 queued) and no models: only work jobs run."""
    eng = make_engine(tmp_path)
    yield eng
    eng.shutdown()


def fill(engine: Engine, gate: Gate, owner: str, count: int) -> list[Job]:
    jobs = [engine.submit_work(gate.work, f"test work {i}", owner) for i in range(count)]
    assert gate.started.wait(WAIT)  # the first one holds the worker: the others wait in the queue
    return jobs


def test_the_21st_job_of_an_owner_is_refused_and_another_owner_still_queues(engine: Engine) -> None:
    assert engine.config.max_queue_per_user == 20 and engine.config.max_queue == 200
    gate = Gate()
    bot = fill(engine, gate, "api:bot", 20)
    with pytest.raises(QueueFull) as refused:
        engine.submit_work(gate.work, "one more", "api:bot")
    message = str(refused.value)
    assert isinstance(refused.value, ValueError)  # the UI shows it as a gr.Error, the API as a 4xx
    assert "queue is full" in message and "20" in message and "interrupt" in message and "Wait" in message
    assert refused.value.limit == 20 and refused.value.per_owner
    with pytest.raises(QueueFull):  # generation jobs count against the same limit
        engine.submit(Txt2ImgRequest(prompt="a cat"), "api:bot")
    assert len(engine.worker.active_jobs("api:bot")) == 20  # nothing of the refused ones was queued
    person = engine.submit_work(gate.work, "a person's job", "session:abc")  # another owner is not held up
    gate.open()
    assert person.wait(WAIT).info == {"ok": True}
    assert all(job.wait(WAIT).info == {"ok": True} for job in bot)


def test_the_global_cap_bounds_all_queued_jobs(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, max_queue=5, max_queue_per_user=3)
    try:
        gate = Gate()
        running = fill(engine, gate, "api:a", 1)  # taken by the worker: running, not queued
        queued = [engine.submit_work(gate.work, "w", owner) for owner in ("api:a", "api:a", "api:b", "api:b", "api:c")]
        with pytest.raises(QueueFull) as refused:
            engine.submit_work(gate.work, "w", "api:d")  # an owner with no job yet: the queue itself is full
        assert "queue is full" in str(refused.value) and "5" in str(refused.value) and not refused.value.per_owner
        with pytest.raises(QueueFull, match="limit is 3 per user"):  # api:a has one running and two queued
            engine.submit_work(gate.work, "w", "api:a")
        assert engine.cancel(queued[-1].id, "api:c")  # one place freed
        extra = engine.submit_work(gate.work, "w", "api:d")
        gate.open()
        for job in [*running, *queued[:-1], extra]:
            job.wait(WAIT)
    finally:
        engine.shutdown()


def test_after_jobs_end_or_are_cancelled_the_owner_queues_again(engine: Engine) -> None:
    gate = Gate()
    jobs = fill(engine, gate, "session:s1", 20)
    with pytest.raises(QueueFull):
        engine.submit_work(gate.work, "w", "session:s1")
    assert engine.cancel(jobs[-1].id, "session:s1")  # a queued one, cancelled: its place is free at once
    again = engine.submit_work(gate.work, "w", "session:s1")
    with pytest.raises(QueueFull):
        engine.submit_work(gate.work, "w", "session:s1")
    assert engine.cancel_all_of("session:s1") == 20  # the UI's Interrupt: the running one stops at its next check
    for job in [*jobs[:-1], again]:
        with pytest.raises(JobCancelled):
            job.wait(WAIT)
    later = [engine.submit_work(gate.work, "w", "session:s1") for _ in range(20)]  # a full quota again
    gate.open()
    assert [job.wait(WAIT).info for job in later] == [{"ok": True}] * 20  # the worker kept running
    assert engine.worker.alive


def test_finished_jobs_free_their_places(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, max_queue_per_user=2)
    try:
        gate = Gate()
        gate.open()
        for _ in range(3):  # one after another: each ends before the next is queued
            engine.submit_work(gate.work, "w", "local").wait(WAIT)
        first = Gate()
        jobs = fill(engine, first, "local", 2)
        with pytest.raises(QueueFull, match="limit is 2 per user"):
            engine.submit_work(first.work, "w", "local")
        first.open()
        for job in jobs:
            job.wait(WAIT)
        assert engine.submit_work(gate.work, "w", "local").wait(WAIT).info == {"ok": True}
    finally:
        engine.shutdown()


def test_limits_below_one_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        make_engine(tmp_path, max_queue=0)


def test_the_api_answers_429_with_a1111s_error_shape(engine: Engine, tmp_path: Path) -> None:
    """At the FastAPI level (no server): txt2img and the extras (work jobs) both get 429 with a readable detail."""
    from fastapi import APIRouter, FastAPI
    from fastapi.testclient import TestClient

    from app.api import generate, info
    from app.api.context import ApiContext
    from app.api.errors import install_error_handlers
    from app.api.options import OptionsStore, default_options

    context = ApiContext(engine, OptionsStore(tmp_path / "options.json", default_options(None)))
    app = FastAPI()
    router = APIRouter(prefix="/sdapi/v1")
    router.include_router(generate.router(context))
    router.include_router(info.router(context))
    app.include_router(router)
    install_error_handlers(app)
    gate = Gate()
    jobs = fill(engine, gate, "api", 20)  # "api": the owner of API calls without logins
    try:
        with TestClient(app) as client:
            for path, body in (("/sdapi/v1/txt2img", {"prompt": "a cat", "steps": 2, "width": 64, "height": 64}),
                               ("/sdapi/v1/extra-single-image", {"image": "", "upscaling_resize": 2})):
                answer = client.post(path, json=body)
                assert answer.status_code == 429, answer.text
                shown = answer.json()
                assert set(shown) == {"error", "detail", "body", "errors"} and shown["error"] == "QueueFull"
                assert "queue is full" in shown["detail"] and "20" in shown["detail"]
    finally:
        gate.open()
        for job in jobs:
            job.wait(WAIT)
