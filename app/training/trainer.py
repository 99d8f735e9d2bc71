"""The LoRA trainer: peft adapters on the UNet (and optionally the text encoders), trained with
accelerate on cached latents and text embeddings, with checkpoints that resume the same run.

One function, ``train``, runs a whole run; the CLI and the UI's training job both call it. Under
``accelerate launch`` it runs once per process (data split per process, gradients averaged).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file, save_file

from app.engine.conditioning import PromptEncoder
from app.engine.manager import pipeline_family, read_pipeline
from app.engine.prompt_inputs import conditioned_call, encode_for_pipeline
from app.engine.registry import ModelRegistry
from app.training.cache import LatentCache, TextCache
from app.training.config import TEXT_TARGETS, UNET_CONV_TARGETS, UNET_TARGETS, TrainConfig
from app.training.dataset import (
    CaptionOptions,
    epoch_batches,
    make_buckets,
    nearest_bucket,
    process_caption,
    sample_rng,
    scan_folder,
)
from app.training.files import write_atomically
from app.training.losses import min_snr_weights
from app.training.lora_export import kohya_metadata, kohya_tensors, tag_frequency, write_lora_file
from app.training.text import encode_captions, sdxl_time_ids

log = logging.getLogger(__name__)

TEXT_COMPONENTS = ("text_encoder", "text_encoder_2")
ADAPTER = "default"
SAMPLE_STEPS = 20  # the sample images of a run


class TrainingStopped(Exception):
    """Raised inside the loop when the caller asked to stop; the run is checkpointed first."""


@dataclass(frozen=True)
class TrainProgress:
    """One optimizer step, as the UI and the CLI show it."""

    step: int
    total_steps: int
    loss: float
    learning_rate: float
    steps_per_second: float
    eta_seconds: float
    epoch: int
    samples: tuple[Path, ...] = ()  # sample images written at this step


@dataclass
class TrainResult:
    lora_path: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    checkpoints: list[Path] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    samples: list[Path] = field(default_factory=list)


def train(config: TrainConfig, *, registry: ModelRegistry | None = None,
          on_progress: Callable[[TrainProgress], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Run (or resume) one training run; write the LoRA to ``config.lora_path`` at the end."""
    config.validate()
    started = time.time()
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation,
                              mixed_precision=config.mixed_precision,
                              cpu=config.device == "cpu")
    log.info("training %s on %s, process %d of %d", config.output_name, accelerator.device,
             accelerator.process_index + 1, accelerator.num_processes)
    registry = registry or ModelRegistry(config.models_dir)
    entry = registry.find_checkpoint(config.base_model)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    pipe = read_pipeline(entry, weight_dtype)
    pipe.set_progress_bar_config(disable=True)
    family = pipeline_family(pipe)
    device = accelerator.device
    unet, vae = pipe.unet, pipe.vae
    text_encoders = [getattr(pipe, name) for name in TEXT_COMPONENTS if getattr(pipe, name, None) is not None]
    tokenizers = [t for t in (pipe.tokenizer, getattr(pipe, "tokenizer_2", None)) if t is not None]
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction_type = noise_scheduler.config.prediction_type
    for module in (unet, vae, *text_encoders):
        module.requires_grad_(False)
        module.to(device)

    torch.manual_seed(config.seed)  # the adapters' initial weights
    add_adapters(unet, text_encoders, config)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()

    report = scan_folder(config.dataset, caption_overrides=config.overrides())
    images = report.images
    buckets = make_buckets(config.resolution, config.bucket_step)
    bucket_of = [nearest_bucket(image.size, buckets) for image in images]
    caption_options = CaptionOptions(config.shuffle_caption, config.keep_tokens, config.caption_dropout)
    def cache_key(*components: str) -> str:  # what the cached outputs were computed from
        return ":".join(registry.component_hash(entry, c) or entry.name for c in components)

    cache_root = Path(config.outputs_dir) / "training" / ".cache"
    latents = LatentCache(cache_root / "latents", vae, cache_key("vae"), enabled=config.cache_latents)
    text_cache_usable = config.cache_text and not config.train_text_encoder and not config.shuffle_caption
    texts = TextCache(cache_root / "text", tokenizers, text_encoders, family,
                      cache_key(*[c for c in TEXT_COMPONENTS if getattr(pipe, c, None) is not None]),
                      enabled=text_cache_usable)
    if accelerator.is_main_process:
        latents.fill(images, bucket_of, flips=config.flip, device=device)
        texts.fill(captions_to_encode(images, config), device=device)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        latents.fill(images, bucket_of, flips=config.flip, device=device)
        texts.fill(captions_to_encode(images, config), device=device)

    if config.preserve_prompts:
        log.info("prior preservation on %d prompt(s), weight %g", len(config.preserve_prompts), config.preserve_weight)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    groups = [{"params": trainable, "lr": config.learning_rate}]
    if config.train_text_encoder:
        te_params = [p for encoder in text_encoders for p in encoder.parameters() if p.requires_grad]
        groups.append({"params": te_params, "lr": config.text_encoder_lr or config.learning_rate})
    for group in groups:
        for parameter in group["params"]:
            parameter.data = parameter.data.float()  # LoRA weights train in fp32 under mixed precision
    optimizer = make_optimizer(config, groups, device)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_steps)
    prepared = accelerator.prepare(unet, *(text_encoders if config.train_text_encoder else ()), optimizer,
                                   lr_scheduler)
    unet_model = prepared[0]
    trained_text = list(prepared[1:-2]) if config.train_text_encoder else []
    optimizer, lr_scheduler = prepared[-2], prepared[-1]

    noise = torch.Generator().manual_seed(config.seed * 1000 + accelerator.process_index)
    state = RunState()
    result = TrainResult(lora_path=None, steps=0, skipped_images=[f"{s.path.name}: {s.reason}" for s in report.skipped])
    if config.resume is not None:
        checkpoint = find_checkpoint(config.resume)
        state = load_checkpoint(checkpoint, accelerator, unet, text_encoders if config.train_text_encoder else [],
                                optimizer, lr_scheduler, noise, config)
        log.info("resumed from %s at step %d", checkpoint, state.step)

    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    world = accelerator.num_processes
    step_times: list[float] = []
    unet_model.train()
    try:
        while state.step < config.max_steps:
            batches = [b for b in epoch_batches(bucket_of, [i.repeats for i in images], config.batch_size * world,
                                                config.seed, state.epoch) if len(b) >= world]
            while state.batch < len(batches) and state.step < config.max_steps:
                position = state.batch
                mine = batches[position][accelerator.process_index::world]
                tick = time.perf_counter()
                with accelerator.accumulate(unet_model, *trained_text):
                    loss = training_loss(mine, position, state.epoch, config, images, bucket_of, caption_options,
                                         latents, texts, tokenizers, trained_text or text_encoders, family, unet_model,
                                         noise_scheduler, alphas_cumprod, prediction_type, noise, device,
                                         accelerator)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_([p for g in groups for p in g["params"]], config.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                state.batch += 1
                state.pending.append(float(accelerator.gather(loss.detach()).mean()))
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                state.losses.append(float(np.mean(state.pending)))
                state.pending.clear()
                step_times.append(time.perf_counter() - tick)
                samples: list[Path] = []
                if config.sample_every and config.sample_prompts and state.step % config.sample_every == 0:
                    samples = save_samples(pipe, family, registry, config, state.step, accelerator)
                    result.samples += samples
                if on_progress and accelerator.is_main_process:
                    on_progress(progress_of(state, config, lr_scheduler, step_times, samples))
                if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                    result.checkpoints.append(save_checkpoint(config, state, accelerator, unet, text_encoders,
                                                              optimizer, lr_scheduler, noise))
                if should_stop and should_stop():
                    raise TrainingStopped
            if state.batch >= len(batches):
                state.epoch += 1
                state.batch = 0
    except TrainingStopped:
        result.stopped_early = True
        result.checkpoints.append(save_checkpoint(config, state, accelerator, unet, text_encoders, optimizer,
                                                  lr_scheduler, noise))
    result.steps, result.losses = state.step, list(state.losses)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        result.lora_path = export_lora(config, unet, text_encoders, family, prediction_type, entry.name, images,
                                       state, started, config.dataset)
    result.seconds = time.time() - started
    accelerator.end_training()
    return result


# ----- pieces of the run ------------------------------------------------------------------------


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # next batch of the epoch
    losses: list[float] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)  # micro-batch losses of the step in progress


