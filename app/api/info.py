"""Information routes (models, samplers, upscalers, face restorers, LoRAs, embeddings, memory...) and the extras.

Answers keep A1111's shapes (``app.api.info_models``). Features LoRA Studio does not have
(hypernetworks, A1111's other scripts) answer 200 with A1111's empty shape, so clients that list
them at start keep working. Every route takes the caller's credentials when logins are on.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
from collections import Counter
from dataclasses import fields
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastapi import APIRouter, Depends

from app.api.context import ApiContext
from app.api.errors import ApiError
from app.api.images import encode_png, open_image
from app.api.info_models import (
    EmbeddingItem,
    EmbeddingsResponse,
    ExtrasBatchImagesRequest,
    ExtrasBatchImagesResponse,
    ExtrasOptions,
    ExtrasSingleImageRequest,
    ExtrasSingleImageResponse,
    FaceRestorerItem,
    HypernetworkItem,
    LatentUpscalerModeItem,
    LoraItem,
    MemoryNumbers,
    MemoryResponse,
    PromptStyleItem,
    RealesrganItem,
    SamplerItem,
    SchedulerItem,
    ScriptInfo,
    ScriptsList,
    SDModelItem,
    SDVaeItem,
    UpscalerItem,
)
from app.engine import Engine, JobCancelled, JobFailed
from app.engine.a1111_request import checkpoint_name
from app.engine.registry import ModelEntry, ModelRegistry
from app.engine.extras import ExtrasSettings, check_extras, extras_job
from app.engine.resize import LATENT_UPSCALE_MODES
from app.engine.samplers import SAMPLER_NAMES, SAMPLERS, SCHEDULE_TYPES
from app.engine.requests import SD_UPSCALE, Img2ImgRequest, limits_of
from app.engine.sd_upscale import upscaler_names

# Checkpoints whose hashed weights are at most this big get their hash in /sd-models; bigger ones
# are not hashed by a listing (A1111 too titles a checkpoint without a hash until it has hashed it).
LIST_HASH_MAX_BYTES = 256 * 2**20
MAX_EXTRAS_IMAGES = 16  # pictures in one extra-batch-images request
_BUILTIN_UPSCALER_SCALE = 4.0  # what A1111 reports for its built-in upscalers

# A1111's schedule types by label: (internal name, aliases, default rho, needs the inner model).
_SCHEDULE_FACTS: Mapping[str, tuple[str, tuple[str, ...] | None, float, bool]] = MappingProxyType({
    "Automatic": ("automatic", None, -1.0, False),
    "Uniform": ("uniform", None, -1.0, True),
    "Karras": ("karras", None, 7.0, False),
    "Exponential": ("exponential", None, -1.0, False),
    "SGM Uniform": ("sgm_uniform", ("SGMUniform",), -1.0, True),
    "Beta": ("beta", None, -1.0, True),
})

# A1111's options of each sampler besides its default schedule (values as its API sends them).
_SAMPLER_OPTIONS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "DPM++ SDE": MappingProxyType({"second_order": "True", "brownian_noise": "True"}),
    "DPM++ 2M SDE": MappingProxyType({"brownian_noise": "True"}),
    "DPM++ 2M SDE Heun": MappingProxyType({"brownian_noise": "True", "solver_type": "heun"}),
    "Euler a": MappingProxyType({"uses_ensd": "True"}),
    "Heun": MappingProxyType({"second_order": "True"}),
    "DPM2": MappingProxyType({"discard_next_to_last_sigma": "True", "second_order": "True"}),
    "DPM2 a": MappingProxyType({"discard_next_to_last_sigma": "True", "uses_ensd": "True", "second_order": "True"}),
})
_SAMPLER_EXTRA_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"DDIM": ("ddim",), "PLMS": ("plms",), "UniPC": ("unipc",)})


def router(context: ApiContext) -> APIRouter:
    """The routes, bound to ``context``'s engine and options."""
    api = APIRouter(tags=["information"])
    engine, registry = context.engine, context.engine.registry

    @api.get("/sd-models", response_model=list[SDModelItem])
    def sd_models(owner: str = Depends(context.owner)) -> list[SDModelItem]:
        """The checkpoints in models/Stable-diffusion (and those given at launch)."""
        return [checkpoint_item(registry, entry) for entry in registry.checkpoints() if entry.path is not None]

    @api.get("/samplers", response_model=list[SamplerItem])
    def samplers(owner: str = Depends(context.owner)) -> list[SamplerItem]:
        """Every sampler LoRA Studio runs, with A1111's aliases and options."""
        return [sampler_item(name) for name in SAMPLER_NAMES]

    @api.get("/schedulers", response_model=list[SchedulerItem])
    def schedulers(owner: str = Depends(context.owner)) -> list[SchedulerItem]:
        """The schedule types LoRA Studio runs, under A1111's internal names."""
        return [scheduler_item(label) for label in SCHEDULE_TYPES]

    @api.get("/upscalers", response_model=list[UpscalerItem])
    def upscalers(owner: str = Depends(context.owner)) -> list[UpscalerItem]:
        """The built-in upscalers (None, Lanczos, Nearest), then the usable model files in models/ESRGAN,
        RealESRGAN, SwinIR, DAT, HAT and upscale_models, with the scale read from each file."""
        return [upscaler_item(item) for item in engine.manager.upscalers.available()
                if item.error is None]

    @api.get("/latent-upscale-modes", response_model=list[LatentUpscalerModeItem])
    def latent_upscale_modes(owner: str = Depends(context.owner)) -> list[LatentUpscalerModeItem]:
        """A1111's latent upscale modes for hires fix."""
        return [LatentUpscalerModeItem(name=name) for name in LATENT_UPSCALE_MODES]

    @api.get("/sd-vae", response_model=list[SDVaeItem])
    def sd_vae(owner: str = Depends(context.owner)) -> list[SDVaeItem]:
        """The VAEs in models/VAE."""
        return [SDVaeItem(model_name=e.name, filename=str(e.path.absolute())) for e in registry.vaes() if e.path]

    @api.get("/loras", response_model=list[LoraItem])
    def loras(owner: str = Depends(context.owner)) -> list[LoraItem]:
        """The files in models/Lora, named as ``<lora:name>`` takes them."""
        return lora_items(registry)

    @api.get("/embeddings", response_model=EmbeddingsResponse)
    def embeddings(owner: str = Depends(context.owner)) -> EmbeddingsResponse:
        """The files in models/embeddings: loaded (usable on the API's checkpoint) or skipped."""
        return embeddings_answer(engine, checkpoint_name(context.options.get().get("sd_model_checkpoint")))

    @api.get("/prompt-styles", response_model=list[PromptStyleItem])
    def prompt_styles(owner: str = Depends(context.owner)) -> list[PromptStyleItem]:
        """The styles of models/styles.csv (A1111's format), read now."""
        return [PromptStyleItem(name=style.name, prompt=style.prompt, negative_prompt=style.negative_prompt)
                for style in context.engine.styles.styles()]

    @api.get("/cmd-flags", response_model=dict[str, Any])
    def cmd_flags(owner: str = Depends(context.owner)) -> dict[str, Any]:
        """The flags LoRA Studio was started with (logins left out)."""
        return dict(context.cmd_flags)

    @api.get("/memory", response_model=MemoryResponse)
    def memory(owner: str = Depends(context.owner)) -> MemoryResponse:
        """RAM and CUDA memory, in bytes, in A1111's shape."""
        return MemoryResponse(ram=ram_numbers(), cuda=cuda_numbers())

    @api.get("/face-restorers", response_model=list[FaceRestorerItem])
    def face_restorers(owner: str = Depends(context.owner)) -> list[FaceRestorerItem]:
        """The face restoration models that can run, by architecture as A1111 names them (GFPGAN,
        CodeFormer, RestoreFormer), each with the folder of its file; empty when none is installed."""
        items: dict[str, FaceRestorerItem] = {}
        for item in engine.manager.face_restorers.available():
            if item.error is None and item.architecture not in items:
                items[item.architecture] = FaceRestorerItem(
                    name=item.architecture, cmd_dir=str(item.path.parent.absolute()))
        return list(items.values())

    @api.get("/realesrgan-models", response_model=list[RealesrganItem])
    def realesrgan_models(owner: str = Depends(context.owner)) -> list[RealesrganItem]:
        """The usable upscaler files of models/RealESRGAN, with the scale read from each."""
        folder = (context.engine.config.models_dir / "RealESRGAN").resolve()
        return [RealesrganItem(name=item.name, path=str(item.path.absolute()),
                               scale=int(item.scale))
                for item in engine.manager.upscalers.available()
                if item.error is None and item.path is not None and item.path.resolve().is_relative_to(folder)]

    @api.get("/hypernetworks", response_model=list[HypernetworkItem])
    def hypernetworks(owner: str = Depends(context.owner)) -> list[HypernetworkItem]:
        """LoRA Studio has no hypernetworks: an empty list."""
        return []

    @api.get("/scripts", response_model=ScriptsList)
    def scripts(owner: str = Depends(context.owner)) -> ScriptsList:
        """The A1111 scripts LoRA Studio runs (script_name): "sd upscale" in img2img."""
        return ScriptsList(img2img=[SD_UPSCALE])

    @api.get("/script-info", response_model=list[ScriptInfo])
    def script_info(owner: str = Depends(context.owner)) -> list[ScriptInfo]:
        """The scripts LoRA Studio runs and their script_args, in A1111's shape."""
        return [sd_upscale_info(upscaler_names(engine.manager.upscalers))]

    # The registry reads the folders on every listing (hashes and file facts are cached per file
    # version, so a changed file is read again): there is nothing to refresh. A1111 answers null.
    for kind in ("checkpoints", "loras", "vae", "embeddings"):
        _add_refresh(api, context, kind)

    async def on_worker(owner: str, description: str, images: list[tuple[str, str]],
                        options: ExtrasOptions) -> tuple[list[str], dict[str, str]]:
        """Run the Extras over the pictures as one job on the worker, in turn with generation (decoding
        each picture only when its turn comes, so memory holds one at a time); wait without holding a thread."""
        settings = extras_settings(options)
        try:
            check_extras(settings, engine.manager.upscalers, engine.manager.face_restorers)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        if len(images) > MAX_EXTRAS_IMAGES:
            raise ApiError(422, f"imageList holds {len(images)} pictures; send at most {MAX_EXTRAS_IMAGES} a request.")
        pictures = (open_image(field, data, min_side=1) for field, data in images)
        job = context.engine.submit_work(
            lambda ctx: extras_job(ctx, pictures, len(images), settings, engine.manager.upscalers,
                                   engine.manager.face_restorers), description, owner)
        while not job.finished:
            await asyncio.sleep(0.05)
        try:
            result = job.wait(0)
        except JobFailed as exc:
            raise ApiError(422, str(exc)) from None
        except JobCancelled:
            return [], {}
        encoded = [encode_png(image, image.info.get("parameters")) for image in result.images]
        return encoded, result.info.get("facts", {})

    @api.post("/extra-single-image", response_model=ExtrasSingleImageResponse, tags=["extras"])
    async def extra_single_image(body: ExtrasSingleImageRequest,
                                 owner: str = Depends(context.owner)) -> ExtrasSingleImageResponse:
        """Upscale one picture and restore its faces (A1111's extras tab)."""
        images, info = await on_worker(owner, "extras: one picture", [("image", body.image)], body)
        return ExtrasSingleImageResponse(html_info=info_html(info), image=images[0] if images else "")

    @api.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse, tags=["extras"])
    async def extra_batch_images(body: ExtrasBatchImagesRequest,
                                 owner: str = Depends(context.owner)) -> ExtrasBatchImagesResponse:
        """Upscale several pictures and restore their faces, with the same settings."""
        pictures = [(f"imageList[{i}].data", item.data) for i, item in enumerate(body.imageList)]
        images, info = await on_worker(owner, f"extras: {len(pictures)} pictures", pictures, body)
        return ExtrasBatchImagesResponse(html_info=info_html(info), images=images)

    return api


