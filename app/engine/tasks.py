"""txt2img, img2img and inpaint: turn a validated request into pipeline calls, images and files.

Runs on the worker thread. Each batch of the request is one diffusers call with one generator per
image (seeds follow A1111: image k of the job gets ``seed + k``). The generators draw on the CPU by
default (``--rng cpu``), so the same seed gives the same pixels on any device; ``--rng gpu`` draws on
the CUDA device instead, as A1111's default does.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from app.engine import masks, outpaint, sd_upscale
from app.engine.conditioning import StepConditioning
from app.engine.infotext import format_infotext
from app.engine.jobs import BatchSkipped, JobContext, JobResult
from app.engine.lora_runtime import ActiveLora
from app.engine.manager import LoadedModel, ModelManager
from app.engine.outputs import not_saved, output_folder, save_image
from app.engine.preview import LatentPreviewer, PendingPreview
from app.engine.prompt_inputs import conditioned_call, encode_for_pipeline, prompt_infotext
from app.engine.prompts import requested_loras, split_lora_tags
from app.engine.registry import ModelRegistry
from app.engine.hires import (
    hires_infotext,
    hires_sampler,
    is_latent,
    second_pass_schedule,
    second_steps,
    upscale_latents,
    upscale_picture,
)
from app.engine.requests import (
    SAME_CHECKPOINT,
    GenerationRequest,
    Img2ImgRequest,
    InpaintRequest,
    Txt2ImgRequest,
)
from app.engine.samplers import make_scheduler, resolve_sampler
from app.engine.tiling import circular_padding

VERSION = "lora-studio 0.1.0"


@dataclass(frozen=True)
class GenerationSettings:
    """What the engine adds to every request: where to save and how often to preview."""

    outputs_dir: Path
    preview_every: int = 2


def job_seeds(request: GenerationRequest) -> list[int]:
    """All seeds of a job: the request's (or a random one) counting up, as A1111 does."""
    base = request.seed if request.seed != -1 else secrets.randbelow(2**32)
    return [(base + i) % 2**32 for i in range(request.batch_count * request.batch_size)]


def model_display_name(loaded: LoadedModel) -> str:
    """A1111's "Model" value: the checkpoint's name without its suffix."""
    name = loaded.entry.name
    return Path(name).stem if loaded.entry.kind in ("single_file", "pickle") else name


class StepReporter:
    """``callback_on_step_end`` for one batch: cancel, progress with ETA, and previews. A batch of
    hires fix counts both passes: ``steps_before`` (the first pass's, in the second) and
    ``steps_after`` (the second pass's, in the first)."""

    def __init__(self, ctx: JobContext, previewer: LatentPreviewer, preview_every: int, request: GenerationRequest,
                 batch_index: int, clock: "JobClock", steps_before: int = 0, steps_after: int = 0) -> None:
        self.ctx, self.previewer, self.preview_every = ctx, previewer, preview_every
        self.request, self.batch_index, self.clock = request, batch_index, clock
        self.steps_before, self.steps_after = steps_before, steps_after
        self.done = steps_before
        self.pending: PendingPreview | None = None

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        self.ctx.check_cancelled()
        self.ctx.check_skipped()
        this_pass = int(getattr(pipe, "num_timesteps", 0) or self.request.steps)
        total = self.steps_before + this_pass + self.steps_after
        done = self.done = self.steps_before + step + 1
        self.clock.step_done()
        remaining = (total - done) + total * (self.request.batch_count - self.batch_index - 1)
        preview = self._preview(callback_kwargs["latents"], due=bool(
            self.preview_every and done % self.preview_every == 0 and done < total))
        self.ctx.emit(
            "sampling", step=done, total_steps=total, batch_index=self.batch_index,
            batch_count=self.request.batch_count, eta_seconds=self.clock.eta(remaining), preview=preview,
        )
        if done == total:
            self.ctx.emit("decoding", batch_index=self.batch_index, batch_count=self.request.batch_count)
        return callback_kwargs

    def _preview(self, latents: torch.Tensor, due: bool) -> Image.Image | None:
        """The preview to show at this step, if one is ready: the last one started, once its copy is done
        (on the CPU: at once). A due preview starts only when the last one has been shown."""
        shown = self._take_ready()
        if due and self.pending is None:
            self.pending = self.previewer.start(latents)
            if shown is None:
                shown = self._take_ready()
        return shown

    def _take_ready(self) -> Image.Image | None:
        if self.pending is None or not self.pending.ready():
            return None
        preview, self.pending = self.pending.image(), None
        return preview


