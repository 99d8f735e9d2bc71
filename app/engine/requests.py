"""Generation requests: what a tab or API client asks the engine for.

Every field is checked in ``validate()``; a bad value raises ``ValueError`` with a message a
person understands (the UI shows it as an error, the API as a 4xx). Names follow A1111 where
A1111 has a name, so infotext and API fields map one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

from PIL import Image

from app.engine.prompt_parser import EMPHASIS_MODES

TaskName = Literal["txt2img", "img2img", "inpaint"]

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill")
INPAINT_AREAS = ("Whole picture", "Only masked")
MASKED_CONTENTS = ("original", "fill")

MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 2048, 8
MAX_STEPS = 150
MAX_BATCH_SIZE = 8
MAX_BATCH_COUNT = 100
MAX_SEED = 2**32 - 1
MAX_CFG_SCALE = 30.0
MAX_CLIP_SKIP = 12


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA asked for by a request: a name from models/Lora and its weight."""

    name: str
    weight: float = 1.0


@dataclass
class GenerationRequest:
    """Fields shared by txt2img, img2img and inpaint."""

    prompt: str = ""
    negative_prompt: str = ""
    model: str | None = None  # registry name, path or hub id; None = the engine's default model
    vae: str | None = None  # None = the checkpoint's own VAE
    loras: tuple[LoraSpec, ...] = ()
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1  # -1 = random; the seed used is recorded in the result
    width: int = 512
    height: int = 512
    batch_count: int = 1  # A1111 "n_iter": runs one after another
    batch_size: int = 1  # images per run
    sampler: str = "Euler a"
    schedule_type: str = "Automatic"
    clip_skip: int = 1  # A1111 numbering: 1 = last layer, 2 = penultimate
    emphasis: str = "Original"  # how (text:1.2) weights reach the conditioning: one of EMPHASIS_MODES
    styles: tuple[str, ...] = ()  # names from styles.csv, applied by Engine.submit (the infotext shows the result)
    tiling: bool = False  # seamless, tileable pictures (circular padding in the UNet and VAE for this job)
    save: bool = True

    task: TaskName = field(default="txt2img", init=False)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        # Imported here so that samplers may import this module's types without a cycle.
        from app.engine.samplers import resolve_sampler

        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ValueError("Prompt and negative prompt must be text.")
        _check_int("Steps", self.steps, 1, MAX_STEPS)
        _check_float("CFG scale", self.cfg_scale, 0.0, MAX_CFG_SCALE)
        _check_int("Seed", self.seed, -1, MAX_SEED)
        for label, value in (("Width", self.width), ("Height", self.height)):
            _check_int(label, value, MIN_SIZE, MAX_SIZE)
            if value % SIZE_MULTIPLE:
                raise ValueError(f"{label} must be a multiple of {SIZE_MULTIPLE}, got {value}.")
        _check_int("Batch count", self.batch_count, 1, MAX_BATCH_COUNT)
        _check_int("Batch size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_int("Clip skip", self.clip_skip, 1, MAX_CLIP_SKIP)
        if not all(isinstance(name, str) for name in self.styles):
            raise ValueError("Styles must be a list of style names.")
        if self.emphasis not in EMPHASIS_MODES:
            raise ValueError(f"Unknown emphasis mode {self.emphasis!r}; choose one of {', '.join(EMPHASIS_MODES)}.")
        resolve_sampler(self.sampler, self.schedule_type)  # raises ValueError for unknown names
        for lora in self.loras:
            if not isinstance(lora, LoraSpec) or not lora.name:
                raise ValueError("Each LoRA needs a name.")
            _check_float(f"Weight of LoRA {lora.name!r}", lora.weight, -10.0, 10.0)

    def with_changes(self, **changes: object) -> "GenerationRequest":
        """A copy with some fields replaced (the task stays)."""
        return replace(self, **changes)


SAME_SAMPLER = "Use same sampler"
SAME_CHECKPOINT = "Use same checkpoint"
MAX_HIRES_SCALE = 4.0


@dataclass
class Txt2ImgRequest(GenerationRequest):
    # Hires fix (A1111's names): a second, img2img pass over the upscaled first picture.
    enable_hr: bool = False
    hr_scale: float = 2.0  # used when hr_resize_x and hr_resize_y are 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0 = the first pass's steps
    denoising_strength: float = 0.7  # of the second pass
    hr_sampler: str = SAME_SAMPLER
    hr_checkpoint: str = SAME_CHECKPOINT
    hr_prompt: str = ""  # "" = the prompt
    hr_negative_prompt: str = ""  # "" = the negative prompt

    task: TaskName = field(default="txt2img", init=False)

    def validate(self) -> None:
        super().validate()
        if not self.enable_hr:
            return
        from app.engine.hires import check_upscaler, hires_size
        from app.engine.samplers import resolve_sampler

        check_upscaler(self.hr_upscaler)
        _check_float("Hires upscale", self.hr_scale, 1.0, MAX_HIRES_SCALE)
        _check_int("Hires resize width", self.hr_resize_x, 0, MAX_SIZE)
        _check_int("Hires resize height", self.hr_resize_y, 0, MAX_SIZE)
        _check_int("Hires steps", self.hr_second_pass_steps, 0, MAX_STEPS)
        _check_float("Denoising strength", self.denoising_strength, 0.01, 1.0)
        width, height = hires_size(self)
        if max(width, height) > MAX_SIZE or min(width, height) < MIN_SIZE:
            raise ValueError(f"Hires fix would make {width}x{height}; each side must be {MIN_SIZE} to {MAX_SIZE}.")
        if self.hr_sampler != SAME_SAMPLER:
            resolve_sampler(self.hr_sampler, self.schedule_type)
        for label, text in (("Hires prompt", self.hr_prompt), ("Hires negative prompt", self.hr_negative_prompt)):
            if not isinstance(text, str):
                raise ValueError(f"{label} must be text.")


@dataclass
class Img2ImgRequest(GenerationRequest):
    init_image: Image.Image | None = None
    denoising_strength: float = 0.75
    resize_mode: str = "Just resize"

    task: TaskName = field(default="img2img", init=False)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.init_image, Image.Image):
            raise ValueError("img2img needs an input image.")
        _check_float("Denoising strength", self.denoising_strength, 0.0, 1.0)
        if self.denoising_strength * self.steps < 1:
            raise ValueError(
                f"Denoising strength {self.denoising_strength} with {self.steps} steps runs no step: "
                "raise the strength or the steps."
            )
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"Unknown resize mode {self.resize_mode!r}; choose one of {', '.join(RESIZE_MODES)}.")


