"""Batching across queued requests (``--batch-requests``): queued txt2img jobs of several people with the
same model, size, sampler and steps are drawn as one pipeline call, and each still gets its own pixels,
seeds, infotext, files, progress and cancel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import app  # noqa: F401  (first: before diffusers)
import numpy as np
import pytest
from diffusers import StableDiffusionPipeline
from PIL import Image

from app.engine import Engine, EngineConfig, JobCancelled, LoraSpec, Txt2ImgRequest
from app.engine.batching import batch_key
from app.engine.jobs import Job, JobContext, JobResult
from app.engine.outputs import read_parameters
from app.engine.requests import Img2ImgRequest
from app.engine.worker import FairQueue

SMALL = dict(width=64, height=64, steps=4)
# CPU fp32: a row of a batched matmul may round differently from the same row alone. Measured on the tiny
# SD 1.x, SDXL and SD 2.x models with Euler a, DPM++ 2M and DPM++ SDE (8 steps, 4 jobs, 5 images): latents
# differ by at most 2e-4 (of values up to 80), pixels by at most 1 level of 255.
PIXEL_TOLERANCE = 1


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def batching(models_dir: Path, outputs_dir: Path) -> Iterator[Engine]:
    eng = Engine(EngineConfig(models_dir=models_dir, outputs_dir=outputs_dir, default_model="tiny-sd1", device="cpu",
                              preview_every=1, batch_requests=4))
    yield eng
    eng.shutdown()


class Calls(list):
    """The images of each txt2img pipeline call, in order; ``raised``: the calls that ended by an exception."""

    raised: list[str]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    seen = Calls()
    seen.raised = []
    original = StableDiffusionPipeline.__call__

    def counted(self, *args, **kwargs):
        seen.append(len(kwargs["generator"]))
        try:
            return original(self, *args, **kwargs)
        except Exception as exc:
            seen.raised.append(type(exc).__name__)
            raise

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", counted)
    return seen


class Hold:
    """Keeps the worker busy (a job that waits) while other jobs queue behind it."""

    def __init__(self, engine: Engine) -> None:
        self.release = threading.Event()
        started = threading.Event()

        def work(ctx: JobContext) -> JobResult:
            started.set()
            self.release.wait(60)
            return JobResult()

        self.job = engine.submit_work(work, "hold the worker", owner="holder")
        assert started.wait(30)

    def __enter__(self) -> "Hold":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.job.wait(30)


# ----- which jobs may batch ------------------------------------------------------------------

def test_batch_key_matches_plain_jobs_and_refuses_the_rest() -> None:
    base = Txt2ImgRequest(prompt="a red circle", seed=1, **SMALL)
    key = batch_key(base, "tiny-sd1")
    assert key is not None
    # seed, prompt, negative prompt, batch size, saving and the model named as the default do not matter
    for other in (base.with_changes(seed=9, prompt="a blue square", negative_prompt="blurry", batch_size=3,
                                    save=False, model="tiny-sd1"),
                  base.with_changes(sampler="Euler a", schedule_type="Automatic")):
        assert batch_key(other, "tiny-sd1") == key
    # the same LoRA set, asked for in the field or by a tag
    field_lora = base.with_changes(loras=(LoraSpec("star", 0.5),))
    assert batch_key(field_lora, "tiny-sd1") == batch_key(base.with_changes(prompt="a <lora:star:0.5> circle"),
                                                           "tiny-sd1") != key
    assert batch_key(field_lora.with_changes(loras=(LoraSpec("star", 0.6),)), "tiny-sd1") != \
        batch_key(field_lora, "tiny-sd1")
    for changes in (dict(width=128), dict(height=128), dict(steps=5), dict(cfg_scale=5.0), dict(sampler="Euler"),
                    dict(clip_skip=2), dict(emphasis="No norm"), dict(model="tiny-sdxl"), dict(vae="other")):
        assert batch_key(base.with_changes(**changes), "tiny-sd1") not in (None, key), changes
    for changes in (dict(enable_hr=True), dict(tiling=True), dict(restore_faces=True), dict(batch_count=2),
                    dict(prompt="a [red:blue:0.5] circle"), dict(prompt="a [red|blue] circle"),
                    dict(negative_prompt="[blurry:sharp:2]")):
        assert batch_key(base.with_changes(**changes), "tiny-sd1") is None, changes
    assert batch_key(Img2ImgRequest(prompt="x", **SMALL), "tiny-sd1") is None


def test_fair_queue_takes_mates_in_fair_order_without_passing_an_owners_earlier_job() -> None:
    queue = FairQueue()
    for name in ("a1", "a2", "a3", "b1", "b2", "c1", "d1"):
        queue.put(Job(name[0], lambda ctx: JobResult(), description=name))
    assert queue.take().description == "a1"  # a goes to the back: b1, c1, d1, a2, b2, a3
    fits = {"a2", "a3", "b2", "c1"}  # b1 and d1 do not fit; b2 must not pass b1
    taken = queue.take_along(2, lambda job: job.description in fits)
    assert [job.description for job in taken] == ["c1", "a2"]
    assert [job.description for job in queue.order()] == ["b1", "d1", "a3", "b2"]
    assert queue.take_along(5, lambda job: True) and len(queue) == 0


# ----- one batch, each job its own ------------------------------------------------------------

@pytest.mark.slow
def test_queued_jobs_of_three_people_run_as_one_call_and_equal_their_runs_alone(
        batching: Engine, calls: Calls, outputs_dir: Path) -> None:
    wanted = [("alice", Txt2ImgRequest(prompt="a red circle", seed=10, **SMALL)),
              ("bob", Txt2ImgRequest(prompt="a blue square, (bold:1.3)", negative_prompt="blurry", seed=20,
                                     batch_size=2, **SMALL)),
              ("carol", Txt2ImgRequest(prompt="a green triangle", seed=30, **SMALL)),
              ("alice", Txt2ImgRequest(prompt="a yellow star", seed=40, **SMALL))]
    with Hold(batching):
        jobs = [batching.submit(request, owner=owner, user=owner) for owner, request in wanted]
        events: dict[str, list] = {job.id: [] for job in jobs}
        followers = [threading.Thread(target=lambda job=job: events[job.id].extend(job.events(timeout=120)))
                     for job in jobs]
        for follower in followers:
            follower.start()
    results = [job.wait(120) for job in jobs]
    for follower in followers:
        follower.join(10)
    assert calls == [5]  # one pipeline call for 4 jobs, 5 images

    for (owner, request), job, result in zip(wanted, jobs, results):
        seeds = [request.seed + k for k in range(request.batch_size)]
        assert result.seeds == seeds and len(result.images) == len(seeds)
        assert [path.parent.parent.parent for path in result.paths] == [outputs_dir / owner] * len(seeds)
        for path, text, seed in zip(result.paths, result.infotexts, seeds):
            assert read_parameters(path) == text and f"Seed: {seed}," in text
            assert text.startswith(request.prompt)
        steps = [e.step for e in events[job.id] if e.phase == "sampling" and e.step is not None]
        assert steps == [1, 2, 3, 4]  # its own progress, every step
        assert any(e.preview is not None for e in events[job.id])
        assert events[job.id][-1].phase == "done"

    calls.clear()
    for (owner, request), result in zip(wanted, results):
        alone = batching.generate(request.with_changes(save=False), owner=owner)  # nothing queued: alone
        for ours, theirs in zip(result.images, alone.images):
            assert np.abs(pixels(ours) - pixels(theirs)).max() <= PIXEL_TOLERANCE
        assert alone.infotexts == result.infotexts
    assert calls == [1, 2, 1, 1]


@pytest.mark.slow
def test_incompatible_jobs_are_not_merged(batching: Engine, calls: Calls) -> None:
    with Hold(batching):
        plain = [batching.submit(Txt2ImgRequest(prompt=f"plain {owner}", seed=1, save=False, **SMALL), owner=owner)
                 for owner in ("alice", "bob")]
        others = [batching.submit(Txt2ImgRequest(prompt="wider", seed=1, save=False, **{**SMALL, "width": 128}),
                                  owner="carol"),
                  batching.submit(Txt2ImgRequest(prompt="longer", seed=1, save=False, **{**SMALL, "steps": 5}),
                                  owner="dave"),
                  batching.submit(Txt2ImgRequest(prompt="hires", seed=1, save=False, enable_hr=True, hr_scale=1.5,
                                                 **SMALL), owner="erin"),
                  batching.submit(Txt2ImgRequest(prompt="[edited:changed:2]", seed=1, save=False, **SMALL),
                                  owner="frank"),
                  # batches by its settings, but its 2 chunks of 75 tokens do not stack with 1: drawn alone
                  batching.submit(Txt2ImgRequest(prompt="word " * 100, seed=1, save=False, **SMALL), owner="gina")]
    for job in plain + others:
        assert job.wait(120).images
    assert calls[:2] == [2, 1]  # the two plain jobs together, then the long prompt taken with them, alone
    assert sorted(calls[2:]) == [1, 1, 1, 1]  # the hires job's second pass is an img2img call


def test_a_batch_takes_at_most_batch_requests_jobs(batching: Engine, calls: Calls) -> None:
    with Hold(batching):
        jobs = [batching.submit(Txt2ImgRequest(prompt=f"job {i}", seed=i, save=False, **SMALL), owner=f"user{i}")
                for i in range(5)]
    assert [job.wait(120).seeds for job in jobs] == [[i] for i in range(5)]
    assert calls == [4, 1]


def test_default_runs_each_job_alone(engine: Engine, calls: Calls) -> None:
    assert engine.config.batch_requests == 1
    with Hold(engine):
        jobs = [engine.submit(Txt2ImgRequest(prompt=f"job {owner}", seed=1, save=False, **SMALL), owner=owner)
                for owner in ("alice", "bob", "carol")]
        assert all(job.batch is None for job in jobs)
    for job in jobs:
        job.wait(120)
    assert calls == [1, 1, 1]


def all_events(job: Job) -> list:
    """The events of a job that has ended (all of them are queued by then)."""
    return list(job.events(timeout=1))


# ----- cancel and isolation -----------------------------------------------------------------

def cancel_at_step(engine: Engine, job: Job, step: int) -> None:
    """Have ``job``'s owner cancel it just as the worker reports its step ``step`` (the same point whatever
    the machine's load, unlike a follower thread that may lag behind the worker)."""
    emit = job.emit

    def emitting(phase: str, **data: object) -> None:
        emit(phase, **data)
        if phase == "sampling" and data.get("step") == step:
            assert engine.cancel(job.id, owner=job.owner)

    job.emit = emitting  # type: ignore[method-assign]


