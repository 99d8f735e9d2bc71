"""The engine facade every front end talks to: submit a request, get a Job to follow."""

from __future__ import annotations

import logging

from app.engine.config import EngineConfig
from app.engine.jobs import Job, JobResult
from app.engine.manager import ModelManager
from app.engine.registry import ModelRegistry
from app.engine.requests import GenerationRequest
from app.engine.tasks import GenerationSettings, resolve_loras, run_generation
from app.engine.worker import Worker

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"


class Engine:
    """Owns the registry, the model manager and the worker. Build one per process."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.registry = ModelRegistry(config.models_dir, config.extra_checkpoints)
        self.manager = ModelManager(config, self.registry)
        self.worker = Worker()
        self.settings = GenerationSettings(config.outputs_dir, config.preview_every)

    def submit(self, request: GenerationRequest, owner: str = LOCAL_OWNER) -> Job:
        """Validate and queue a request. Raises ValueError for a bad request (nothing is queued)."""
        request.validate()
        resolve_loras(request, self.registry)  # unknown or unusable LoRAs fail now, not in the queue
        if request.model is not None:
            self.registry.find_checkpoint(request.model)  # unknown names fail now, not in the queue
        if request.vae is not None:
            self.registry.find_vae(request.vae)
        job = Job(owner, lambda ctx: run_generation(ctx, request, self.manager, self.settings),
                  description=f"{request.task}: {request.prompt[:60]}")
        log.info("%s queued for %s: %s", job.id, owner, job.description)
        return self.worker.submit(job)

    def submit_training(self, config, owner: str = LOCAL_OWNER, evaluation_prompts: tuple[str, ...] = ()) -> Job:
        """Queue a LoRA training run (an ``app.training.config.TrainConfig``) as a job on the worker.
        Generation queues behind it and it behind generation; cancelling it stops and keeps the steps done."""
        from app.training.job import training_work

        config.validate()
        self.registry.find_checkpoint(config.base_model)
        if not config.dataset.is_dir():
            raise ValueError(f"The dataset folder {config.dataset} does not exist.")
        job = Job(owner, training_work(config, self.manager, self.registry, evaluation_prompts),
                  description=f"train LoRA {config.output_name}")
        log.info("%s queued for %s: %s", job.id, owner, job.description)
        return self.worker.submit(job)

    def submit_evaluation(self, lora_name: str, base_model: str | None, prompts: tuple[str, ...],
                          owner: str = LOCAL_OWNER, size: int | None = None, steps: int | None = None) -> Job:
        """Queue the evaluation report of a LoRA from models/Lora on a base model."""
        from app.training.job import evaluation_work

        self.registry.find_lora(lora_name)
        base = base_model or self.config.default_model or ""
        self.registry.find_checkpoint(base)
        job = Job(owner, evaluation_work(lora_name, base, prompts, self.manager, self.registry, size, steps),
                  description=f"evaluate LoRA {lora_name}")
        return self.worker.submit(job)

    def generate(self, request: GenerationRequest, owner: str = LOCAL_OWNER, timeout: float | None = None) -> JobResult:
        """Submit and wait: the synchronous form, for scripts and the API."""
        return self.submit(request, owner).wait(timeout)

    def cancel(self, job_id: str, owner: str = LOCAL_OWNER) -> bool:
        return self.worker.cancel(job_id, owner)

    def cancel_all_of(self, owner: str) -> int:
        """Cancel every queued or running job of ``owner`` (the UI's Interrupt); return how many."""
        return sum(self.worker.cancel(job.id, owner) for job in self.worker.active_jobs(owner))

    def shutdown(self) -> None:
        self.worker.stop()
        self.manager.unload_all()
