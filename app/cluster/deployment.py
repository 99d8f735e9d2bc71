"""The Ray Serve deployment whose replicas run generation: one engine worker per GPU (or per few CPUs).

Each replica holds its own ModelManager and LoRA cache, built from the UI process's EngineConfig (the
models folder at the same path on every machine). Requests carry the checkpoint's name as Serve's
multiplexed model id, so Serve routes a job to a replica that has its model loaded where it can.
A replica runs one job at a time (``max_ongoing_requests=1``): ``generate`` streams the job's events,
its finished pictures (PNG bytes) and its end; the pictures are saved by the UI process, not here.
Cancelling the stream (the owner's Interrupt) sets the job's cancel flag: it stops within a step; the
owner's Skip comes through the replica's SkipMailbox (app.cluster.skip_mailbox).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, AsyncIterator

import ray
import torch
from ray import serve

from app.cluster.messages import END, IMAGES, WORKER, event_item, png_bytes
from app.cluster.skip_mailbox import SkipMailbox
from app.engine.config import EngineConfig
from app.engine.jobs import Job, JobCancelled, JobContext, JobEvent, JobResult
from app.engine.manager import ModelManager
from app.engine.registry import ModelRegistry
from app.engine.requests import GenerationRequest
from app.engine.tasks import GenerationSettings, run_generation

DEPLOYMENT_NAME = "GenerationReplica"


class RelayedJob(Job):
    """A replica's own Job for one request: every event also goes to the asyncio queue that ``generate``
    streams from, and the last sampling step is kept (how far a job ran after its Interrupt)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, events: asyncio.Queue) -> None:
        super().__init__("cluster", lambda ctx: JobResult(), description="remote generation")
        self._loop, self._relay = loop, events
        self.last_step = 0
        self.error: BaseException | None = None

    def emit(self, phase: str, **data: Any) -> None:
        super().emit(phase, **data)
        if data.get("step") is not None:
            self.last_step = data["step"]
        self._loop.call_soon_threadsafe(self._relay.put_nowait, self.latest)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def device_name(device: torch.device) -> str:
    """The replica's device as people know it: the GPU's model (Ray's GPU id) or "cpu"."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)}, Ray GPU {','.join(map(str, ray.get_gpu_ids()))})"
    return device.type


def replica_class(max_models: int) -> type:
    """The replica class, its multiplexed model cache as large as the manager's (``--max-models``)."""

    class GenerationReplica:
        def __init__(self, config: EngineConfig, cpu_threads: int | None = None) -> None:
            if cpu_threads:
                torch.set_num_threads(cpu_threads)
            self.manager = ModelManager(config, ModelRegistry(config.models_dir, config.extra_checkpoints))
            self.settings = GenerationSettings(config.outputs_dir, config.preview_every)
            self.worker = worker_name()
            self.device = device_name(self.manager.device)
            self.counts = {"loads": 0, "jobs": 0, "cancelled": 0, "steps_after_cancel": -1}
            self.turn = asyncio.Lock()  # one job at a time on this replica's device
            self.skips = SkipMailbox.remote()

        @serve.multiplexed(max_num_models_per_replica=max_models)
        async def checkpoint(self, name: str) -> Any:
            """Load ``name`` (Serve calls this when this replica does not hold it): the router now prefers
            this replica for requests of that model."""
            before = set(key.name for key in self.manager.resident())
            loaded = await asyncio.to_thread(self.manager.get, name)
            if loaded.key.name not in before:
                self.counts["loads"] += 1
            return loaded

        async def generate(self, request: GenerationRequest, job_id: str = "") -> AsyncIterator[dict[str, Any]]:
            """Run one job, streaming: who runs it (and where to post its Skips), its events, each batch's
            pictures, then its end. ``job_id``: the UI process's id of the job, the Skips' address."""
            yield {"kind": WORKER, "worker": self.worker, "device": self.device, "skips": self.skips}
            async with self.turn:  # Serve frees an interrupted job's slot before its last step ends: wait for it
                loop = asyncio.get_running_loop()
                events: asyncio.Queue[JobEvent] = asyncio.Queue()
                job = RelayedJob(loop, events)
                ctx = JobContext(job)
                self.counts["jobs"] += 1
                model = serve.get_multiplexed_model_id()
                if model:
                    await self.checkpoint(model)
                running = loop.run_in_executor(None, self._execute, job, ctx, request.with_changes(save=False))
                skipping = asyncio.ensure_future(self._pass_skips(job, job_id)) if job_id else None
                sent = 0
                try:
                    while True:
                        event = await events.get()
                        partial = event.result if event.result is not None else ctx.partial
                        ready = min(len(partial.images), len(partial.seeds), len(partial.infotexts))
                        if ready > sent:  # the pictures of batches finished since the last event
                            yield {"kind": IMAGES, "images": [png_bytes(picture) for picture in partial.images[sent:ready]],
                                   "seeds": partial.seeds[sent:ready], "infotexts": partial.infotexts[sent:ready]}
                            sent = ready
                        if event.is_terminal:
                            yield self._end(job, event, partial)
                            return
                        if event.phase != "queued":
                            yield event_item(event)
                except (asyncio.CancelledError, GeneratorExit):  # the stream was cancelled: its owner's Interrupt
                    job.request_cancel()
                    at_cancel = job.last_step
                    await running  # stops within a step
                    self.counts["cancelled"] += 1
                    self.counts["steps_after_cancel"] = job.last_step - at_cancel
                    raise
                finally:
                    job.request_cancel()  # a stream that ended otherwise (the caller went away) stops the job too
                    if skipping is not None:
                        skipping.cancel()
                        self.skips.forget.remote(job_id)

        async def _pass_skips(self, job: RelayedJob, job_id: str) -> None:
            """For as long as the job runs: each Skip posted for it skips the batch being drawn."""
            while await self.skips.take.remote(job_id):
                job.request_skip()

        def _execute(self, job: RelayedJob, ctx: JobContext, request: GenerationRequest) -> None:
            """On an executor thread: the whole generation, ending with a terminal event whatever happens."""
            try:
                result = run_generation(ctx, request, self.manager, self.settings)
                job.emit("done", result=result)
            except JobCancelled as exc:
                job.emit("cancelled", message=str(exc), result=ctx.partial)
            except BaseException as exc:  # handed to the UI process, which fails the job as its worker would
                job.error = exc
                job.emit("failed", message=str(exc), result=ctx.partial)

        def _end(self, job: RelayedJob, event: JobEvent, partial: JobResult) -> dict[str, Any]:
            error = job.error
            return {"kind": END, "phase": event.phase, "message": event.message, "info": dict(partial.info),
                    "error": type(error).__name__ if error is not None else "",
                    "value_error": isinstance(error, ValueError),
                    "out_of_memory": isinstance(error, torch.OutOfMemoryError), "loads": self.counts["loads"]}

        async def status(self, hold_s: float = 0.0) -> dict[str, Any]:
            """This replica's name, device and counters. ``hold_s``: stay busy that long, so that N calls made
            at once reach N different replicas (each takes one request at a time)."""
            await asyncio.sleep(hold_s)
            return {"worker": self.worker, "device": self.device, "node": ray.util.get_node_ip_address(), **self.counts,
                    "resident": [key.name for key in self.manager.resident()]}

    return GenerationReplica


def deployment(config: EngineConfig, replicas: int, actor_options: dict[str, Any], cpu_threads: int | None = None):
    """The bound application: ``replicas`` copies, each taking one request at a time."""
    cls = replica_class(max(1, config.max_resident_models))
    return serve.deployment(cls, name=DEPLOYMENT_NAME, num_replicas=replicas, max_ongoing_requests=1,
                            ray_actor_options=actor_options).bind(config, cpu_threads)