@pytest.mark.slow
def test_one_cancelled_member_ends_at_once_and_the_others_go_on(batching: Engine, calls: Calls,
                                                                outputs_dir: Path) -> None:
    long = dict(width=64, height=64, steps=12)
    with Hold(batching):
        alice = batching.submit(Txt2ImgRequest(prompt="alice", seed=1, **long), owner="alice", user="alice")
        bob = batching.submit(Txt2ImgRequest(prompt="bob", seed=2, **long), owner="bob", user="bob")
        with pytest.raises(PermissionError):
            batching.cancel(alice.id, owner="bob")  # one owner cannot cancel another's job
        assert batching.worker.active_jobs("bob") == [bob]  # nor see it
        cancel_at_step(batching, alice, 3)
    with pytest.raises(JobCancelled) as stopped:
        alice.wait(120)
    assert stopped.value.result.images == []
    result = bob.wait(120)
    assert result.seeds == [2] and len(result.paths) == 1
    assert calls == [2]  # both were in the one call
    assert not (outputs_dir / "alice").exists()
    alice_events, bob_events = all_events(alice), all_events(bob)
    assert [e.step for e in alice_events if e.phase == "sampling"] == [1, 2, 3]
    assert alice_events[-1].phase == "cancelled"
    bob_steps = {e.step: e.time for e in bob_events if e.phase == "sampling"}
    assert list(bob_steps) == list(range(1, 13))
    assert alice_events[-1].time <= bob_steps[4]  # alice's job ended at the next step; bob's went on

    alone = batching.generate(Txt2ImgRequest(prompt="bob", seed=2, save=False, **long))
    assert np.abs(pixels(alone.images[0]) - pixels(result.images[0])).max() <= PIXEL_TOLERANCE


@pytest.mark.slow
def test_a_batch_whose_jobs_are_all_cancelled_stops(batching: Engine, calls: Calls) -> None:
    long = dict(width=64, height=64, steps=150)
    with Hold(batching):
        jobs = [batching.submit(Txt2ImgRequest(prompt=owner, seed=1, save=False, **long), owner=owner)
                for owner in ("alice", "bob")]
        for job in jobs:
            cancel_at_step(batching, job, 2)
        skipped = batching.submit(Txt2ImgRequest(prompt="carol", seed=1, save=False, **long), owner="carol")
        assert batching.skip("carol")  # A1111's Skip on a job of one batch: it ends with no picture
    for job in jobs:
        with pytest.raises(JobCancelled):
            job.wait(120)
        assert [e.step for e in all_events(job) if e.phase == "sampling"] == [1, 2]
    assert skipped.wait(120).images == []
    after = batching.generate(Txt2ImgRequest(prompt="after", seed=1, save=False, **SMALL))
    assert after.images and calls == [3, 1]
    assert len(calls.raised) == 1  # the batch's call stopped once nobody was left in it