class JobClock:
    """Measured seconds per step, for the ETA."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.steps = 0

    def step_done(self) -> None:
        self.steps += 1

    def eta(self, remaining_steps: int) -> float | None:
        if self.steps == 0:
            return None
        return (time.monotonic() - self.start) / self.steps * remaining_steps


@dataclass(frozen=True)
class ModelSetup:
    """A request's model ready to sample: checkpoint, VAE and LoRAs in place, its sampler set. Jobs
    drawn in one batch (``app.engine.batching``) share one."""

    loaded: LoadedModel
    pipe: Any
    vae: Any  # the request's VAE module; None: the checkpoint's own
    prompt: str  # the request's prompt without its LoRA tags
    loras: list[ActiveLora]
    vae_hash: str | None
    lora_hashes: dict[str, str]
    rng: str = "cpu"  # EngineConfig.rng

    def generators(self, seeds: list[int]) -> list[torch.Generator]:
        return noise_generators(seeds, self.pipe.device, self.rng)

    def encode(self, manager: ModelManager, request: GenerationRequest, prompt: str) -> StepConditioning:
        """``prompt`` (LoRA tags taken out) and the request's negative prompt, for this pipeline."""
        assert self.loaded.prompt_encoder is not None
        return encode_for_pipeline(self.loaded.prompt_encoder, self.pipe, manager.registry, prompt,
                                   request.negative_prompt, request.steps, loras=self.loras,
                                   clip_skip=request.clip_skip, emphasis=request.emphasis,
                                   allow_pickle=manager.config.allow_pickle)

    def new_result(self) -> JobResult:
        return JobResult(info={"model": model_display_name(self.loaded), "model_hash": self.loaded.model_hash})

    def infotext(self, request: GenerationRequest, seed: int, extra: dict[str, object]) -> str:
        return format_infotext(request, seed=seed, model_name=model_display_name(self.loaded),
                               model_hash=self.loaded.model_hash, vae_name=request.vae, vae_hash=self.vae_hash,
                               lora_hashes=self.lora_hashes, extra=extra, version=VERSION,
                               rng=noise_source(self.pipe.device, self.rng))


def set_up_model(request: GenerationRequest, manager: ModelManager) -> ModelSetup:
    """Load the request's model and VAE, activate exactly its LoRAs and set its sampler."""
    loaded = manager.get(request.model)
    vae_entry = manager.registry.find_vae(request.vae) if request.vae else None
    vae = manager.vae(vae_entry, like=loaded.txt2img.vae) if vae_entry else None
    prompt, loras = resolve_loras(request, manager.registry)
    assert loaded.adapters is not None
    loaded.adapters.activate(loras)  # exactly this job's LoRAs, or the exact base model
    pipeline_task = request.task
    if loaded.is_inpainting_model:
        pipeline_task = "inpaint"  # a 9-channel model always runs its inpaint pipeline (see prepare_inputs)
    pipe = loaded.pipeline(pipeline_task, vae, request.vae)
    pipe.scheduler = make_scheduler(loaded.scheduler_config, *resolve_sampler(request.sampler, request.schedule_type))
    return ModelSetup(loaded, pipe, vae, prompt, loras,
                      vae_hash=manager.registry.short_hash(vae_entry) if vae_entry else None,
                      lora_hashes={lora.name: manager.registry.lora_hash(lora.path)[:12] for lora in loras},
                      rng=manager.config.rng)


def noise_device(device: torch.device, rng: str) -> torch.device:
    """Where a pipeline on ``device`` draws its noise. A1111's RNG "CPU" draws on the CPU, so a seed gives
    the same noise on any machine; "GPU" draws on the pipeline's CUDA device (on another device, on the CPU,
    as A1111 does), which saves copying each step's noise to the GPU."""
    return device if rng == "gpu" and device.type == "cuda" else torch.device("cpu")


def noise_source(device: torch.device, rng: str) -> str:
    """The infotext's RNG: where the noise was drawn in fact. ``--rng gpu`` without CUDA drew on the CPU,
    so its text says "CPU" (A1111 would leave its default, GPU, which another machine's CUDA would not
    reproduce)."""
    return "GPU" if noise_device(device, rng).type == "cuda" else "CPU"