def sd_upscale_info(upscalers: list[str]) -> ScriptInfo:
    """SD upscale's script_args as A1111 describes them: its info text, then overlap, upscaler, scale."""
    def slider(label: str, field: str) -> dict[str, Any]:
        limits = limits_of(Img2ImgRequest, field)
        return {"label": label, "value": Img2ImgRequest.__dataclass_fields__[field].default, "minimum": limits.low,
                "maximum": limits.high, "step": limits.step, "choices": None}

    upscaler = {"label": "Upscaler", "value": Img2ImgRequest.sd_upscale_upscaler, "minimum": None, "maximum": None,
                "step": None, "choices": upscalers}
    info = {"label": None, "value": "Upscales the image by the scale factor; width and height are the tile size",
            "minimum": None, "maximum": None, "step": None, "choices": None}
    return ScriptInfo(name=SD_UPSCALE, is_alwayson=False, is_img2img=True,
                      args=[info, slider("Tile overlap", "sd_upscale_overlap"), upscaler,
                            slider("Scale Factor", "sd_upscale_scale")])


def _add_refresh(api: APIRouter, context: ApiContext, kind: str) -> None:
    def refresh(owner: str = Depends(context.owner)) -> None:
        return None

    refresh.__doc__ = (f"Nothing to do: LoRA Studio lists the {kind} folder afresh on every call. "
                       "Answers null, as A1111.")
    api.add_api_route(f"/refresh-{kind}", refresh, methods=["POST"], response_model=None,
                      name=f"refresh_{kind}")