def add_adapters(unet: torch.nn.Module, text_encoders: list[torch.nn.Module], config: TrainConfig) -> None:
    targets = list(UNET_TARGETS) + (list(UNET_CONV_TARGETS) if config.conv_rank else [])
    patterns = {name: config.conv_rank for name in UNET_CONV_TARGETS} if config.conv_rank else {}
    alphas = {name: config.conv_alpha for name in UNET_CONV_TARGETS} if config.conv_rank else {}
    unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                                target_modules=targets, rank_pattern=patterns, alpha_pattern=alphas))
    if config.train_text_encoder:  # peft directly: transformers' add_adapter wants a newer peft than exists
        for encoder in text_encoders:
            inject_adapter_in_model(LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                                               target_modules=list(TEXT_TARGETS)), encoder, adapter_name=ADAPTER)
            for name, parameter in encoder.named_parameters():
                parameter.requires_grad_(f".{ADAPTER}." in name and "lora_" in name)


def captions_to_encode(images, config: TrainConfig) -> list[str]:
    return ([image.caption for image in images] + ([""] if config.caption_dropout else [])
            + list(config.preserve_prompts))


def make_optimizer(config: TrainConfig, groups: list[dict], device: torch.device) -> torch.optim.Optimizer:
    if config.optimizer == "adamw8bit":
        try:
            if device.type != "cuda":
                raise RuntimeError("8-bit AdamW needs a CUDA device")
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(groups, weight_decay=config.weight_decay)
        except (ImportError, RuntimeError) as exc:
            log.warning("8-bit AdamW is not available (%s); using torch's AdamW", exc)
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def training_loss(indices: list[int], position: int, epoch: int, config: TrainConfig, images, bucket_of,
                  caption_options: CaptionOptions, latents: LatentCache, texts: TextCache, tokenizers,
                  text_encoders, family: str, unet, noise_scheduler: DDPMScheduler, alphas_cumprod: torch.Tensor,
                  prediction_type: str, noise_gen: torch.Generator, device: torch.device,
                  accelerator: Accelerator) -> torch.Tensor:
    """The (min-SNR weighted) denoising loss of one micro-batch."""
    pixels_latents, captions = [], []
    for slot, index in enumerate(indices):
        rng = sample_rng(config.seed, epoch, position, slot)
        flipped = config.flip and rng.random() < 0.5
        pixels_latents.append(latents.get(images[index], bucket_of[index], flipped, device))
        captions.append(process_caption(images[index].caption, caption_options, rng))
    clean = torch.stack(pixels_latents).to(device, torch.float32)
    with torch.set_grad_enabled(config.train_text_encoder):
        hidden, pooled = caption_states(captions, texts, tokenizers, text_encoders, family, device)
    batch = clean.shape[0]
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=noise_gen)
    noise = torch.randn(clean.shape, generator=noise_gen)
    if config.noise_offset:
        noise = noise + config.noise_offset * torch.randn((batch, clean.shape[1], 1, 1), generator=noise_gen)
    timesteps, noise = timesteps.to(device), noise.to(device)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(clean, noise, timesteps)
    extra = {}
    if family == "sdxl":
        width, height = bucket_of[indices[0]]
        extra["added_cond_kwargs"] = {"text_embeds": pooled,
                                      "time_ids": sdxl_time_ids(width, height, batch, device, hidden.dtype)}
    weights = torch.ones(batch, device=device)
    if config.preserve_prompts:  # the preserved half-batch rides in the same UNet call as the training one
        rng = sample_rng(config.seed, epoch, position, "preserve")
        kept = max(1, batch // 2)
        prompts = [rng.choice(config.preserve_prompts) for _ in range(kept)]
        with torch.no_grad():
            kept_hidden, kept_pooled = caption_states(prompts, texts, tokenizers, text_encoders, family, device)
        kept_extra = {}
        if extra:
            kept_extra["added_cond_kwargs"] = {"text_embeds": kept_pooled,
                                               "time_ids": extra["added_cond_kwargs"]["time_ids"][:kept]}
            extra = {"added_cond_kwargs": {key: torch.cat([extra["added_cond_kwargs"][key], value])
                                           for key, value in kept_extra["added_cond_kwargs"].items()}}
        base = base_prediction(unet, noisy[:kept], timesteps[:kept], kept_hidden, kept_extra, accelerator)
        noisy, timesteps = torch.cat([noisy, noisy[:kept]]), torch.cat([timesteps, timesteps[:kept]])
        hidden, target = torch.cat([hidden, kept_hidden]), torch.cat([target, base])
        weights = torch.cat([weights, torch.full((kept,), config.preserve_weight, device=device)])
    with accelerator.autocast():
        prediction = unet(noisy, timesteps, hidden, **extra).sample
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)) * weights
    if config.min_snr_gamma:
        per_sample = per_sample * min_snr_weights(alphas_cumprod, timesteps, config.min_snr_gamma, prediction_type)
    return per_sample.mean()


