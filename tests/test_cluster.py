"""Generation on a Ray cluster (app.cluster): a local Ray instance started and stopped by this module,
a deployment of 2 CPU replicas on the tiny models, behind an Engine whose queue, owners and outputs stay
in this process. Those tests are skipped without the ``cluster`` extra (``pip install -e .[cluster]``);
the first ones, of the Worker running several jobs at once, need no Ray."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.engine import Engine, EngineConfig, JobCancelled, JobFailed, JobResult, Txt2ImgRequest
from app.engine.a1111_request import a1111_info
from app.engine.jobs import Job, QueueFull
from app.engine.worker import Worker
from app.ui.progress import progress_html

SMALL = dict(width=64, height=64, steps=4)
REPLICAS = 2
NO_RAY = "the cluster extra is not installed (pip install -e .[cluster])"


class Gate:
    """Jobs that wait to be let go, recording when each started and how many ran at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []
        self.running = self.most = 0
        self.lock = threading.Lock()

    def job(self, owner: str, name: str) -> Job:
        def work(ctx) -> JobResult:
            with self.lock:
                self.started.append(name)
                self.running += 1
                self.most = max(self.most, self.running)
            self.release.wait(30)
            with self.lock:
                self.running -= 1
            return JobResult(info={"name": name})
        return Job(owner, work)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_worker_of_concurrency_two_runs_two_jobs_at_once_in_fair_order_within_limits() -> None:
    gate, worker = Gate(), Worker(max_per_owner=4, concurrency=2)
    try:
        jobs = [worker.submit(gate.job("alice", name)) for name in ("a1", "a2")]
        wait_until(lambda: len(gate.started) == 2)
        jobs += [worker.submit(gate.job(owner, name)) for owner, name in
                 [("alice", "a3"), ("alice", "a4"), ("bob", "b1")]]
        with pytest.raises(QueueFull):
            worker.submit(gate.job("alice", "a5"))  # queued and running count against the owner's limit
        time.sleep(0.2)
        assert gate.started == ["a1", "a2"] and gate.running == 2  # two at once, no third
        assert [job.latest.position for job in jobs[2:]] == [1, 3, 2]  # both threads busy; bob's turn before a4
        gate.release.set()
        assert [job.wait(10).info["name"] for job in jobs] == ["a1", "a2", "a3", "a4", "b1"]
        assert gate.most == 2 and len(gate.started) == 5
    finally:
        gate.release.set()
        worker.stop()
    assert not worker.alive


class FakeRemote:
    """A remote generation of two workers that only counts."""

    replicas = 2

    def run(self, ctx, request, settings, user) -> JobResult:
        return JobResult()

    def close(self) -> None:
        pass


def test_with_a_cluster_local_device_work_still_takes_turns(models_dir: Path, outputs_dir: Path) -> None:
    gate = Gate()
    eng = Engine(config_for(models_dir, outputs_dir), remote=FakeRemote())
    try:
        assert eng.worker.concurrency == 2
        jobs = [eng.submit_work(gate.job("x", name)._work, f"train {name}", owner=name) for name in ("t1", "t2")]
        wait_until(lambda: len(gate.started) == 1)
        time.sleep(0.3)
        assert len(gate.started) == 1  # the second waits for this process's device, not for a free thread
        gate.release.set()
        for job in jobs:
            job.wait(10)
        assert gate.most == 1
    finally:
        gate.release.set()
        eng.shutdown()


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def config_for(models_dir: Path, outputs_dir: Path) -> EngineConfig:
    return EngineConfig(models_dir=models_dir, outputs_dir=outputs_dir, default_model="tiny-sd1", device="cpu",
                        preview_every=1, max_resident_models=1)