# ----- checkpoints, samplers, LoRAs, embeddings ---------------------------------------------------

def checkpoint_item(registry: ModelRegistry, entry: ModelEntry) -> SDModelItem:
    """One /sd-models entry. The hash is computed only for weights up to LIST_HASH_MAX_BYTES (once per
    file version; the manager hashes the others when it loads them); sha256 is always null here."""
    assert entry.path is not None
    try:
        short = registry.short_hash(entry) if _hashed_bytes(entry.path) <= LIST_HASH_MAX_BYTES else None
    except OSError:  # removed or unreadable since it was listed
        short = None
    model_name = entry.name if entry.kind == "diffusers" else Path(entry.name).with_suffix("").as_posix()
    title = f"{entry.name} [{short}]" if short else entry.name
    return SDModelItem(title=title, model_name=model_name, hash=short, sha256=None,
                       filename=str(entry.path.absolute()), config=None)


def _hashed_bytes(path: Path) -> int:
    """An upper bound of what ``short_hash`` reads: the file, or every weights file of a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*.safetensors") if f.is_file())


def sampler_item(name: str) -> SamplerItem:
    spec = SAMPLERS[name]
    options = dict(_SAMPLER_OPTIONS.get(name, {}))
    if spec.automatic is not None:
        options = {"scheduler": _SCHEDULE_FACTS[spec.automatic][0], **options}
    aliases = [*spec.aliases, *_SAMPLER_EXTRA_ALIASES.get(name, ())]
    return SamplerItem(name=name, aliases=aliases, options=options)


def scheduler_item(label: str) -> SchedulerItem:
    internal, aliases, rho, inner = _SCHEDULE_FACTS.get(label, (label.lower().replace(" ", "_"), None, -1.0, False))
    return SchedulerItem(name=internal, label=label, aliases=list(aliases) if aliases else None, default_rho=rho,
                         need_inner_model=inner)


def lora_items(registry: ModelRegistry) -> list[LoraItem]:
    """Each LoRA file under the name ``<lora:...>`` finds it by: the bare file stem (as A1111 users
    write it) unless two files share it, then the path without suffix. Unreadable files are listed
    with empty metadata (A1111 lists every file; using one gives a readable 422)."""
    entries = [e for e in registry.loras() if e.path is not None]
    stems = Counter(Path(e.name).stem for e in entries)
    items = []
    for entry in entries:
        assert entry.path is not None
        stem = Path(entry.name).stem
        name = stem if stems[stem] == 1 else Path(entry.name).with_suffix("").as_posix()
        try:
            raw = registry.lora_info(entry.path).metadata
        except (ValueError, OSError):  # not a LoRA LoRA Studio can read, or gone since it was listed
            raw = {}
        metadata = decoded_metadata(raw)
        alias = raw.get("ss_output_name") or name
        items.append(LoraItem(name=name, alias=alias, path=str(entry.path.absolute()), metadata=metadata))
    return items


def decoded_metadata(metadata: Mapping[str, str]) -> dict[str, Any]:
    """safetensors metadata as A1111 returns it: values that hold a JSON object are decoded."""
    decoded: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, str) and value.startswith("{"):
            try:
                decoded[key] = json.loads(value)
                continue
            except ValueError:
                pass
        decoded[key] = value
    return decoded


def embeddings_answer(engine: Engine, model: str | None) -> EmbeddingsResponse:
    """The embeddings for ``model`` (None: the default model). An unknown model is a ValueError (422)."""
    if not (model or engine.config.default_model):
        raise ApiError(422, "No checkpoint is chosen, so it cannot be told which embeddings fit: set "
                            "sd_model_checkpoint with POST /sdapi/v1/options.")
    statuses, _ = engine.embeddings(model)
    unused: dict[str, list[ModelEntry]] = {}
    for listed in engine.registry.embeddings():
        unused.setdefault(Path(listed.name).stem, []).append(listed)
    loaded: dict[str, EmbeddingItem] = {}
    skipped: dict[str, EmbeddingItem] = {}
    for status in statuses:
        candidates = unused.get(status.name) or []
        entry = candidates.pop(0) if candidates else None
        item = EmbeddingItem()
        if status.vectors is not None and entry is not None and entry.path is not None:
            try:
                inversion = engine.registry.textual_inversion(entry.path, allow_pickle=engine.config.allow_pickle)
                item = EmbeddingItem(step=inversion.step, sd_checkpoint=None,
                                     sd_checkpoint_name=inversion.checkpoint_name,
                                     shape=sum(inversion.widths), vectors=inversion.vector_count)
            except ValueError:  # changed on disk since it was listed
                item = EmbeddingItem(vectors=status.vectors)
        (loaded if status.usable else skipped)[status.name] = item
    return EmbeddingsResponse(loaded=loaded, skipped=skipped)


# ----- memory ------------------------------------------------------------------------------------

def ram_numbers() -> MemoryNumbers:
    """This process's resident memory and the machine's total, as A1111 reports them (free = total - used)."""
    total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    used = float(_resident_bytes())
    return MemoryNumbers(free=max(total - used, 0.0), used=used, total=total)


def _resident_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak, the best left without /proc
        return peak if sys.platform == "darwin" else peak * 1024


def cuda_numbers() -> dict[str, Any]:
    """A1111's CUDA block: device memory (system), and PyTorch's allocator counters; or an error."""
    try:
        import torch

        if not torch.cuda.is_available():
            return {"error": "no CUDA device"}
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()

        def pair(key: str) -> dict[str, int]:
            return {"current": int(stats.get(f"{key}.all.current", 0)), "peak": int(stats.get(f"{key}.all.peak", 0))}

        return {
            "system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"),
            "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"),
            "inactive": pair("inactive_split_bytes"),
            "events": {"retries": int(stats.get("num_alloc_retries", 0)), "oom": int(stats.get("num_ooms", 0))},
        }
    except Exception as exc:  # a driver problem is reported, not raised: this is a status page
        return {"error": str(exc)}


# ----- extras ------------------------------------------------------------------------------------

def upscaler_item(item: Any) -> UpscalerItem:
    """One /upscalers entry: a built-in's scale is what A1111 reports for them; a model's is read from its file."""
    if item.path is None:
        return UpscalerItem(name=item.name, scale=_BUILTIN_UPSCALER_SCALE)
    return UpscalerItem(name=item.name, model_name=item.architecture, model_path=str(item.path.absolute()),
                        scale=float(item.scale))


def extras_settings(options: ExtrasOptions) -> ExtrasSettings:
    """The engine's Extras settings from A1111's extras fields (``show_extras_results`` changes nothing here)."""
    return ExtrasSettings(**options.model_dump(include={field.name for field in fields(ExtrasSettings)}))


def info_html(info: Mapping[str, str]) -> str:
    """A1111's html_info: the facts as one escaped paragraph ("" when nothing was done)."""
    if not info:
        return ""
    return "<p>" + html.escape(", ".join(f"{key}: {value}" for key, value in info.items())) + "</p>"
