"""Generation routes: txt2img, img2img, progress, interrupt, skip, options and PNG info.

Each generation route maps A1111's fields onto an engine request (``app.engine.a1111_request``),
submits it as the caller's job on the shared worker and waits for it, as A1111's API does. Those two
routes are ``async``: decoding, mapping and encoding run in FastAPI's thread pool, and the wait for
the job holds no thread (it polls the job from the event loop), so any number of waiting calls
leave /progress, /interrupt and the UI answering. The other routes are plain ``def``. Progress,
interrupt and skip see the caller's own jobs only.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from app.api.context import ApiContext, api_user
from app.api.errors import ApiError
from app.api.generate_models import (
    ImageToImageResponse,
    OptionsModel,
    PNGInfoRequest,
    PNGInfoResponse,
    ProgressRequest,
    ProgressResponse,
    ProgressState,
    StableDiffusionImg2ImgProcessingAPI,
    StableDiffusionTxt2ImgProcessingAPI,
    TextToImageResponse,
)
from app.api.images import decode_image, encode_png, open_image, text_items
from app.engine import GenerationRequest, Job, JobCancelled, JobFailed, JobResult
from app.engine.a1111_request import A1111Task, a1111_info, request_from_a1111, validate_options
from app.engine.infotext import parse_infotext
from app.engine.sd_upscale import upscaler_names


JOB_POLL_SECONDS = 0.05  # how often a waiting generation call looks at its job


def router(context: ApiContext) -> APIRouter:
    """The generation routes on ``context``'s engine and options."""
    api = APIRouter(tags=["generation"])
    started: weakref.WeakKeyDictionary[Job, str] = weakref.WeakKeyDictionary()  # job -> A1111 job_timestamp

    def submit(task: A1111Task, fields: dict[str, Any], owner: str) -> tuple[GenerationRequest, Job, str]:
        """Map and queue (in a worker thread of FastAPI's pool: it decodes and validates)."""
        request = request_from_a1111(task, fields, defaults=context.options.get(), registry=context.engine.registry,
                                     upscalers=upscaler_names(context.engine.manager.upscalers))
        stamp = _dt.datetime.now().strftime("%Y%m%d%H%M%S")
        job = context.engine.submit(request, owner, user=api_user(owner))  # with logins: outputs/<user>/
        started[job] = stamp
        return request, job, stamp

    async def generate(task: A1111Task, fields: dict[str, Any], owner: str) -> tuple[GenerationRequest, JobResult, str]:
        """Submit and wait without holding a thread; an interrupted job gives the images it finished (as A1111's
        API returns them), a failed one a 422."""
        request, job, stamp = await run_in_threadpool(submit, task, fields, owner)
        while not job.finished:
            await asyncio.sleep(JOB_POLL_SECONDS)
        try:
            result = job.wait(0)
        except JobCancelled as exc:
            result = exc.result
        except JobFailed as exc:
            raise ApiError(422, str(exc)) from None
        return request, result, stamp

    @api.post("/txt2img", response_model=TextToImageResponse)
    async def txt2img(body: StableDiffusionTxt2ImgProcessingAPI,
                      owner: str = Depends(context.owner)) -> TextToImageResponse:
        """Generate images from a prompt; returns when they are done."""
        parameters = body.model_dump()
        request, result, stamp = await generate("txt2img", dict(parameters), owner)
        images = await run_in_threadpool(_images, result, body.send_images)
        return TextToImageResponse(images=images, parameters=parameters,
                                   info=json.dumps(a1111_info(request, result, job_timestamp=stamp)))

    @api.post("/img2img", response_model=ImageToImageResponse)
    async def img2img(body: StableDiffusionImg2ImgProcessingAPI,
                      owner: str = Depends(context.owner)) -> ImageToImageResponse:
        """Repaint ``init_images[0]``; with a ``mask``, inpaint where the mask is white."""
        parameters = body.model_dump()
        fields = dict(parameters)
        fields["init_image"], fields["mask"] = await run_in_threadpool(_inputs, body.init_images, body.mask)
        request, result, stamp = await generate("img2img", fields, owner)
        if not body.include_init_images:
            parameters["init_images"] = parameters["mask"] = None
        images = await run_in_threadpool(_images, result, body.send_images)
        return ImageToImageResponse(images=images, parameters=parameters,
                                    info=json.dumps(a1111_info(request, result, job_timestamp=stamp)))

    @api.get("/progress", response_model=ProgressResponse)
    def progress(query: Annotated[ProgressRequest, Query()], owner: str = Depends(context.owner)) -> ProgressResponse:
        """Progress of the caller's current job (its running one, else its next queued one); zeros without one."""
        job = context.engine.current_job(owner)
        if job is None:
            return ProgressResponse()
        return _progress(job, started.get(job, "0"), query.skip_current_image)

    @api.post("/interrupt")
    def interrupt(owner: str = Depends(context.owner)) -> dict:
        """Stop the caller's running job and drop its queued ones; the images done so far are returned."""
        context.engine.cancel_all_of(owner)
        return {}

    @api.post("/skip")
    def skip(owner: str = Depends(context.owner)) -> dict:
        """Skip the batch the caller's current job is drawing; the job goes on with its next batch (n_iter),
        as A1111's Skip does. The images of a skipped batch are not returned."""
        context.engine.skip(owner)
        return {}

    @api.get("/options", response_model=OptionsModel)
    def get_options(owner: str = Depends(context.owner)) -> dict[str, Any]:
        """All options: the known ones and any other key stored before."""
        return context.options.get()

    @api.post("/options")
    def set_options(body: OptionsModel, owner: str = Depends(context.owner)) -> None:
        """Change options (saved across restarts). A checkpoint or VAE must exist, clip skip be 1-12,
        emphasis a known mode; unknown keys are stored as given. Answers null, as A1111."""
        context.options.update(validate_options(body.root, context.engine.registry))

    @api.post("/png-info", response_model=PNGInfoResponse)
    def png_info(body: PNGInfoRequest, owner: str = Depends(context.owner)) -> PNGInfoResponse:
        """The generation parameters stored in an image, raw and parsed, and its other text chunks."""
        if not body.image.strip():
            return PNGInfoResponse(info="")
        text, items = text_items(open_image("image", body.image, min_side=1))
        return PNGInfoResponse(info=text or "", items=items, parameters=parse_infotext(text or "", with_defaults=True))

    return api