def noise_generators(seeds: list[int], device: torch.device, rng: str) -> list[torch.Generator]:
    """One generator a picture, seeded with its seed, on ``noise_device``."""
    where = noise_device(device, rng)
    return [torch.Generator(where).manual_seed(seed) for seed in seeds]


def run_generation(ctx: JobContext, request: GenerationRequest, manager: ModelManager,
                   settings: GenerationSettings, user: str | None = None) -> JobResult:
    """Run every batch of ``request``; save and return the images (under ``outputs/<user>/`` when the job has a
    logged-in ``user``). Each finished batch goes into ``ctx.partial`` as it is saved, so an interrupted job
    still ends with them (as A1111 returns them)."""
    ctx.emit("loading", message=f"Loading {request.model or manager.config.default_model}")
    setup = set_up_model(request, manager)
    ctx.check_cancelled()
    loaded, pipe, loras, vae, prompt = setup.loaded, setup.pipe, setup.loras, setup.vae, setup.prompt
    previewer = previewer_for(loaded)
    conditioning = setup.encode(manager, request, prompt)
    ctx.check_cancelled()

    seeds = job_seeds(request)
    kept: tuple[Image.Image, masks.Box] | None = None
    if isinstance(request, InpaintRequest) and request.outpainting:
        request, kept = outpaint_request(request, seeds[0])
    upscaling = isinstance(request, Img2ImgRequest) and request.sd_upscaling
    inputs = PreparedInputs({}) if upscaling else prepare_inputs(request, loaded)
    clock = JobClock()
    result = ctx.partial = setup.new_result()
    extra = prompt_infotext(request.prompt, request.negative_prompt, request.steps, request.emphasis, conditioning)
    if kept is not None:
        assert isinstance(request, InpaintRequest)
        extra = {**extra, **outpaint_infotext(request)}
    hires = isinstance(request, Txt2ImgRequest) and request.enable_hr
    if hires:
        if loaded.is_inpainting_model:
            raise ValueError("Hires fix needs a txt2img checkpoint; this one is an inpainting model.")
        extra = {**hires_infotext(request), **extra}
    if upscaling:
        assert isinstance(request, Img2ImgRequest)
        upscaled, upscaler = sd_upscale_start(ctx, request, manager)
        extra = {**sd_upscale.describe(upscaler, request.sd_upscale_overlap, request.sd_upscale_scale), **extra}

    def draw_batch(batch_index: int, batch_seeds: list[int]) -> list[Image.Image]:
        """One batch's pictures: the pipeline call and, with hires fix, its second pass."""
        reporter = StepReporter(ctx, previewer, settings.preview_every, request, batch_index, clock,
                                steps_after=second_steps(request) if hires else 0)
        with circular_padding(pipe.unet, pipe.vae) if request.tiling else contextlib.nullcontext():
            images = pipe(
                **inputs.pipeline_kwargs,
                **common_kwargs(request),
                **conditioned_call(conditioning, request.batch_size, reporter),
                generator=setup.generators(batch_seeds),
                output_type="latent" if hires and is_latent(request.hr_upscaler) else "pil",
            ).images
            ctx.check_cancelled()
            if hires:
                assert isinstance(request, Txt2ImgRequest)
                images = hires_pass(ctx, request, prompt, images, batch_seeds, loaded, loras, vae, manager,
                                    StepReporter(ctx, previewer, settings.preview_every, request, batch_index, clock,
                                                 steps_before=reporter.done))
                ctx.check_cancelled()
        return images

    def draw_upscaled(batch_index: int, batch_seeds: list[int]) -> list[Image.Image]:
        """One SD upscale picture: every tile counts in this batch's progress."""
        assert isinstance(request, Img2ImgRequest)

        def reporter_for(steps_before: int, steps_after: int) -> StepReporter:
            return StepReporter(ctx, previewer, settings.preview_every, request, batch_index, clock,
                                steps_before=steps_before, steps_after=steps_after)

        return [sd_upscale_pass(ctx, request, upscaled, batch_seeds[0], setup, conditioning, reporter_for)]

    per_batch = 1 if upscaling else request.batch_size  # SD upscale: one picture a batch; batch size groups tiles
    for batch_index in range(request.batch_count):
        batch_seeds = seeds[batch_index * per_batch:(batch_index + 1) * per_batch]
        try:
            images = draw_upscaled(batch_index, batch_seeds) if upscaling else draw_batch(batch_index, batch_seeds)
        except BatchSkipped:
            ctx.emit("sampling", message=f"Skipped batch {batch_index + 1} of {request.batch_count}",
                     batch_index=batch_index, batch_count=request.batch_count)
            continue
        images = [inputs.finish(image) for image in images]
        if kept is not None:  # the original's pixels exactly, after the inpaint's soft blending
            images = [outpaint.paste_original(image, *kept) for image in images]
        if request.restore_faces:
            ctx.emit("decoding", message=f"Restoring faces with {request.face_restorer}")
            images = [manager.face_restorers.restore(image, request.face_restorer,
                                                     codeformer_weight=request.codeformer_weight)[0]
                      for image in images]
        ctx.emit("saving", batch_index=batch_index, batch_count=request.batch_count)
        for image, seed in zip(images, batch_seeds):
            keep_picture(result, image, seed, setup.infotext(request, seed, extra), request, settings, user)
    return result


