"""Training and evaluation as jobs on the engine's worker, so they queue with generation (both ways)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from app.engine import Engine
from app.engine.engine import LOCAL_OWNER
from app.engine.jobs import Job, JobContext, JobResult
from app.engine.lora_runtime import ActiveLora
from app.engine.manager import ModelManager
from app.engine.registry import ModelRegistry
from app.training.config import TrainConfig
from app.training.evaluate import Scorers, evaluate_lora
from app.training.roots import DatasetRoots
from app.training.trainer import TrainProgress, train

log = logging.getLogger(__name__)


class Training:
    """Training runs and LoRA evaluations as jobs on an engine's worker (built by app/cli.py, which
    also fills the scorers), so they queue with generation both ways.

    ``dataset_roots`` limits the dataset folders a run may read; app/cli.py always gives them for the
    server. None accepts any folder (the operator's own scripts and tests).
    """

    def __init__(self, engine: Engine, scorers: Scorers | None = None,
                 dataset_roots: DatasetRoots | None = None) -> None:
        self.engine = engine
        self.scorers = scorers or Scorers()
        self.dataset_roots = dataset_roots

    def dataset_folder(self, folder: Path | str) -> Path:
        """The folder to train on; DatasetFolderError (a ValueError) if it is missing or not allowed."""
        if self.dataset_roots is not None:
            return self.dataset_roots.check(folder)
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ValueError(f"The dataset folder {path} does not exist.")
        return path

    def submit_training(self, config: TrainConfig, owner: str = LOCAL_OWNER,
                        evaluation_prompts: tuple[str, ...] = ()) -> Job:
        """Queue a run. Cancelling it stops and keeps the steps done. Raises ValueError for a bad config."""
        config.validate()
        self.engine.registry.find_checkpoint(config.base_model)
        config.dataset = self.dataset_folder(config.dataset)
        work = training_work(config, self.engine.manager, self.engine.registry, evaluation_prompts, self.scorers)
        return self.engine.submit_work(work, f"train LoRA {config.output_name}", owner)

    def submit_evaluation(self, lora_name: str, base_model: str | None, prompts: tuple[str, ...],
                          owner: str = LOCAL_OWNER, size: int | None = None, steps: int | None = None) -> Job:
        """Queue the evaluation report of a LoRA from models/Lora on a base model."""
        self.engine.registry.find_lora(lora_name)
        base = base_model or self.engine.config.default_model or ""
        self.engine.registry.find_checkpoint(base)
        work = evaluation_work(lora_name, base, prompts, self.engine.manager, self.engine.registry, size, steps,
                               self.scorers)
        return self.engine.submit_work(work, f"evaluate LoRA {lora_name}", owner)


def training_work(config: TrainConfig, manager: ModelManager, registry: ModelRegistry,
                  evaluation_prompts: Sequence[str] = (), scorers: Scorers | None = None
                  ) -> Callable[[JobContext], JobResult]:
    """The work function of a training job: train, then evaluate the new LoRA on the base model.

    Cancelling the job stops training at the next step; the run is checkpointed and the LoRA of the
    steps done is still written (and evaluated), so Stop keeps what was learnt.
    """

    def work(ctx: JobContext) -> JobResult:
        ctx.emit("loading", message=f"Preparing {config.output_name}: data, caches, {config.base_model}")
        if manager.device.type != "cpu":
            manager.unload_all()  # training loads its own copy of the base model: give it the memory

        def report(progress: TrainProgress) -> None:
            ctx.emit("training", step=progress.step, total_steps=progress.total_steps, loss=progress.loss,
                     eta_seconds=progress.eta_seconds, samples=progress.samples,
                     message=f"{progress.steps_per_second:.2f} steps/s, lr {progress.learning_rate:.2e}")

        result = train(config, registry=registry, on_progress=report, should_stop=lambda: ctx.cancel_requested)
        info: dict = {"lora_path": str(result.lora_path) if result.lora_path else None, "steps": result.steps,
                      "losses": result.losses, "seconds": result.seconds, "stopped_early": result.stopped_early,
                      "skipped_images": result.skipped_images, "samples": [str(p) for p in result.samples],
                      "lora_name": config.output_name}
        if result.lora_path is not None:
            ctx.emit("saving", message="Evaluating the LoRA: samples without and with it")
            lora = ActiveLora(config.output_name, result.lora_path, registry.lora_info(result.lora_path), 1.0)
            prompts = list(evaluation_prompts or config.sample_prompts or _captions_of(config))
            report_ = evaluate_lora(manager, lora, config.base_model, prompts[:4], size=config.resolution,
                                    losses=result.losses, scorers=scorers)
            info["report"] = report_.files
        return JobResult(info=info)

    return work


def evaluation_work(lora_name: str, base_model: str, prompts: Sequence[str], manager: ModelManager,
                    registry: ModelRegistry, size: int | None = None, steps: int | None = None,
                    scorers: Scorers | None = None) -> Callable[[JobContext], JobResult]:
    """The work function of an on-demand evaluation of any LoRA in models/Lora."""

    def work(ctx: JobContext) -> JobResult:
        entry = registry.find_lora(lora_name)
        assert entry.path is not None
        ctx.emit("loading", message=f"Evaluating {lora_name} on {base_model}")
        lora = ActiveLora(lora_name, entry.path, registry.lora_info(entry.path), 1.0)
        report = evaluate_lora(manager, lora, base_model, list(prompts)[:4], size=size, steps=steps, scorers=scorers)
        return JobResult(info={"lora_name": lora_name, "report": report.files})

    return work


def _captions_of(config: TrainConfig) -> list[str]:
    """A few of the run's own captions, when no sample prompts were given."""
    from app.training.dataset import scan_folder

    try:
        captions = [image.caption for image in scan_folder(Path(config.dataset), caption_overrides=config.overrides()).images
                    if image.caption]
    except ValueError:
        return []
    return list(dict.fromkeys(captions))[:2]
