"""Jobs and their events: what a client holds while the worker runs its request."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Protocol

from PIL import Image

TERMINAL_PHASES = frozenset({"done", "failed", "cancelled"})
PHASES = ("queued", "loading", "sampling", "training", "decoding", "saving", "done", "failed", "cancelled")


class JobCancelled(Exception):
    """Raised inside a running job when its owner cancelled it. ``Job.wait`` raises it with ``result``:
    what the job finished before it stopped (a generation keeps its finished batches, as A1111 does)."""

    def __init__(self, message: str = "cancelled", result: JobResult | None = None) -> None:
        super().__init__(message)
        self.result = result if result is not None else JobResult()


class BatchSkipped(Exception):
    """Raised inside a running generation when its owner skipped the batch being drawn (A1111's Skip)."""


class JobFailed(RuntimeError):
    """Raised by ``Job.wait`` when the job failed; the message is the job's error."""


class QueueFull(ValueError):
    """Raised by a submit when the owner's jobs, or all queued jobs, are at their limit; nothing was queued.
    A ValueError, so front ends show it as they show a bad request (the REST API answers 429)."""

    def __init__(self, message: str, limit: int, per_owner: bool) -> None:
        super().__init__(message)
        self.limit = limit
        self.per_owner = per_owner  # False: the limit of all owners' queued jobs together


@dataclass
class JobResult:
    images: list[Image.Image] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobEvent:
    """One update of a job. ``phase`` is one of PHASES; the other fields fill in as they apply."""

    job_id: str
    phase: str
    position: int | None = None  # queued: how many jobs run before this one (0 = next)
    step: int | None = None  # sampling: steps done in the current image batch
    total_steps: int | None = None
    batch_index: int | None = None  # which of the request's batches (0-based)
    batch_count: int | None = None
    eta_seconds: float | None = None  # for the whole job, from the measured speed
    preview: Image.Image | None = None  # sampling: a cheap latent preview every few steps
    loss: float | None = None  # training: the loss of the step just done
    samples: tuple[Path, ...] = ()  # training: sample images written at this step
    result: JobResult | None = None
    message: str = ""
    time: float = field(default_factory=time.monotonic)

    @property
    def is_terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


class Batchable(Protocol):
    """What lets a queued job run in one batch with other queued jobs whose ``key`` is equal
    (``app.engine.batching`` for generation; the worker only compares keys)."""

    @property
    def key(self) -> Hashable: ...


class Job:
    """A unit of device work with an owner, an event stream and a cancel flag."""

    def __init__(self, owner: str, work: Callable[["JobContext"], JobResult], description: str = "") -> None:
        self.id = f"job-{uuid.uuid4().hex[:12]}"
        self.owner = owner
        self.description = description
        self._work = work
        self._events: queue.Queue[JobEvent] = queue.Queue()
        self._cancel = threading.Event()
        self._skip = threading.Event()
        self._finished = threading.Event()
        self.final_event: JobEvent | None = None
        self.latest: JobEvent | None = None  # the newest event, for clients that poll (the REST API)
        self.latest_preview: Image.Image | None = None  # the newest live preview
        self.batch: Batchable | None = None  # set when the job may run in one batch with others

    # ----- for clients ---------------------------------------------------------------------
    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def events(self, timeout: float | None = None) -> Iterator[JobEvent]:
        """Yield events until the terminal one (inclusive). ``timeout`` bounds each wait."""
        while True:
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"{self.id}: no event for {timeout} s") from None
            yield event
            if event.is_terminal:
                return

    def wait(self, timeout: float | None = None) -> JobResult:
        """Block until the job ends; return its result or raise JobFailed, or JobCancelled holding the
        partial result (a script must not mistake the batches done before an interrupt for the whole job)."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"{self.id} did not finish within {timeout} s")
        final = self.final_event
        assert final is not None
        if final.phase == "cancelled":
            raise JobCancelled(final.message or "cancelled", final.result)
        if final.phase == "failed":
            raise JobFailed(final.message)
        assert final.result is not None
        return final.result

    # ----- for the worker ------------------------------------------------------------------
    def emit(self, phase: str, **data: Any) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        event = JobEvent(self.id, phase, **data)
        self.latest = event
        if event.preview is not None:
            self.latest_preview = event.preview
        if event.is_terminal:
            self.final_event = event
        self._events.put(event)
        if event.is_terminal:
            self._finished.set()

    def request_cancel(self) -> None:
        self._cancel.set()

    def request_skip(self) -> None:
        """Stop the batch being drawn and go on with the next (a job that is not a generation ignores it)."""
        self._skip.set()

    def run(self, context: "JobContext") -> JobResult:
        return self._work(context)


@dataclass
class JobContext:
    """Handed to a job's work function: report progress, and stop when cancelled."""

    job: Job
    partial: JobResult = field(default_factory=JobResult)  # what the work has finished: a cancelled job ends with it

    def emit(self, phase: str, **data: Any) -> None:
        self.job.emit(phase, **data)

    @property
    def cancel_requested(self) -> bool:
        """For work that stops cleanly at its own pace (training saves a checkpoint first)."""
        return self.job.cancel_requested

    def check_cancelled(self) -> None:
        if self.job.cancel_requested:
            raise JobCancelled("Interrupted by its owner.")

    def check_skipped(self) -> None:
        """Raise BatchSkipped once for each skip asked for."""
        if self.take_skip():
            raise BatchSkipped("Skipped by its owner.")

    def take_skip(self) -> bool:
        """Whether a skip was asked for since the last call (for work that passes it on: a cluster job)."""
        if self.job._skip.is_set():
            self.job._skip.clear()
            return True
        return False