def keep_picture(result: JobResult, image: Image.Image, seed: int, text: str, request: GenerationRequest,
                 settings: GenerationSettings, user: str | None,
                 saving: contextlib.AbstractContextManager = contextlib.nullcontext()) -> None:
    """A finished picture: into the job's result and, when the request saves, under outputs/ (``saving``:
    a lock, where several jobs save into the same folders at once and each needs its own number)."""
    result.images.append(image)
    result.seeds.append(seed)
    result.infotexts.append(text)
    if request.save:
        folder = output_folder(settings.outputs_dir, request.task, user=user)
        try:
            with saving:
                result.paths.append(save_image(image, folder, seed, text))
        except OSError as exc:  # a full disk, a folder it may not write: say so, not "OSError: ..."
            raise not_saved(exc, folder) from exc



def hires_pass(ctx: JobContext, request: Txt2ImgRequest, prompt: str, first: Any, seeds: list[int], loaded: LoadedModel,
               loras: list[ActiveLora], vae: Any, manager: ModelManager, reporter: StepReporter) -> list[Image.Image]:
    """Hires fix's second pass over one batch: upscale the first pass's latents or pictures, then
    img2img at the hires size with the same seeds, its own steps, sampler and prompt schedule."""
    second = loaded
    if request.hr_checkpoint not in ("", SAME_CHECKPOINT):
        ctx.emit("loading", message=f"Loading {request.hr_checkpoint} for the hires pass")
        second = manager.get(request.hr_checkpoint)
        assert second.adapters is not None
        second.adapters.activate(loras)
    pipe = second.pipeline("img2img", vae, request.vae)
    tiling = circular_padding(pipe.unet, pipe.vae) if request.tiling else contextlib.nullcontext()
    pipe.scheduler = make_scheduler(second.scheduler_config, *resolve_sampler(*hires_sampler(request)))
    if is_latent(request.hr_upscaler):
        start: Any = upscale_latents(first, request, int(pipe.vae_scale_factor))
    else:
        ctx.emit("decoding", message=f"Upscaling with {request.hr_upscaler}")

        def tile_done(done: int, total: int) -> None:
            ctx.check_cancelled()  # a model upscaler stops between its tiles

        start = [upscale_picture(picture, request, manager.upscalers, tile_done) for picture in first]
    steps = second_steps(request)
    total_steps, strength = second_pass_schedule(request)
    if request.hr_prompt:  # ``prompt``: the first pass's, its LoRA tags already taken out
        prompt = split_lora_tags(request.hr_prompt)[0]
    assert second.prompt_encoder is not None
    conditioning = encode_for_pipeline(second.prompt_encoder, pipe, manager.registry, prompt,
                                       request.hr_negative_prompt or request.negative_prompt, steps, loras=loras,
                                       clip_skip=request.clip_skip, emphasis=request.emphasis,
                                       allow_pickle=manager.config.allow_pickle)
    with tiling:  # the first pass's modules are tiled already; a second checkpoint's need it too
        return pipe(
            image=start, strength=strength, num_inference_steps=total_steps,
            guidance_scale=request.cfg_scale, num_images_per_prompt=len(seeds),
            **conditioned_call(conditioning, len(seeds), reporter),
            generator=noise_generators(seeds, pipe.device, manager.config.rng), output_type="pil",
        ).images


