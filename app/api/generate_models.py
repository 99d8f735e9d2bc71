"""Pydantic models of the generation routes, with A1111's field names and defaults.

The request models take every field A1111 1.10's ``/txt2img`` and ``/img2img`` take (unknown keys
pass too, as clients send many); the limits of the fields every request checks come from the
request types' own ``Limits`` (``app.engine.requests``), so the OpenAPI page shows the engine's. What a field means to LoRA Studio is decided once, in
``app.engine.a1111_request``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from app.engine.requests import SIZE_MULTIPLE, GenerationRequest, InpaintRequest, limits_of


def _limited(default: Any, name: str, request_type: type[GenerationRequest] = GenerationRequest, **extra: Any) -> Any:
    """A pydantic Field with the range of the request field ``name``."""
    limits = limits_of(request_type, name)
    return Field(default, ge=limits.low, le=limits.high, **extra)


class _GenerationFields(BaseModel):
    """Fields txt2img and img2img share (A1111's StableDiffusionProcessing)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = Field(None, description="Names of styles in styles.csv, applied in turn")
    seed: int = _limited(-1, "seed", description="-1 = random")
    subseed: int = -1
    subseed_strength: float = Field(0, description="Variation seeds: not supported, leave at 0")
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = Field(None, description='e.g. "DPM++ 2M"; old fused names ("DPM++ 2M Karras") work')
    scheduler: str | None = Field(None, description='Schedule type, e.g. "Karras"; none = Automatic')
    batch_size: int = _limited(1, "batch_size")
    n_iter: int = _limited(1, "batch_count", description="Batch count")
    steps: int = _limited(50, "steps")
    cfg_scale: float = _limited(7.0, "cfg_scale")
    width: int = _limited(512, "width", multiple_of=SIZE_MULTIPLE)
    height: int = _limited(512, "height", multiple_of=SIZE_MULTIPLE)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = Field(
        None, description="sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers, emphasis for this request")
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    comments: dict[str, Any] | None = None
    sampler_index: str = Field("Euler", description="Legacy name of sampler_name")
    script_name: str | None = Field(None, description='img2img: "sd upscale" (A1111\'s SD upscale script; any case); '
                                                     "txt2img: none")
    script_args: list[Any] = Field(default_factory=list, description=(
        'With "sd upscale": [info (ignored), tile overlap px (64), upscaler (index into /upscalers, or its name; '
        'Lanczos), scale factor (2)]; width and height are the tile size'))
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None


class StableDiffusionTxt2ImgProcessingAPI(_GenerationFields):
    """A txt2img request (A1111's schema name)."""

    enable_hr: bool = Field(False, description="Hires fix: the hr_* fields and denoising_strength count only with it")
    firstpass_image: str | None = None
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = Field(None, description='Schedule type of the hires pass; none = the first pass\'s')
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


_OUTPAINT_SIDE = ("LoRA Studio extension (outpainting): pixels to add on this side; the canvas grows to a multiple "
                  "of 8, only the new area is generated and the original's pixels stay exactly; width and height "
                  "are then ignored, and a painted mask is refused")


class StableDiffusionImg2ImgProcessingAPI(_GenerationFields):
    """An img2img or inpaint request (A1111's schema name)."""

    init_images: list[str] | None = Field(None, description="One base64 image (a data: prefix is allowed)")
    resize_mode: int = Field(0, ge=0, le=3, description="0 Just resize, 1 Crop and resize, 2 Resize and fill")
    image_cfg_scale: float | None = None
    mask: str | None = Field(None, description="base64 mask: white = repaint; turns the request into inpainting")
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = _limited(None, "mask_blur", InpaintRequest)
    mask_round: bool = True
    inpainting_fill: int = Field(0, ge=0, le=3, description="0 fill, 1 original (2, 3: not supported)")
    inpaint_full_res: bool = Field(True, description="True = Only masked")
    inpaint_full_res_padding: int = _limited(0, "masked_padding", InpaintRequest)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = Field(False, description="Echo init_images and mask in `parameters`")
    denoising_strength: float | None = 0.75
    # LoRA Studio extensions (A1111 outpaints with scripts): the mask is optional with these.
    outpaint_left: int = _limited(0, "outpaint_left", InpaintRequest, description=_OUTPAINT_SIDE)
    outpaint_right: int = _limited(0, "outpaint_right", InpaintRequest, description=_OUTPAINT_SIDE)
    outpaint_up: int = _limited(0, "outpaint_up", InpaintRequest, description=_OUTPAINT_SIDE)
    outpaint_down: int = _limited(0, "outpaint_down", InpaintRequest, description=_OUTPAINT_SIDE)
    outpaint_fill: Literal["stretch", "noise"] = Field(
        "stretch", description="LoRA Studio extension: the new area starts from the edge colours stretched, or noise")


class TextToImageResponse(BaseModel):
    images: list[str] | None = Field(None, description="base64 PNGs carrying the 'parameters' text chunk")
    parameters: dict[str, Any]
    info: str = Field(description="A JSON string: seeds, infotexts and the rest A1111 puts there")


class ImageToImageResponse(TextToImageResponse):
    pass


class ProgressRequest(BaseModel):
    skip_current_image: bool = False


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float = Field(0.0, description="0..1 of the caller's current job")
    eta_relative: float = 0.0
    state: ProgressState = Field(default_factory=ProgressState)
    current_image: str | None = Field(None, description="base64 PNG of the latest live preview")
    textinfo: str | None = None


class PNGInfoRequest(BaseModel):
    image: str = Field(description="base64 image (a data: prefix is allowed)")


class PNGInfoResponse(BaseModel):
    info: str = Field(description="The 'parameters' text")
    items: dict[str, Any] = Field(default_factory=dict, description="The image's other text chunks")
    parameters: dict[str, Any] = Field(default_factory=dict, description="The parsed parameters, A1111's defaults filled")


class OptionsModel(RootModel[dict[str, Any]]):
    """A1111's options: the known keys change what requests default to; any other key is kept as given."""
