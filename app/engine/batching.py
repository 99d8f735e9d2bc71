"""Queued txt2img jobs of one model, size, sampler and steps drawn as one pipeline call.

With ``EngineConfig.batch_requests`` N > 1 the worker hands up to N queued jobs whose ``batch_key`` is
equal to ``BatchRunner``: one pipeline call with every job's prompt embeddings stacked (the negative
halves too) and one generator per image (``noise_generators``), each job's seeds as its own (image k of a job gets
seed + k), so each picture equals the one its job draws alone up to the rounding of batched matmuls.
Each job keeps its own events, ETA, previews of its own rows, infotext, result and files. A job
cancelled mid-batch ends "cancelled" at the next step and its rows are dropped from the results; the
call stops only when every job of it is cancelled. Skip ends a job's only batch the same way, "done"
with no picture, as a skipped batch does alone.

Only plain jobs batch (``batch_key``); jobs whose encoded prompts turn out to differ in shape, or that
are drawn by an inpainting checkpoint, are handed back to the worker to run alone, exactly as without
batching.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

from app.engine.conditioning import Conditioning, StepConditioning
from app.engine.jobs import BatchSkipped, Job, JobCancelled, JobContext, JobResult
from app.engine.manager import ModelManager
from app.engine.prompt_inputs import conditioned_call, prompt_infotext
from app.engine.prompt_parser import prompt_schedule
from app.engine.prompts import requested_loras
from app.engine.requests import GenerationRequest, Txt2ImgRequest
from app.engine.samplers import resolve_sampler
from app.engine.tasks import (
    GenerationSettings,
    JobClock,
    ModelSetup,
    StepReporter,
    common_kwargs,
    job_seeds,
    keep_picture,
    prepare_inputs,
    previewer_for,
    set_up_model,
)

log = logging.getLogger(__name__)


def batch_key(request: GenerationRequest, default_model: str | None) -> Hashable | None:
    """What must be equal for requests to be drawn as one batch, or None for one that runs alone: txt2img
    with one batch (``batch_count`` 1), no hires fix, tiling or face restoration, and prompts that keep one
    conditioning through sampling. Their encodings' shapes are compared once encoded (``BatchRunner``)."""
    if type(request) is not Txt2ImgRequest:
        return None
    if request.batch_count != 1 or request.enable_hr or request.tiling or request.restore_faces:
        return None
    prompt, loras = requested_loras(request)
    if _scheduled(prompt, request.steps) or _scheduled(request.negative_prompt, request.steps):
        return None
    return (request.model or default_model, request.vae, request.width, request.height,
            resolve_sampler(request.sampler, request.schedule_type), request.steps, request.cfg_scale,
            request.clip_skip, request.emphasis, loras)


def _scheduled(text: str, steps: int) -> bool:
    """Whether ``text`` changes during sampling (prompt editing, alternation); the schedule counts model
    calls, twice the steps for a second-order sampler."""
    return any(len(prompt_schedule(text, calls)) > 1 for calls in (steps, 2 * steps))


@dataclass(frozen=True)
class BatchMember:
    """``Job.batch`` of a generation that may be drawn with others: its request, and the folder's user."""

    request: Txt2ImgRequest
    user: str | None
    key: Hashable


def batch_member(request: GenerationRequest, user: str | None, default_model: str | None) -> BatchMember | None:
    """``Job.batch`` of a request that may be drawn with others, or None."""
    key = batch_key(request, default_model)
    if key is None or not isinstance(request, Txt2ImgRequest):
        return None
    return BatchMember(request, user, key)


class _NobodyLeft(Exception):
    """Ends a batch's pipeline call once every job of it has ended."""


@dataclass
class _Drawn:
    """One job of the batch: its request, its encoding and its rows of the batch."""

    ctx: JobContext
    member: BatchMember
    conditioning: StepConditioning
    seeds: list[int]
    rows: slice  # its images in the batch
    reporter: StepReporter | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def request(self) -> Txt2ImgRequest:
        return self.member.request

    @property
    def ended(self) -> bool:
        return self.ctx.job.finished

    def cancel(self, message: str) -> None:
        log.info("%s cancelled in a batch: %s", self.ctx.job.id, message)
        self.ctx.emit("cancelled", message=message, result=self.ctx.partial)

    def skip(self) -> None:
        self.ctx.emit("sampling", message="Skipped batch 1 of 1", batch_index=0, batch_count=1)
        self.ctx.emit("done", result=self.ctx.partial)


class _BatchReporter:
    """``callback_on_step_end`` of a batch: each job's own progress, previews, cancel and skip, on its own
    rows; the call ends when no job is left to draw."""

    def __init__(self, drawn: list[_Drawn]) -> None:
        self.drawn = drawn

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        latents = callback_kwargs["latents"]
        for one in self.drawn:
            if one.ended:
                continue
            assert one.reporter is not None
            try:
                one.reporter(pipe, step, timestep, {"latents": latents[one.rows]})
            except JobCancelled as exc:
                one.cancel(str(exc))
            except BatchSkipped:
                one.skip()
        if all(one.ended for one in self.drawn):
            raise _NobodyLeft
        return callback_kwargs