def sd_upscale_start(ctx: JobContext, request: Img2ImgRequest, manager: ModelManager) -> tuple[Image.Image, str]:
    """(the upscaled input picture, the upscaler's name as the library spells it) for SD upscale."""
    assert request.init_image is not None
    upscalers = manager.upscalers
    name = upscalers.canonical(request.sd_upscale_upscaler)  # Engine.submit has refused unknown ones
    ctx.emit("decoding", message=f"Upscaling with {name}")
    picture = sd_upscale.upscaled_picture(upscalers, request.init_image, name, request.sd_upscale_scale,
                                          lambda done, total: ctx.check_cancelled())  # between a model's tiles
    ctx.check_cancelled()
    return picture, name


def sd_upscale_pass(ctx: JobContext, request: Img2ImgRequest, picture: Image.Image, seed: int, setup: ModelSetup,
                    conditioning: Any, reporter_for: Callable[[int, int], StepReporter]) -> Image.Image:
    """``picture`` (upscaled) redrawn by img2img in tiles of width x height, ``request.batch_size`` tiles a
    pipeline call, tile k with ``seed + k``. ``reporter_for(steps_before, steps_after)`` makes each call's
    StepReporter, so progress counts the steps of all tiles; cancel is checked between tiles too."""
    per_call = img2img_steps(request.steps, request.denoising_strength)
    pipe, inpainting_model = setup.pipe, setup.loaded.is_inpainting_model
    done = 0

    def draw(batch: sd_upscale.TileBatch) -> list[Image.Image]:
        nonlocal done
        reporter = reporter_for(done, per_call * (batch.count - batch.index - 1))
        count, size = len(batch.tiles), batch.tiles[0].size
        inputs: dict[str, Any] = dict(image=list(batch.tiles), strength=request.denoising_strength)
        if inpainting_model:  # img2img on an inpainting model repaints under a full mask (prepare_inputs)
            inputs.update(mask_image=[Image.new("L", size, 255)] * count, width=size[0], height=size[1])
        images = pipe(**inputs, num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
                      num_images_per_prompt=count, **conditioned_call(conditioning, count, reporter),
                      generator=setup.generators(batch.seeds), output_type="pil").images
        done = reporter.done
        return images

    with circular_padding(pipe.unet, pipe.vae) if request.tiling else contextlib.nullcontext():
        return sd_upscale.redraw_in_tiles(picture, (request.width, request.height), request.sd_upscale_overlap, draw,
                                          seed=seed, batch_size=request.batch_size, check_cancelled=ctx.check_cancelled)


def img2img_steps(steps: int, strength: float) -> int:
    """The steps diffusers' img2img runs for ``steps`` at ``strength`` (first-order samplers; a progress estimate)."""
    return max(1, min(int(steps * strength), steps))


def outpaint_request(request: InpaintRequest, seed: int) -> tuple[InpaintRequest, tuple[Image.Image, masks.Box]]:
    """The inpaint request that outpaints ``request``: the extended, filled canvas and its mask, at the
    canvas's size, over the whole picture, starting from the fill; and (original, box) to paste back."""
    assert request.init_image is not None
    original = request.init_image.convert("RGB")
    canvas, mask, box = outpaint.extend_canvas(original, request.outpaint_left, request.outpaint_right,
                                               request.outpaint_up, request.outpaint_down, request.outpaint_fill, seed)
    changed = request.with_changes(init_image=canvas, mask=mask, width=canvas.width, height=canvas.height,
                                   inpaint_area="Whole picture", masked_content="original", invert_mask=False)
    assert isinstance(changed, InpaintRequest)
    return changed, (original, box)


def outpaint_infotext(request: InpaintRequest) -> dict[str, str]:
    """LoRA Studio's infotext keys for outpainting (A1111 outpaints with scripts, which write none)."""
    sides = outpaint.describe(request.outpaint_left, request.outpaint_right, request.outpaint_up, request.outpaint_down)
    return {"Outpaint": sides, "Outpaint fill": request.outpaint_fill}


