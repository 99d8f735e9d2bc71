"""The UI process's side of cluster generation: a job's work that runs on a replica of the deployment.

It takes run_generation's place on the local Worker (which runs as many jobs at once as there are
replicas): it streams the job from a replica (Serve's model multiplexing picks one that has the
checkpoint loaded), re-emits the events on the local job, and saves each batch's pictures here, with the
same folders, numbering and infotext as a local run, so the workers need the models but not the outputs.
The owner's Interrupt cancels the stream, which stops the job on its replica within a step; the owner's
Skip is posted to the replica's mailbox (app.cluster.skip_mailbox) and skips the batch it draws. A replica
that dies mid-job fails that job with a message saying so; it is not retried (some of its pictures may be
saved already, and a job that kills its worker would kill a second one). Only a job whose replica was gone
before it started is sent once more. Serve starts a new replica in the lost one's place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import ray
import torch

from app.cluster.messages import END, EVENT, IMAGES, WORKER, event_fields, from_png
from app.engine.jobs import JobCancelled, JobContext, JobResult
from app.engine.requests import GenerationRequest
from app.engine.tasks import GenerationSettings, keep_picture

log = logging.getLogger(__name__)

SIGNAL_POLL_S = 0.05
NOT_STARTED_RETRIES = 1  # a job whose replica was gone before it started is sent once more


class ReplicaLostBeforeStart(RuntimeError):
    """The replica a job was sent to was gone before it said it started: the job can be sent again."""


class RemoteJobError(ValueError):
    """A job that failed on its replica, or lost it; the message is for the person who ran it. A ValueError,
    so the local worker fails the job with this message as it is."""


class ClusterGeneration:
    """Runs generation jobs on the deployment behind ``handle`` (``replicas`` of them at once)."""

    def __init__(self, handle: Any, replicas: int, default_model: str | None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.handle = handle
        self.replicas = replicas
        self.default_model = default_model
        self._on_close = on_close
        self._saving = threading.Lock()  # jobs running at once save into the same folders: one number each

    def run(self, ctx: JobContext, request: GenerationRequest, settings: GenerationSettings,
            user: str | None) -> JobResult:
        for attempt in range(1 + NOT_STARTED_RETRIES):
            try:
                return self._follow(ctx, request, settings, user)
            except ReplicaLostBeforeStart as exc:
                if attempt == NOT_STARTED_RETRIES:
                    raise RemoteJobError(f"No cluster worker could take this job ({exc}): run it again in a "
                                         "moment, or see `ray status` on the head machine.") from None
                log.warning("%s: its worker was gone before the job started (%s); sending it again", ctx.job.id, exc)
        raise AssertionError("unreachable")

    def _follow(self, ctx: JobContext, request: GenerationRequest, settings: GenerationSettings,
                user: str | None) -> JobResult:
        """Stream the job from a replica, re-emitting its events here and saving its pictures."""
        model = request.model or self.default_model or ""
        stream = self.handle.options(stream=True, multiplexed_model_id=model).generate.remote(request, ctx.job.id)
        signals = _OwnerSignals(ctx, stream)
        threading.Thread(target=signals.forward, daemon=True, name=f"{ctx.job.id}-signals").start()
        worker = ""
        result = ctx.partial = JobResult()
        try:
            for item in stream:
                kind = item["kind"]
                if kind == WORKER:
                    worker = f"{item['worker']} ({item['device']})"
                    signals.mailbox = item["skips"]
                    result.info["worker"] = worker
                    log.info("%s runs on worker %s", ctx.job.id, worker)
                    ctx.emit("loading", message=f"Running on worker {worker}")
                elif kind == EVENT:
                    message = item.get("message") or ""
                    if item["phase"] == "loading" and message:
                        item = {**item, "message": f"{message} on worker {worker}"}
                    ctx.emit(item["phase"], **event_fields(item))
                elif kind == IMAGES:
                    self._keep(ctx, request, settings, user, item)
                elif kind == END:
                    return self._end(ctx, item, worker)
        except JobCancelled:
            raise
        except Exception as exc:
            if ctx.cancel_requested:  # the cancelled stream ends with Ray's cancel error
                raise JobCancelled("Interrupted by its owner.") from None
            if isinstance(exc, ray.exceptions.RayError):
                if not worker:  # nothing ran: safe to send again
                    raise ReplicaLostBeforeStart(type(exc).__name__) from exc
                log.warning("%s lost worker %s: %s", ctx.job.id, worker, type(exc).__name__)
                raise RemoteJobError(
                    f"The worker running this job ({worker}) stopped before it finished ({type(exc).__name__}): "
                    "the job failed and was not retried; run it again. Pictures it finished before are saved. "
                    "The other workers carry on, and Ray starts a new worker in its place.") from None
            raise
        finally:
            signals.ended.set()
        raise RemoteJobError(f"The worker running this job ({worker or 'unknown'}) ended its stream without a result.")

    def _keep(self, ctx: JobContext, request: GenerationRequest, settings: GenerationSettings, user: str | None,
              item: dict[str, Any]) -> None:
        """A finished batch: into the job's result and, as a local run does, saved under outputs/."""
        for data, seed, text in zip(item["images"], item["seeds"], item["infotexts"]):
            keep_picture(ctx.partial, from_png(data), seed, text, request, settings, user, self._saving)

    def _end(self, ctx: JobContext, item: dict[str, Any], worker: str) -> JobResult:
        result = ctx.partial
        result.info.update(item["info"])
        result.info["worker"] = worker
        phase, message = item["phase"], item["message"]
        log.info("%s %s on worker %s", ctx.job.id, "finished" if phase == "done" else phase, worker)
        if phase == "done":
            return result
        if phase == "cancelled":
            raise JobCancelled(message or "Interrupted by its owner.")
        if item["out_of_memory"]:
            raise torch.OutOfMemoryError(message)
        if item["value_error"]:
            raise RemoteJobError(message)
        raise RemoteJobError(f"{item['error']}: {message} (on worker {worker})")

    def close(self) -> None:
        """The engine shuts down: ``on_close`` (launch.py's deletes the deployment, freeing its GPUs)."""
        if self._on_close is not None:
            self._on_close()


class _OwnerSignals:
    """Passes the owner's Interrupt and Skip of one job on to its replica, until the job's stream ends."""

    def __init__(self, ctx: JobContext, stream: Any) -> None:
        self.ctx, self.stream = ctx, stream
        self.mailbox: Any = None  # the replica's SkipMailbox, once the replica has said who it is
        self.ended = threading.Event()

    def forward(self) -> None:
        """Interrupt cancels the stream (the replica stops the job within a step); a Skip asked for before the
        replica is known waits for it."""
        while not self.ended.wait(SIGNAL_POLL_S):
            if self.ctx.cancel_requested:
                self.stream.cancel()
                return
            if self.mailbox is not None and self.ctx.take_skip():
                self.mailbox.post.remote(self.ctx.job.id)