def _shapes(conditioning: StepConditioning) -> tuple:
    positive, negative = conditioning.at(1)
    return tuple(None if tensor is None else tuple(tensor.shape)
                 for tensor in (positive.embeds, negative.embeds, positive.pooled, negative.pooled))


def _stacked(drawn: list[_Drawn]) -> StepConditioning:
    """One conditioning for the whole batch: each job's, once per image of it, in the batch's order."""
    def stack(side: int) -> Conditioning:  # 0: positive, 1: negative
        parts = [(one.conditioning.at(1)[side], len(one.seeds)) for one in drawn]
        embeds = torch.cat([c.embeds.expand(n, *c.embeds.shape[1:]) for c, n in parts])
        if parts[0][0].pooled is None:
            return Conditioning(embeds)
        return Conditioning(embeds, torch.cat([c.pooled.expand(n, *c.pooled.shape[1:])  # type: ignore[union-attr]
                                               for c, n in parts]))

    last = drawn[0].conditioning.positive[0][0]
    return StepConditioning(positive=((last, stack(0)),), negative=((last, stack(1)),))


class BatchRunner:
    """``Worker.run_batch`` for generation: draws the jobs of ``contexts`` (each ``Job.batch`` a
    BatchMember of one key) as one batch, ends each, and returns the jobs it leaves to run alone."""

    def __init__(self, manager: ModelManager, settings: GenerationSettings) -> None:
        self.manager, self.settings = manager, settings

    def __call__(self, contexts: list[JobContext]) -> list[Job]:
        waiting = []
        for ctx in contexts:
            if ctx.cancel_requested:
                ctx.emit("cancelled", message="Cancelled before it started.", result=JobResult())
            else:
                waiting.append(ctx)
        if not waiting:
            return []
        first = _member(waiting[0]).request
        for ctx in waiting:
            ctx.emit("loading", message=f"Loading {first.model or self.manager.config.default_model}")
        setup = set_up_model(first, self.manager)
        if setup.loaded.is_inpainting_model:  # its txt2img runs the inpaint pipeline on a blank picture
            return [ctx.job for ctx in waiting]
        drawn: list[_Drawn] = []
        for ctx in waiting:
            member = _member(ctx)
            try:
                conditioning = setup.encode(self.manager, member.request, requested_loras(member.request)[0])
            except ValueError:  # a prompt this model cannot read fails its own job, alone
                continue
            if not conditioning.changes_during_sampling and \
                    (not drawn or _shapes(conditioning) == _shapes(drawn[0].conditioning)):
                seeds, start = job_seeds(member.request), drawn[-1].rows.stop if drawn else 0
                drawn.append(_Drawn(ctx, member, conditioning, seeds, slice(start, start + len(seeds))))
        if len(drawn) < 2:
            return [ctx.job for ctx in waiting]
        self._draw(setup, drawn)
        taken = {id(one.ctx) for one in drawn}
        return [ctx.job for ctx in waiting if id(ctx) not in taken]

    def _draw(self, setup: ModelSetup, drawn: list[_Drawn]) -> None:
        """One pipeline call for ``drawn``; each job ends as its own rows come out."""
        previewer = previewer_for(setup.loaded)
        for one in drawn:
            one.reporter = StepReporter(one.ctx, previewer, self.settings.preview_every, one.request, 0, JobClock())
            one.ctx.partial = setup.new_result()
            one.extra = prompt_infotext(one.request.prompt, one.request.negative_prompt, one.request.steps,
                                        one.request.emphasis, one.conditioning)
        first = drawn[0].request
        seeds = [seed for one in drawn for seed in one.seeds]
        log.info("drawing %d jobs (%d images) as one batch: %s", len(drawn), len(seeds),
                 ", ".join(one.ctx.job.id for one in drawn))
        try:
            images = setup.pipe(
                **prepare_inputs(first, setup.loaded).pipeline_kwargs,
                **(common_kwargs(first) | {"num_images_per_prompt": 1}),  # the stacked embeddings: one row an image
                **conditioned_call(_stacked(drawn), len(seeds), _BatchReporter(drawn)),
                generator=setup.generators(seeds), output_type="pil",
            ).images
        except _NobodyLeft:
            return
        for one in drawn:
            if one.ended:
                continue
            if one.ctx.cancel_requested:  # while the batch was decoded
                one.cancel("Interrupted by its owner.")
                continue
            self._keep(setup, one, images[one.rows])

    def _keep(self, setup: ModelSetup, one: _Drawn, images: list) -> None:
        """Save one job's pictures and end it; a picture it cannot save fails that job only."""
        one.ctx.emit("saving", batch_index=0, batch_count=1)
        try:
            for image, seed in zip(images, one.seeds):
                keep_picture(one.ctx.partial, image, seed, setup.infotext(one.request, seed, one.extra),
                             one.request, self.settings, one.member.user)
        except ValueError as exc:
            log.warning("%s failed: %s", one.ctx.job.id, exc)
            one.ctx.emit("failed", message=str(exc))
            return
        one.ctx.emit("done", result=one.ctx.partial)


def _member(ctx: JobContext) -> BatchMember:
    member = ctx.job.batch
    assert isinstance(member, BatchMember)
    return member
