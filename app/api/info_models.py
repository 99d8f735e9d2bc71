"""Pydantic models of the information and extras routes, in A1111's field names and shapes.

Field names follow A1111 1.10's API (its ``/docs``), so clients built for it parse the answers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class SDModelItem(BaseModel):
    title: str = Field(description='"name [hash10]" as A1111 titles a checkpoint; the name alone when the hash '
                                   "is not known yet. POST it back as sd_model_checkpoint to /options.")
    model_name: str = Field(description="The name without its file suffix.")
    hash: str | None = Field(description="The first 10 hex digits of the sha256 (of the UNet weights for a "
                                         "diffusers folder), or null when not computed yet.")
    sha256: str | None = Field(description="Always null: listing does not hash multi-GB files.")
    filename: str = Field(description="Absolute path of the file or folder.")
    config: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str = Field(description="A1111's internal name (karras, sgm_uniform...).")
    label: str = Field(description="What the UI and infotext show (Karras, SGM Uniform...).")
    aliases: list[str] | None = None
    default_rho: float | None = -1
    need_inner_model: bool | None = False


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class LoraItem(BaseModel):
    name: str = Field(description="What to write in <lora:name:weight>.")
    alias: str = Field(description="kohya's ss_output_name when stored, else the name.")
    path: str
    metadata: dict[str, Any] = Field(description="The file's safetensors metadata; values that hold JSON objects "
                                                 "are decoded, as A1111 does.")


class EmbeddingItem(BaseModel):
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int | None = Field(default=None, description="Width of the vectors (both encoders' together for SDXL).")
    vectors: int | None = None


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class MemoryNumbers(BaseModel):
    free: float
    used: float
    total: float


class MemoryResponse(BaseModel):
    ram: MemoryNumbers = Field(description="Bytes, as A1111 reports them: used by this process, total in the "
                                           "machine, free = total - used.")
    cuda: dict[str, Any] = Field(description='system/active/allocated/reserved/inactive/events, or {"error": ...}.')


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: str | None = None


class RealesrganItem(BaseModel):
    name: str
    path: str | None = None
    scale: int | None = None


class HypernetworkItem(BaseModel):
    name: str
    path: str | None = None


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class ScriptInfo(BaseModel):
    name: str | None = None
    is_alwayson: bool | None = None
    is_img2img: bool | None = None
    args: list[dict[str, Any]] = Field(default_factory=list)


# ----- extras (postprocessing) -------------------------------------------------------------------

class ExtrasOptions(BaseModel):
    """A1111's extras fields (``app.engine.extras.ExtrasSettings``): face restoration, then the upscale
    (``upscale_first``: the other way round). ``codeformer_weight`` only matters when CodeFormer is
    visible; ``show_extras_results`` changes nothing in an API answer."""

    resize_mode: Literal[0, 1] = Field(0, description="0: by upscaling_resize; 1: to upscaling_resize_w x _h.")
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1, description="Faces restored by a GFPGAN model, blended at this.")
    codeformer_visibility: float = Field(0, ge=0, le=1, description="Faces restored by a CodeFormer model, blended "
                                                                     "at this (after GFPGAN).")
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, ge=1, le=8, description="The factor, with resize_mode 0.")
    upscaling_resize_w: int = Field(512, ge=1, description="The width, with resize_mode 1.")
    upscaling_resize_h: int = Field(512, ge=1, description="The height, with resize_mode 1.")
    upscaling_crop: bool = Field(True, description="With resize_mode 1: cut the overhang so the result is "
                                                   "exactly w x h; off: keep the whole picture, covering w x h.")
    upscaler_1: str = Field("None", description='A name from /upscalers; "None" leaves the size as it is.')
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasOptions):
    image: str = Field(description="Base64 picture, with or without a data:image/...;base64, prefix.")


class FileData(BaseModel):
    data: str = Field(description="Base64 picture, with or without a data: prefix.")
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasOptions):
    imageList: list[FileData] = Field(description="The pictures to resize.")


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str = Field(description="Base64 PNG, no data: prefix.")


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]