@dataclass
class InpaintRequest(Img2ImgRequest):
    mask: Image.Image | None = None  # white = repaint, black = keep
    mask_blur: int = 4
    inpaint_area: str = "Whole picture"
    masked_padding: int = 32
    masked_content: str = "original"
    invert_mask: bool = False

    task: TaskName = field(default="inpaint", init=False)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.mask, Image.Image):
            raise ValueError("Inpainting needs a mask: paint one on the image or upload it.")
        assert self.init_image is not None
        if self.mask.size != self.init_image.size:
            raise ValueError(
                f"The mask is {self.mask.size[0]}x{self.mask.size[1]} but the image is "
                f"{self.init_image.size[0]}x{self.init_image.size[1]}: they must be the same size."
            )
        _check_int("Mask blur", self.mask_blur, 0, 64)
        _check_int("Masked area padding", self.masked_padding, 0, 256)
        if self.inpaint_area not in INPAINT_AREAS:
            raise ValueError(f"Unknown inpaint area {self.inpaint_area!r}; choose one of {', '.join(INPAINT_AREAS)}.")
        if self.masked_content not in MASKED_CONTENTS:
            raise ValueError(
                f"Unknown masked content {self.masked_content!r}; choose one of {', '.join(MASKED_CONTENTS)}."
            )


REQUEST_TYPES: dict[str, type[GenerationRequest]] = {
    "txt2img": Txt2ImgRequest,
    "img2img": Img2ImgRequest,
    "inpaint": InpaintRequest,
}


def request_field_names(request_type: type[GenerationRequest]) -> list[str]:
    """Names a caller may pass to the request's constructor."""
    return [f.name for f in fields(request_type) if f.init]


def _check_int(label: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{label} must be a whole number, got {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{label} must be between {low} and {high}, got {value}.")


def _check_float(label: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{label} must be a number, got {value!r}.")
    if not low <= float(value) <= high:
        raise ValueError(f"{label} must be between {low:g} and {high:g}, got {value}.")
