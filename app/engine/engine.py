"""The engine facade every front end talks to: submit a request, get a Job to follow."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from app.audit import audit
from app.engine.batching import BatchRunner, batch_member
from app.engine.conditioning import DEFAULT_EMPHASIS, PromptEmbeddings, PromptEncoder, prompt_token_count
from app.engine.config import EngineConfig
from app.engine.extras import restorer_for
from app.engine.hires import is_latent
from app.engine.jobs import Job, JobContext, JobResult, QueueFull
from app.engine.manager import ModelManager
from app.engine.outputs import user_folder
from app.engine.prompt_parser import EMPHASIS_MODES
from app.engine.prompts import EmbeddingStatus, embedding_statuses, split_lora_tags, text_encoder_widths
from app.engine.registry import ModelRegistry
from app.engine.styles import STYLES_FILE, StyleLibrary
from app.engine.requests import SAME_CHECKPOINT, GenerationRequest
from app.engine.tasks import GenerationSettings, resolve_loras, run_generation
from app.engine.worker import Worker

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"


class RemoteGeneration(Protocol):
    """Generation run elsewhere (``app.cluster``: a Ray Serve deployment of ``replicas`` workers); ``run``
    takes run_generation's place on this process's worker and saves the pictures here."""

    replicas: int

    def run(self, ctx: JobContext, request: GenerationRequest, settings: GenerationSettings,
            user: str | None) -> JobResult: ...

    def close(self) -> None: ...


class Engine:
    """Owns the registry, the model manager and the worker. Build one per process. With ``remote``,
    generation runs there, as many jobs at once as it has workers; other device work stays here."""

    def __init__(self, config: EngineConfig, remote: RemoteGeneration | None = None) -> None:
        self.config = config
        self.registry = ModelRegistry(config.models_dir, config.extra_checkpoints)
        self.manager = ModelManager(config, self.registry)
        self.remote = remote
        self.settings = GenerationSettings(config.outputs_dir, config.preview_every)
        self.batch_requests = config.batch_requests if remote is None else 1  # a cluster draws each job alone
        if remote is not None and config.batch_requests > 1:
            log.warning("--batch-requests is for local generation; with a cluster each job is drawn alone")
        self.worker = Worker(config.max_queue_per_user, config.max_queue, remote.replicas if remote else 1,
                             batch_requests=self.batch_requests, run_batch=BatchRunner(self.manager, self.settings))
        self._local_device = threading.Lock()  # with several jobs at once, local device work still takes turns
        self.styles = StyleLibrary(config.models_dir / STYLES_FILE)

    def submit(self, request: GenerationRequest, owner: str = LOCAL_OWNER, user: str | None = None) -> Job:
        """Validate and queue a request. ``owner``: whose job it is in the queue (fairness, progress, cancel);
        ``user``: the logged-in user, whose folder under outputs/ gets the pictures (None: outputs/ itself).
        Raises ValueError for a bad request or user name, QueueFull (a ValueError) when the owner or the queue
        is at its limit; either way nothing is queued."""
        request.validate()
        if user is not None:
            user_folder(user)  # a name that cannot be a folder fails now, not after the job ran
        if request.styles:  # applied once, here: the job and its infotext see the styled prompts
            prompt, negative = self.styles.apply(request.styles, request.prompt, request.negative_prompt)
            request = request.with_changes(prompt=prompt, negative_prompt=negative)
        resolve_loras(request, self.registry)  # unknown or unusable LoRAs fail now, not in the queue
        if request.model is not None:
            self.registry.find_checkpoint(request.model)  # unknown names fail now, not in the queue
        if getattr(request, "enable_hr", False) and not is_latent(request.hr_upscaler):  # type: ignore[attr-defined]
            # an upscaler model's name as A1111 lists it; unknown or unusable files fail now, not after a first pass
            try:
                upscaler = self.manager.upscalers.canonical(request.hr_upscaler)  # type: ignore[attr-defined]
            except ValueError as exc:
                raise ValueError(f"Hires upscaler: {exc}") from None
            request = request.with_changes(hr_upscaler=upscaler)
        if getattr(request, "sd_upscaling", False):  # SD upscale's upscaler: unknown or unusable ones fail now too
            request = request.with_changes(
                sd_upscale_upscaler=self.manager.upscalers.canonical(request.sd_upscale_upscaler))  # type: ignore[attr-defined]
        if request.restore_faces:  # the model that will run, by name: the infotext records it; none installed fails now
            try:
                request = request.with_changes(face_restorer=restorer_for(self.manager.face_restorers,
                                                                          request.face_restorer or None))
            except ValueError as exc:
                raise ValueError(f"restore_faces: {exc}") from None
        second = getattr(request, "hr_checkpoint", SAME_CHECKPOINT)
        if getattr(request, "enable_hr", False) and second not in ("", SAME_CHECKPOINT):
            self.registry.find_checkpoint(second)  # not after a whole first pass
        if request.vae is not None:
            self.registry.find_vae(request.vae)
        remote = self.remote
        if remote is not None:
            def work(ctx: JobContext) -> JobResult:
                return remote.run(ctx, request, self.settings, user)
        else:
            def work(ctx: JobContext) -> JobResult:
                return run_generation(ctx, request, self.manager, self.settings, user)
        job = Job(owner, work, description=f"{request.task}: {request.prompt[:60]}")
        if self.batch_requests > 1:
            job.batch = batch_member(request, user, self.config.default_model)
        return self._queue(job, f"{request.task} model={request.model or self.config.default_model}")

    def submit_work(self, work: Callable[[JobContext], JobResult], description: str,
                    owner: str = LOCAL_OWNER) -> Job:
        """Queue any other device work (training, an evaluation, upscaling) on the same worker, in turn
        with generation and under the same queue limits (QueueFull). The caller checks its input first:
        nothing here validates ``work``. ``description`` goes to the audit log as it is: the kind of work
        and what it is about ("train LoRA <name>"), never a prompt."""
        if self.worker.concurrency > 1:  # this process's device runs one such job at a time
            inner = work

            def work(ctx: JobContext) -> JobResult:
                with self._local_device:
                    return inner(ctx)
        return self._queue(Job(owner, work, description=description), description)

    def _queue(self, job: Job, what: str) -> Job:
        """Hand ``job`` to the worker; the audit log records it (``what``: no prompt) or its refusal."""
        try:
            self.worker.submit(job)
        except QueueFull as exc:  # the front end tells the caller and logs it; the audit keeps it
            audit("refused", job.owner, None, f"{what}: queue full ({exc.limit} "
                  f"{'per user' if exc.per_owner else 'queued in all'})", logging.WARNING)
            raise
        log.info("%s queued for %s: %s", job.id, job.owner, job.description)
        audit("queued", job.owner, job.id, what)
        return job

    def generate(self, request: GenerationRequest, owner: str = LOCAL_OWNER, timeout: float | None = None,
                 user: str | None = None) -> JobResult:
        """Submit and wait: the synchronous form, for scripts and the API."""
        return self.submit(request, owner, user).wait(timeout)

    def token_count(self, prompt: str, model: str | None = None, steps: int = 20,
                    emphasis: str = DEFAULT_EMPHASIS) -> tuple[int, int]:
        """(tokens, target) of a prompt as A1111's counter shows them (``80/150``); LoRA tags do not count.
        Reads the model's tokenizer, not the model. Raises ValueError for an unknown model."""
        text, _ = split_lora_tags(prompt or "")
        name = model or self.config.default_model
        _, embeddings = self.embeddings(name)
        tokenizer = self.manager.tokenizer(name)
        words = PromptEncoder.words_for(tokenizer, embeddings)
        return prompt_token_count(tokenizer, text, steps, emphasis if emphasis in EMPHASIS_MODES else DEFAULT_EMPHASIS,
                                  words)

    def embeddings(self, model: str | None = None) -> tuple[list[EmbeddingStatus], PromptEmbeddings]:
        """The files of models/embeddings, each usable on ``model`` or skipped with a reason."""
        entry = self.registry.find_checkpoint(model or self.config.default_model or "")
        widths = self.manager.resident_text_encoder_widths(entry.name) or text_encoder_widths(self.registry, entry)
        return embedding_statuses(self.registry, widths, self.config.allow_pickle)

    def cancel(self, job_id: str, owner: str = LOCAL_OWNER) -> bool:
        return self.worker.cancel(job_id, owner)

    def current_job(self, owner: str) -> Job | None:
        """The owner's running job, else its next queued one, else None (what a polling client follows)."""
        jobs = self.worker.active_jobs(owner)
        running = [job for job in jobs if job.latest is not None and job.latest.phase != "queued"]
        return (running or jobs or [None])[0]

    def skip(self, owner: str) -> bool:
        """A1111's Skip: the owner's current job stops the batch it is drawing and goes on with the next;
        returns whether there was a job to tell."""
        job = self.current_job(owner)
        if job is None:
            return False
        job.request_skip()
        audit("skip", owner, job.id)
        return True

    def cancel_all_of(self, owner: str) -> int:
        """Cancel every queued or running job of ``owner`` (the UI's Interrupt); return how many."""
        return sum(self.worker.cancel(job.id, owner) for job in self.worker.active_jobs(owner))

    def shutdown(self) -> None:
        self.worker.stop()
        self.manager.unload_all()
        if self.remote is not None:
            self.remote.close()
