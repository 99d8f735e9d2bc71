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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque

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
    together; None: no bound."""

    def __init__(self, max_per_owner: int | None = None, max_queued: int | None = None, concurrency: int = 1) -> None:
        if concurrency < 1:
            raise ValueError("A worker runs at least one job at a time.")
        self.max_per_owner = max_per_owner
        self.max_queued = max_queued
        self.concurrency = concurrency
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
            self._running.append(job)
            self._announce_positions()
            try:
                self._run(job)
            finally:
                self._running.remove(job)
                self._forget(job)

    def _run(self, job: Job) -> None:
        context = JobContext(job)
        started = time.monotonic()
        error = ""  # the kind of error a failed job met, for the audit log (its message may quote the request)
        try:
            if job.cancel_requested:
                raise JobCancelled("Cancelled before it started.")
            result = job.run(context)
            job.emit("done", result=result)
        except JobCancelled as exc:
            log.info("%s cancelled: %s", job.id, exc)
            job.emit("cancelled", message=str(exc), result=context.partial)
        except torch.OutOfMemoryError as exc:
            log.error("%s ran out of device memory: %s", job.id, exc)
            error = "out of device memory"
            free_device_memory()
            job.emit("failed", message="Out of device memory: try a smaller size or batch, or fp16.")
        except ValueError as exc:  # bad input found while running (e.g. a model that does not fit)
            log.warning("%s failed: %s", job.id, exc)
            error = type(exc).__name__
            job.emit("failed", message=str(exc))
        except Exception as exc:  # anything else fails this job only; the worker lives on
            log.exception("%s failed", job.id)
            error = type(exc).__name__
            free_device_memory()
            job.emit("failed", message=f"{type(exc).__name__}: {exc}")
        finally:
            _audit_end(job, time.monotonic() - started, error)

    def _forget(self, job: Job) -> None:
        """Drop the oldest finished jobs once many have piled up (recent ones stay queryable)."""
        with self._lock:
            finished = [jid for jid, j in self._jobs.items() if j.finished]
            for jid in finished[: max(0, len(finished) - KEEP_FINISHED_JOBS)]:
                del self._jobs[jid]


def _audit_end(job: Job, seconds: float, error: str) -> None:
    """The audit line of a job that ran: finished, failed (with the kind of error) or cancelled, and its time."""
    phase = job.final_event.phase if job.final_event is not None else "ended"
    outcome = "finished" if phase == "done" else phase
    audit(outcome, job.owner, job.id, f"{seconds:.1f} s" + (f" ({error})" if error else ""))