def caption_states(captions: list[str], texts: TextCache, tokenizers, text_encoders, family: str,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The text encoders' hidden states (and SDXL's pooled output) for ``captions``: from the cache
    when it is on, else encoded now."""
    if texts.enabled:
        return texts.get(captions, device)
    return encode_captions(tokenizers, text_encoders, family, captions, device)


def base_prediction(unet, noisy: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor, extra: dict,
                    accelerator: Accelerator) -> torch.Tensor:
    """The base model's prediction (adapters off), the target of prior preservation: DreamBooth's,
    with the base model's own predictions standing in for class pictures, so that no layout of a
    regularisation picture is learnt."""
    adapters = accelerator.unwrap_model(unet)
    with torch.no_grad(), accelerator.autocast():
        adapters.disable_adapters()
        try:
            return unet(noisy, timesteps, hidden, **extra).sample
        finally:
            adapters.enable_adapters()


def progress_of(state: RunState, config: TrainConfig, lr_scheduler, step_times: list[float],
                samples: list[Path]) -> TrainProgress:
    recent = step_times[-20:]
    per_step = sum(recent) / len(recent)
    return TrainProgress(step=state.step, total_steps=config.max_steps, loss=state.losses[-1],
                         learning_rate=float(lr_scheduler.get_last_lr()[0]), steps_per_second=1 / per_step,
                         eta_seconds=per_step * (config.max_steps - state.step), epoch=state.epoch,
                         samples=tuple(samples))


def save_samples(pipe, family: str, registry: ModelRegistry, config: TrainConfig, step: int,
                 accelerator: Accelerator) -> list[Path]:
    """Images at the fixed sample prompts and seeds, under the run folder (main process only). The
    prompts are read as the generate tabs read them; nothing is cached, as the weights keep changing."""
    if not accelerator.is_main_process:
        return []
    folder = config.run_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    encoder = PromptEncoder(pipe, family, cache_entries=0)
    pipe.unet.eval()
    with torch.no_grad():
        for index, prompt in enumerate(config.sample_prompts):
            conditioning = encode_for_pipeline(encoder, pipe, registry, prompt, "", SAMPLE_STEPS)
            image = pipe(num_inference_steps=SAMPLE_STEPS, width=config.resolution, height=config.resolution,
                         generator=torch.Generator().manual_seed(config.seed + index),
                         **conditioned_call(conditioning, 1)).images[0]
            path = folder / f"step-{step:06d}-{index}.png"
            image.save(path)
            paths.append(path)
    pipe.unet.train()
    return paths


# ----- checkpoints -------------------------------------------------------------------------------


def find_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a checkpoint, else the latest checkpoint of the run folder ``path``."""
    path = Path(path)
    if (path / "progress.json").is_file():
        return path
    candidates = sorted((path / "checkpoints").glob("step-*")) if (path / "checkpoints").is_dir() else []
    candidates = [c for c in candidates if (c / "progress.json").is_file()]
    if not candidates:
        raise ValueError(f"No checkpoint to resume from in {path}.")
    return candidates[-1]