def resolve_loras(request: GenerationRequest, registry: ModelRegistry) -> tuple[str, list[ActiveLora]]:
    """(the prompt to encode, the request's LoRAs found on disk). Unknown names raise ValueError."""
    prompt, specs = requested_loras(request)
    loras = []
    for spec in specs:
        entry = registry.find_lora(spec.name)
        assert entry.path is not None
        loras.append(ActiveLora(spec.name, entry.path, registry.lora_info(entry.path), spec.weight))
    return prompt, loras


def common_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """Pipeline arguments every task shares, besides the conditioning (``prompt_inputs``)."""
    return dict(
        num_inference_steps=request.steps,
        guidance_scale=request.cfg_scale,
        num_images_per_prompt=request.batch_size,
    )


def previewer_for(loaded: LoadedModel) -> LatentPreviewer:
    card = loaded.card
    if "latent_rgb_factors" in card:
        factors = tuple(tuple(row) for row in card["latent_rgb_factors"])
        return LatentPreviewer(factors, tuple(card.get("latent_rgb_bias", (0.0, 0.0, 0.0))))
    return LatentPreviewer.for_family(loaded.family)


@dataclass
class PreparedInputs:
    """The task-specific pipeline arguments, and how to turn a pipeline image into the result."""

    pipeline_kwargs: dict[str, Any]
    original: Image.Image | None = None  # inpaint: the picture the result is pasted back into
    blurred_mask: Image.Image | None = None
    crop_box: masks.Box | None = None

    def finish(self, image: Image.Image) -> Image.Image:
        if self.original is None or self.blurred_mask is None:
            return image
        if self.crop_box is not None:  # "only masked": scale the crop back and put it in place
            left, top, right, bottom = self.crop_box
            placed = self.original.convert("RGB")
            placed.paste(image.resize((right - left, bottom - top), Image.LANCZOS), (left, top))
            image = placed
        return masks.paste_back(self.original, image, self.blurred_mask)


def prepare_inputs(request: GenerationRequest, loaded: LoadedModel) -> PreparedInputs:
    size = dict(width=request.width, height=request.height)
    if isinstance(request, InpaintRequest):
        return _prepare_inpaint(request, size)
    everywhere = Image.new("L", (request.width, request.height), 255)
    if isinstance(request, Img2ImgRequest):
        assert request.init_image is not None
        image = masks.resize_image(request.init_image.convert("RGB"), request.width, request.height, request.resize_mode)
        if loaded.is_inpainting_model:  # A1111: img2img on an inpainting model repaints under a full mask
            return PreparedInputs(dict(image=image, mask_image=everywhere, strength=request.denoising_strength, **size))
        return PreparedInputs(dict(image=image, strength=request.denoising_strength))
    if loaded.is_inpainting_model:  # txt2img: a whole-image mask over a blank picture, from pure noise
        blank = Image.new("RGB", (request.width, request.height))
        return PreparedInputs(dict(image=blank, mask_image=everywhere, strength=1.0, **size))
    return PreparedInputs(dict(size))


def _prepare_inpaint(request: InpaintRequest, size: dict[str, int]) -> PreparedInputs:
    assert request.init_image is not None and request.mask is not None
    if request.inpaint_area == "Only masked":
        original = request.init_image.convert("RGB")
        blurred = masks.prepare_mask(request.mask, request.mask_blur, request.invert_mask)
        box = masks.crop_region(blurred, request.masked_padding, request.width, request.height)
        work_image = original.crop(box).resize((request.width, request.height), Image.LANCZOS)
        work_mask = blurred.crop(box).resize((request.width, request.height), Image.LANCZOS)
    else:
        original = masks.resize_image(request.init_image.convert("RGB"), request.width, request.height, request.resize_mode)
        mask = masks.resize_image(request.mask.convert("L"), request.width, request.height, request.resize_mode)
        blurred = masks.prepare_mask(mask, request.mask_blur, request.invert_mask)
        if masks.mask_bbox(blurred) is None:
            raise ValueError("The mask is empty: paint the area to repaint.")
        box, work_image, work_mask = None, original, blurred
    if request.masked_content == "fill":
        work_image = masks.fill_masked_area(work_image, work_mask)
    return PreparedInputs(
        dict(image=work_image, mask_image=work_mask, strength=request.denoising_strength, **size),
        original=original, blurred_mask=blurred, crop_box=box,
    )