def _inputs(init_images: list[str] | None, mask: str | None) -> tuple[Image.Image, Image.Image | None]:
    """The decoded input image and mask (None without one) of an img2img request."""
    return _init_image(init_images), decode_image("mask", mask, mode="L") if mask else None


def _init_image(init_images: list[str] | None) -> Image.Image:
    """The one input image of an img2img request, decoded."""
    if not init_images:
        raise ApiError(422, "init_images must hold an image (base64) for img2img.")
    if len(init_images) > 1:
        raise ApiError(422, f"init_images holds {len(init_images)} images; LoRA Studio takes one per request.")
    return decode_image("init_images[0]", init_images[0])


def _images(result: JobResult, send: bool) -> list[str]:
    if not send:
        return []
    return [encode_png(image, text) for image, text in zip(result.images, result.infotexts)]


def _progress(job: Job, job_timestamp: str, skip_image: bool) -> ProgressResponse:
    """A1111's progress for one job, from its latest event."""
    event = job.latest
    state = ProgressState(interrupted=job.cancel_requested, job=job.id, job_count=1, job_timestamp=job_timestamp)
    if event is None:
        return ProgressResponse(state=state, textinfo="Waiting...")
    batches = max(event.batch_count or 1, 1)
    batch = event.batch_index or 0
    state.job_count, state.job_no = batches, batch
    fraction = 0.0
    if event.phase == "sampling" and event.total_steps:
        state.sampling_step, state.sampling_steps = event.step or 0, event.total_steps
        fraction = (batch + (event.step or 0) / event.total_steps) / batches
        state.job = f"Batch {batch + 1} out of {batches}"
    elif event.phase in ("decoding", "saving"):
        fraction = (batch + 1) / batches
    preview = None if skip_image or job.latest_preview is None else encode_png(job.latest_preview)
    text = event.message or (f"Step {state.sampling_step}/{state.sampling_steps}" if event.phase == "sampling"
                             else event.phase.capitalize())
    return ProgressResponse(progress=min(max(fraction, 0.0), 1.0), eta_relative=event.eta_seconds or 0.0, state=state,
                            current_image=preview, textinfo=text)