@pytest.fixture(scope="module")
def cluster(ray_to_itself, models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One local Ray instance and one deployment for the module (starting them takes ~25 s here)."""
    pytest.importorskip("ray.serve", reason=NO_RAY)
    import ray
    from ray import serve

    from app.cluster.connect import Placement, deploy

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    try:
        # the replicas' outputs folder is one they never write: pictures are saved by the UI process
        unused = tmp_path_factory.mktemp("replica-outputs-unused")
        # as many torch threads as this process: a CPU's float sums depend on how they are split
        where = Placement(REPLICAS, {"num_cpus": 0.5}, cpu_threads=torch.get_num_threads())
        handle = deploy(config_for(models_dir, unused), where)
        yield handle
        assert not any(unused.iterdir())
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
def cluster_engine(cluster, models_dir: Path, outputs_dir: Path):
    from app.cluster.remote_worker import ClusterGeneration

    eng = Engine(config_for(models_dir, outputs_dir), remote=ClusterGeneration(cluster, REPLICAS, "tiny-sd1"))
    yield eng
    eng.shutdown()


def replica_status(handle) -> dict[str, dict]:
    from app.cluster.connect import workers

    return {status["worker"]: status for status in workers(handle, REPLICAS, attempts=10)}


@pytest.mark.slow
def test_four_jobs_of_two_owners_run_on_both_replicas_with_the_local_pixels(cluster_engine: Engine, engine: Engine,
                                                                              outputs_dir: Path) -> None:
    requests = [(owner, Txt2ImgRequest(prompt=f"a red circle {seed}", seed=seed, **SMALL))
                for seed, owner in zip(range(11, 15), ("alice", "bob", "alice", "bob"))]
    jobs = [cluster_engine.submit(request, owner=owner, user=owner) for owner, request in requests]
    results = [job.wait(240) for job in jobs]
    workers = {result.info["worker"] for result in results}
    assert len(workers) == 2, workers  # two replica processes ran them
    assert str(os.getpid()) not in " ".join(workers)  # not this process
    for (owner, request), result in zip(requests, results):
        local = engine.generate(request.with_changes(save=False))
        assert np.array_equal(pixels(result.images[0]), pixels(local.images[0]))
        assert result.infotexts == local.infotexts  # Version and every other field as a local run writes them
        assert result.seeds == [request.seed]
        assert len(result.paths) == 1 and result.paths[0].is_relative_to(outputs_dir / owner / "txt2img-images")
        assert np.array_equal(pixels(result.images[0]), pixels(Image.open(result.paths[0])))
    assert sorted(p.name for p in (outputs_dir / "alice").rglob("*.png")) == ["00000-11.png", "00001-13.png"]


@pytest.mark.slow
def test_model_affinity_keeps_each_checkpoint_on_its_replica(cluster, cluster_engine: Engine) -> None:
    before = replica_status(cluster)
    models = ["tiny-sd1", "tiny-sd2-v"] * 4
    ran_on = []
    for seed, model in enumerate(models):
        result = cluster_engine.generate(Txt2ImgRequest(prompt="a square", model=model, seed=seed, save=False,
                                                        **SMALL), timeout=240)
        ran_on.append((model, result.info["worker"]))
    after = replica_status(cluster)
    loads = sum(after[w]["loads"] for w in after) - sum(before[w]["loads"] for w in before if w in after)
    # one replica per model, each keeping one (max_resident_models=1): at most the first load of each;
    # a router blind to models would reload on about half of the 8 jobs, one worker on every one
    assert loads <= 2, (loads, ran_on)
    # once each model has run (the first job of a model may go to any replica holding it: the earlier tests
    # leave tiny-sd1 on both), each stays on its own replica
    settled = ran_on[2:]
    for model in set(models):
        assert len({worker for m, worker in settled if m == model}) == 1, ran_on
    assert len({worker for _, worker in settled}) == 2, ran_on


@pytest.mark.slow
def test_interrupt_stops_the_job_on_its_replica_and_only_its_owner_may(cluster, cluster_engine: Engine,
                                                                      outputs_dir: Path) -> None:
    job = cluster_engine.submit(Txt2ImgRequest(prompt="long", seed=1, width=128, height=128, steps=150),
                                owner="alice", user="alice")
    for event in job.events(timeout=120):
        if event.phase == "sampling" and (event.step or 0) >= 2:
            break
    assert cluster_engine.current_job("bob") is None  # bob does not see alice's job
    with pytest.raises(PermissionError):
        cluster_engine.cancel(job.id, owner="bob")
    assert not job.finished
    asked = time.monotonic()
    assert cluster_engine.cancel(job.id, owner="alice")
    with pytest.raises(JobCancelled):
        job.wait(30)
    assert time.monotonic() - asked < 10
    assert not (outputs_dir / "alice").exists()
    deadline = time.monotonic() + 30  # Serve frees the replica at once; it records the stop a moment later
    while True:
        statuses = list(replica_status(cluster).values())
        stopped = [s for s in statuses if s["cancelled"] >= 1]
        if stopped or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(stopped) == 1 and 0 <= stopped[0]["steps_after_cancel"] <= 1, statuses  # stopped within a step
    assert cluster_engine.generate(Txt2ImgRequest(prompt="after", seed=2, save=False, **SMALL), timeout=120).images


@pytest.mark.slow
def test_skip_reaches_the_replica_and_drops_only_the_batch_being_drawn(cluster_engine: Engine,
                                                                      outputs_dir: Path) -> None:
    request = Txt2ImgRequest(prompt="skipped first", seed=5, width=64, height=64, steps=40, batch_count=2)
    job = cluster_engine.submit(request, owner="alice", user="alice")
    for event in job.events(timeout=120):
        if event.phase == "sampling" and (event.step or 0) >= 2 and event.batch_index == 0:
            break
    assert not cluster_engine.skip("bob")  # bob has no job, and cannot reach alice's
    assert cluster_engine.skip("alice")
    result = job.wait(240)
    assert result.seeds == [6]  # the first batch (seed 5) was dropped mid-way; the second drawn whole
    assert [p.name for p in result.paths] == ["00000-6.png"]
    assert sorted(p.name for p in (outputs_dir / "alice").rglob("*.png")) == ["00000-6.png"]
    # the person sees which worker ran it: the finished bar and the API's info name it
    worker = result.info["worker"]
    assert re.fullmatch(r"[^:]+:\d+ \(cpu\)", worker), worker
    assert f"Done on worker {worker}" in progress_html(job.final_event)
    assert a1111_info(request, result, job_timestamp="")["worker"] == worker


@pytest.mark.slow
def test_a_killed_replica_fails_its_job_clearly_and_the_next_jobs_succeed(cluster_engine: Engine,
                                                                         outputs_dir: Path) -> None:
    job = cluster_engine.submit(Txt2ImgRequest(prompt="doomed", seed=3, width=128, height=128, steps=150),
                                owner="alice", user="alice")
    pid = None
    for event in job.events(timeout=120):
        found = re.search(r"Running on worker [^:]+:(\d+)", event.message or "")
        if found:
            pid = int(found.group(1))
        if event.phase == "sampling" and pid is not None:
            os.kill(pid, signal.SIGKILL)
            break
    assert pid is not None and pid != os.getpid()
    with pytest.raises(JobFailed, match=r"stopped before it finished.*not retried"):
        job.wait(120)
    after = [cluster_engine.submit(Txt2ImgRequest(prompt="next", seed=s, **SMALL), owner="bob", user="bob")
             for s in (21, 22)]
    results = [next_job.wait(240) for next_job in after]
    assert all(len(result.images) == 1 for result in results)
    assert all(str(pid) not in result.info["worker"] for result in results)
    assert not (outputs_dir / "alice").exists()  # nothing of the failed job, not even a partial file
    # the two jobs run at once on the two workers: either may be saved first, each with its own number
    files = sorted(p.name for p in outputs_dir.rglob("*") if p.is_file())
    assert sorted(name[:5] for name in files) == ["00000", "00001"], files
    assert sorted(name[6:] for name in files) == ["21.png", "22.png"], files