def save_checkpoint(config: TrainConfig, state: RunState, accelerator: Accelerator, unet, text_encoders, optimizer,
                    lr_scheduler, noise: torch.Generator) -> Path:
    """Everything needed to continue: adapters, optimizer, LR schedule, RNG states, position in the data."""
    folder = config.run_dir / "checkpoints" / f"step-{state.step:06d}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        # progress.json marks a complete checkpoint (find_checkpoint skips folders without it): a step
        # saved again (Stop on a checkpoint step) is not resumable until all its files are rewritten
        (folder / "progress.json").unlink(missing_ok=True)
        save_file(adapter_state(accelerator.unwrap_model(unet)), str(folder / "adapter_unet.safetensors"))
        if config.train_text_encoder:
            for name, encoder in zip(TEXT_COMPONENTS, text_encoders):
                save_file(adapter_state(accelerator.unwrap_model(encoder)), str(folder / f"adapter_{name}.safetensors"))
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), folder / "scheduler.pt")
    accelerator.wait_for_everyone()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"noise": noise.get_state(), "torch": torch.get_rng_state()},
               folder / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        progress = {"step": state.step, "epoch": state.epoch, "batch": state.batch, "losses": state.losses,
                    "settings": {**config.settings_key(), "rank": config.rank, "seed": config.seed,
                                 "batch_size": config.batch_size, "processes": accelerator.num_processes}}
        text = json.dumps(progress)
        write_atomically(folder / "progress.json", lambda temp: temp.write_text(text, encoding="utf-8"))
    return folder


