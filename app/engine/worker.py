"""The thread that owns the device, and the fair queue that feeds it.

Owners (a browser session, an API client) are served in turn: the queue takes the oldest job of
the next owner in round-robin order, so a batch of 50 from one person does not hold up a
teammate's single image. An exception in a job fails that job only; the thread lives on.

The queue is bounded, per owner (queued or running jobs) and for all owners together (queued
jobs): a script that floods it is refused its next job, while other people can still queue theirs.
Each job's cancel request and end go to the audit log (``app.audit``).

With ``concurrency`` N > 1 (generation on a Ray cluster of N workers, ``app.cluster``) N threads take
jobs from the same fair queue, so N jobs run at once, still started in the fair order and under the
same limits. The default, 1, is one thread running one job at a time.

With ``batch_requests`` N > 1 (one thread only) the thread takes, with each job it starts, up to N - 1
more queued jobs whose ``Job.batch`` key equals its own, in the fair order, and hands them all to
``run_batch`` (``app.engine.batching``): one batch, each job with its own events and end.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator

import torch

from app.audit import audit
from app.engine.jobs import Job, JobCancelled, JobContext, JobResult, QueueFull
from app.engine.manager import free_device_memory

log = logging.getLogger(__name__)

KEEP_FINISHED_JOBS = 256


class FairQueue:
    """Jobs grouped by owner, taken one owner at a time in round-robin order."""

    def __init__(self) -> None:
        self._by_owner: OrderedDict[str, deque[Job]] = OrderedDict()
        self._cond = threading.Condition()

    def put(self, job: Job) -> None:
        with self._cond:
            self._by_owner.setdefault(job.owner, deque()).append(job)
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Job | None:
        """The next job, or None after ``timeout`` seconds with nothing queued."""
        with self._cond:
            if not self._by_owner and not self._cond.wait_for(lambda: bool(self._by_owner), timeout):
                return None
            owner, jobs = next(iter(self._by_owner.items()))
            job = jobs.popleft()
            del self._by_owner[owner]
            if jobs:  # this owner goes to the back of the line
                self._by_owner[owner] = jobs
            return job

    def take_along(self, limit: int, fits: Callable[[Job], bool]) -> list[Job]:
        """Up to ``limit`` queued jobs that ``fits``, in the fair order, never ahead of an earlier job of the
        same owner (a person's jobs start in the order they were queued); their owners go to the back."""
        with self._cond:
            taken: list[Job] = []
            passed: set[str] = set()  # owners whose next job does not fit
            for job in self.order():
                if len(taken) >= limit:
                    break
                if job.owner in passed:
                    continue
                if fits(job):
                    taken.append(job)
                else:
                    passed.add(job.owner)
            for job in taken:
                jobs = self._by_owner[job.owner]
                jobs.remove(job)
                if jobs:
                    self._by_owner.move_to_end(job.owner)
                else:
                    del self._by_owner[job.owner]
            return taken

    def remove(self, job: Job) -> bool:
        with self._cond:
            jobs = self._by_owner.get(job.owner)
            if jobs is None or job not in jobs:
                return False
            jobs.remove(job)
            if not jobs:
                del self._by_owner[job.owner]
            return True

    def order(self) -> list[Job]:
        """Queued jobs in the order they will run."""
        with self._cond:
            lines = [list(jobs) for jobs in self._by_owner.values()]
        ordered: list[Job] = []
        depth = 0
        while any(depth < len(line) for line in lines):
            ordered.extend(line[depth] for line in lines if depth < len(line))
            depth += 1
        return ordered

    def __len__(self) -> int:
        with self._cond:
            return sum(len(jobs) for jobs in self._by_owner.values())


class Worker:
    """Runs jobs one at a time on its own thread (``concurrency`` at a time on as many threads).
    ``max_per_owner`` bounds each owner's queued or running jobs, ``max_queued`` all owners' queued jobs
    together; None: no bound. ``batch_requests`` > 1: up to that many jobs of one batch key run as one
    batch through ``run_batch``, which ends each job it runs and returns those it leaves to run alone."""

    def __init__(self, max_per_owner: int | None = None, max_queued: int | None = None, concurrency: int = 1,
                 batch_requests: int = 1, run_batch: Callable[[list[JobContext]], list[Job]] | None = None) -> None:
        if concurrency < 1:
            raise ValueError("A worker runs at least one job at a time.")
        if batch_requests < 1:
            raise ValueError("A batch holds at least one job.")
        if batch_requests > 1 and (concurrency > 1 or run_batch is None):
            raise ValueError("Batching needs one worker thread and a run_batch.")
        self.max_per_owner = max_per_owner
        self.max_queued = max_queued
        self.concurrency = concurrency
        self.batch_requests = batch_requests
        self.run_batch = run_batch
        self.queue = FairQueue()
        self._jobs: dict[str, Job] = {}
        self._running: list[Job] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            names = ["lora-studio-worker"] if self.concurrency == 1 else \
                [f"lora-studio-worker-{i}" for i in range(self.concurrency)]
            self._threads = [threading.Thread(target=self._loop, name=name, daemon=True) for name in names]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for job in list(self._running):
            job.request_cancel()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def submit(self, job: Job) -> Job:
        """Queue ``job``, or raise QueueFull (nothing queued) when its owner or the queue is at its limit."""
        with self._lock:  # the count and the put at once: two submits cannot both take the last place
            self._check_room(job.owner)
            self._jobs[job.id] = job
            self.queue.put(job)
        self._announce_positions()
        self.start()
        return job

    def _check_room(self, owner: str) -> None:
        """Raise QueueFull if ``owner`` may not queue one more job now (called holding ``_lock``)."""
        if self.max_per_owner is not None:
            mine = sum(1 for job in self._jobs.values() if job.owner == owner and not job.finished)
            if mine >= self.max_per_owner:
                raise QueueFull(f"The queue is full for you: you have {mine} jobs queued or running, and the "
                                f"limit is {self.max_per_owner} per user. Wait for your jobs to finish, or "
                                "interrupt some, then try again.", self.max_per_owner, per_owner=True)
        if self.max_queued is not None and len(self.queue) >= self.max_queued:
            raise QueueFull(f"The queue is full: {len(self.queue)} jobs of all users are waiting, and the limit "
                            f"is {self.max_queued}. Wait for your jobs to finish, or interrupt some, then try "
                            "again in a while.", self.max_queued, per_owner=False)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def active_jobs(self, owner: str) -> list[Job]:
        """The owner's jobs that are queued or running."""
        with self._lock:
            return [job for job in self._jobs.values() if job.owner == owner and not job.finished]

    def cancel(self, job_id: str, owner: str) -> bool:
        """Cancel a queued or running job. Only its owner may; returns False if it already ended."""
        job = self.get(job_id)
        if job is None:
            raise KeyError(f"No job {job_id!r}.")
        if job.owner != owner:
            raise PermissionError("Only the person who started a job can interrupt it.")
        if job.finished:
            return False
        job.request_cancel()
        waiting = self.queue.remove(job)
        audit("cancel", owner, job.id, "queued" if waiting else "running")
        if waiting:
            job.emit("cancelled", message="Cancelled before it started.", result=JobResult())
            audit("cancelled", job.owner, job.id, "before it started")
            self._forget(job)
            self._announce_positions()
        return True

    def _announce_positions(self) -> None:
        busy = 1 if len(self._running) >= self.concurrency else 0  # 0 = starts as soon as a thread is free
        for position, job in enumerate(self.queue.order()):
            job.emit("queued", position=position + busy)

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.queue.take(timeout=0.2)
            if job is None:
                continue
            group = [job] + self._batch_mates(job)
            self._running.extend(group)
            self._announce_positions()
            try:
                for alone in self._run_batch(group) if len(group) > 1 else group:
                    self._run(alone)
            finally:
                for member in group:
                    self._running.remove(member)
                self._forget(job)

    def _batch_mates(self, job: Job) -> list[Job]:
        """Queued jobs that may run in one batch with ``job`` (none unless batching is on)."""
        if self.batch_requests <= 1 or job.batch is None:
            return []
        key = job.batch.key
        return self.queue.take_along(self.batch_requests - 1, lambda other: other.batch is not None
                                     and other.batch.key == key and not other.cancel_requested)

    def _run(self, job: Job) -> None:
        context = JobContext(job)
        with self._ending([context]):
            if job.cancel_requested:
                raise JobCancelled("Cancelled before it started.")
            result = job.run(context)
            job.emit("done", result=result)

    def _run_batch(self, jobs: list[Job]) -> list[Job]:
        """Run ``jobs`` as one batch; return those the batch left to run alone."""
        assert self.run_batch is not None
        contexts = [JobContext(job) for job in jobs]
        with self._ending(contexts):
            alone = self.run_batch(contexts)
            if any(not job.finished and job not in alone for job in jobs):
                raise RuntimeError("the batch left a job neither ended nor to run alone")
            return alone
        return []  # the batch failed: every job of it has ended

    @contextlib.contextmanager
    def _ending(self, contexts: list[JobContext]) -> Iterator[None]:
        """End each job of ``contexts`` that has not ended when the block raises, as the error says (it
        fails those jobs only; the worker lives on); audit each job that ended."""
        started = time.monotonic()
        error = ""  # the kind of error a failed job met, for the audit log (its message may quote the request)

        def running() -> list[JobContext]:
            return [ctx for ctx in contexts if not ctx.job.finished]

        try:
            yield
        except JobCancelled as exc:
            for ctx in running():
                log.info("%s cancelled: %s", ctx.job.id, exc)
                ctx.emit("cancelled", message=str(exc), result=ctx.partial)
        except torch.OutOfMemoryError as exc:
            log.error("%s ran out of device memory: %s", _ids(running()), exc)
            error = "out of device memory"
            free_device_memory()
            for ctx in running():
                ctx.emit("failed", message="Out of device memory: try a smaller size or batch, or fp16.")
        except ValueError as exc:  # bad input found while running (e.g. a model that does not fit)
            log.warning("%s failed: %s", _ids(running()), exc)
            error = type(exc).__name__
            for ctx in running():
                ctx.emit("failed", message=str(exc))
        except Exception as exc:
            log.exception("%s failed", _ids(running()))
            error = type(exc).__name__
            free_device_memory()
            for ctx in running():
                ctx.emit("failed", message=f"{type(exc).__name__}: {exc}")
        finally:
            for ctx in contexts:
                final = ctx.job.final_event
                if final is not None:  # a job a batch left to run alone is audited when it ends
                    _audit_end(ctx.job, max(0.0, final.time - started), error if final.phase == "failed" else "")

    def _forget(self, job: Job) -> None:
        """Drop the oldest finished jobs once many have piled up (recent ones stay queryable)."""
        with self._lock:
            finished = [jid for jid, j in self._jobs.items() if j.finished]
            for jid in finished[: max(0, len(finished) - KEEP_FINISHED_JOBS)]:
                del self._jobs[jid]


def _ids(contexts: list[JobContext]) -> str:
    return ", ".join(ctx.job.id for ctx in contexts)


def _audit_end(job: Job, seconds: float, error: str) -> None:
    """The audit line of a job that ran: finished, failed (with the kind of error) or cancelled, and its time."""
    phase = job.final_event.phase if job.final_event is not None else "ended"
    outcome = "finished" if phase == "done" else phase
    audit(outcome, job.owner, job.id, f"{seconds:.1f} s" + (f" ({error})" if error else ""))