def load_checkpoint(folder: Path, accelerator: Accelerator, unet, text_encoders, optimizer, lr_scheduler,
                    noise: torch.Generator, config: TrainConfig) -> RunState:
    progress = json.loads((folder / "progress.json").read_text(encoding="utf-8"))
    expected = {**config.settings_key(), "rank": config.rank, "seed": config.seed, "batch_size": config.batch_size,
                "processes": accelerator.num_processes}
    if progress["settings"] != expected:
        raise ValueError(f"The checkpoint {folder} was made with other settings ({progress['settings']}); "
                         f"resuming needs the same ones ({expected}).")
    _loadadapter_state(accelerator.unwrap_model(unet), load_file(str(folder / "adapter_unet.safetensors")))
    for name, encoder in zip(TEXT_COMPONENTS, text_encoders):
        _loadadapter_state(accelerator.unwrap_model(encoder), load_file(str(folder / f"adapter_{name}.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    lr_scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    rng = torch.load(folder / f"rng-{accelerator.process_index}.pt", weights_only=True)
    noise.set_state(rng["noise"])
    torch.set_rng_state(rng["torch"])
    return RunState(step=progress["step"], epoch=progress["epoch"], batch=progress["batch"],
                    losses=list(progress["losses"]))


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors as ``<module path>.lora_A.weight`` (peft's saved form, adapter name dropped)."""
    tag = f".{ADAPTER}."
    return {name.replace(tag, "."): tensor.detach().cpu().contiguous()
            for name, tensor in model.state_dict().items() if "lora_" in name and tag in name}


def _loadadapter_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    renamed = {re.sub(r"\.(lora_[AB])\.", rf".\1.{ADAPTER}.", key): value for key, value in state.items()}
    missing = set(adapter_state(model)) - set(state)
    result = model.load_state_dict(renamed, strict=False)
    if result.unexpected_keys or missing:
        raise ValueError(f"The checkpoint's adapter does not match this model ({len(result.unexpected_keys)} "
                         f"unexpected, {len(missing)} missing tensors).")


# ----- the file ----------------------------------------------------------------------------------


def export_lora(config: TrainConfig, unet, text_encoders, family: str, prediction_type: str, base_name: str,
                images, state: RunState, started: float, dataset_root: Path) -> Path:
    states = {"unet": adapter_state(unet)}
    alphas: dict[str, float] = {"unet": config.alpha}
    for key, tensor in states["unet"].items():
        if key.endswith(".lora_A.weight") and tensor.ndim == 4 and config.conv_rank:
            alphas[f"unet:{key[: -len('.lora_A.weight')]}"] = config.conv_alpha
    if config.train_text_encoder:
        for name, encoder in zip(TEXT_COMPONENTS, text_encoders):
            states[name] = adapter_state(encoder)
            alphas[name] = config.alpha
    tensors = kohya_tensors(states, alphas, family, unet.config.layers_per_block)
    by_folder: dict[str, list[str]] = {}
    for image in images:
        relative = image.path.relative_to(dataset_root)
        folder = relative.parts[0] if len(relative.parts) > 1 else Path(dataset_root).name
        by_folder.setdefault(folder, []).extend([image.caption] * image.repeats)
    epochs = max(1, math.ceil(state.epoch + (1 if state.batch else 0)))
    metadata = kohya_metadata(
        family=family, prediction_type=prediction_type, rank=config.rank, alpha=config.alpha,
        conv_rank=config.conv_rank, conv_alpha=config.conv_alpha, resolution=config.resolution, steps=state.step,
        epochs=epochs, output_name=config.output_name, base_model_name=base_name,
        tag_frequency=tag_frequency(by_folder), num_images=len(images), learning_rate=config.learning_rate,
        text_encoder_lr=config.text_encoder_lr, train_text_encoder=config.train_text_encoder, seed=config.seed,
        started=started, finished=time.time())
    return write_lora_file(config.lora_path, tensors, metadata)
