"""Generation requests: what a tab or API client asks the engine for.

Every field is checked in ``validate()``; a bad value raises ``ValueError`` with a message a
person understands (the UI shows it as an error, the API as a 4xx). Names follow A1111 where
A1111 has a name, so infotext and API fields map one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

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
MAX_HIRES_SCALE = 4.0
MAX_MASK_BLUR = 64
MAX_MASKED_PADDING = 256
SD_UPSCALE = "sd upscale"  # A1111's img2img script, by its title as A1111's API matches it (case aside)
IMG2IMG_SCRIPTS = (SD_UPSCALE,)
MAX_SD_UPSCALE_OVERLAP = 512
MAX_SD_UPSCALE_SCALE = 4.0


@dataclass(frozen=True)
class Limits:
    """The range of a numeric request field: ``validate()`` checks it, the UI's sliders and the API's
    schema read it (``limits_of``), so a limit is written once. ``hires``: checked only with hires fix on."""

    label: str
    low: float
    high: float
    step: float = 1
    hires: bool = False

    @property
    def whole(self) -> bool:
        """Whether the field takes whole numbers (its step is a whole number)."""
        return float(self.step).is_integer()

    def check(self, value: object) -> None:
        (_check_int if self.whole else _check_float)(self.label, value, self.low, self.high)  # type: ignore[arg-type]


def limited(default: float, label: str, low: float, high: float, step: float = 1, *, hires: bool = False) -> Any:
    """A dataclass field with ``Limits`` (``step`` is the UI's; a whole step means whole numbers)."""
    return field(default=default, metadata={"limits": Limits(label, low, high, step, hires)})


def limits_of(request_type: type["GenerationRequest"], name: str) -> Limits:
    """The Limits of field ``name`` of ``request_type`` (KeyError for a field without limits)."""
    return request_type.__dataclass_fields__[name].metadata["limits"]


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
    steps: int = limited(20, "Steps", 1, MAX_STEPS)
    cfg_scale: float = limited(7.0, "CFG scale", 0.0, MAX_CFG_SCALE, 0.5)
    seed: int = limited(-1, "Seed", -1, MAX_SEED)  # -1 = random; the seed used is recorded in the result
    width: int = limited(512, "Width", MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE)
    height: int = limited(512, "Height", MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE)
    batch_count: int = limited(1, "Batch count", 1, MAX_BATCH_COUNT)  # A1111 "n_iter": runs one after another
    batch_size: int = limited(1, "Batch size", 1, MAX_BATCH_SIZE)  # images per run
    sampler: str = "Euler a"
    schedule_type: str = "Automatic"
    clip_skip: int = limited(1, "Clip skip", 1, MAX_CLIP_SKIP)  # A1111 numbering: 1 = last layer, 2 = penultimate
    emphasis: str = "Original"  # how (text:1.2) weights reach the conditioning: one of EMPHASIS_MODES
    styles: tuple[str, ...] = ()  # names from styles.csv, applied by Engine.submit (the infotext shows the result)
    tiling: bool = False  # seamless, tileable pictures (circular padding in the UNet and VAE for this job)
    restore_faces: bool = False  # each finished picture's faces through a face model (app.engine.face_restore)
    face_restorer: str = ""  # its file or architecture name ("CodeFormer"); "" = the first installed one
    codeformer_weight: float = limited(0.5, "CodeFormer weight", 0.0, 1.0, 0.01)  # 0: strongest, 1: none
    save: bool = True

    task: TaskName = field(default="txt2img", init=False)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        # Imported here so that samplers may import this module's types without a cycle.
        from app.engine.samplers import resolve_sampler

        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ValueError("Prompt and negative prompt must be text.")
        self.check_limits(hires=False)
        for label, value in (("Width", self.width), ("Height", self.height)):
            if value % SIZE_MULTIPLE:
                raise ValueError(f"{label} must be a multiple of {SIZE_MULTIPLE}, got {value}.")
        if not isinstance(self.face_restorer, str):
            raise ValueError(f"The face restorer must be a model's name, not {self.face_restorer!r}.")
        if not all(isinstance(name, str) for name in self.styles):
            raise ValueError("Styles must be a list of style names.")
        if self.emphasis not in EMPHASIS_MODES:
            raise ValueError(f"Unknown emphasis mode {self.emphasis!r}; choose one of {', '.join(EMPHASIS_MODES)}.")
        resolve_sampler(self.sampler, self.schedule_type)  # raises ValueError for unknown names
        for lora in self.loras:
            if not isinstance(lora, LoraSpec) or not lora.name:
                raise ValueError("Each LoRA needs a name.")
            _check_float(f"Weight of LoRA {lora.name!r}", lora.weight, -10.0, 10.0)

    def check_limits(self, *, hires: bool) -> None:
        """Check each field with Limits of the one group (the first pass's, or hires fix's)."""
        for spec in fields(self):
            limits = spec.metadata.get("limits")
            if limits is not None and limits.hires == hires:
                limits.check(getattr(self, spec.name))

    def with_changes(self, **changes: object) -> "GenerationRequest":
        """A copy with some fields replaced (the task stays)."""
        return replace(self, **changes)


SAME_SAMPLER = "Use same sampler"
SAME_SCHEDULER = "Use same scheduler"
SAME_CHECKPOINT = "Use same checkpoint"


@dataclass
class Txt2ImgRequest(GenerationRequest):
    # Hires fix (A1111's names): a second, img2img pass over the upscaled first picture.
    enable_hr: bool = False
    hr_scale: float = limited(2.0, "Hires upscale", 1.0, MAX_HIRES_SCALE, 0.05, hires=True)  # when both resizes are 0
    hr_resize_x: int = limited(0, "Hires resize width", 0, MAX_SIZE, SIZE_MULTIPLE, hires=True)
    hr_resize_y: int = limited(0, "Hires resize height", 0, MAX_SIZE, SIZE_MULTIPLE, hires=True)
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = limited(0, "Hires steps", 0, MAX_STEPS, hires=True)  # 0 = the first pass's steps
    denoising_strength: float = limited(0.7, "Denoising strength", 0.01, 1.0, 0.01, hires=True)  # of the second pass
    hr_sampler: str = SAME_SAMPLER
    hr_schedule_type: str = SAME_SCHEDULER
    hr_checkpoint: str = SAME_CHECKPOINT
    hr_prompt: str = ""  # "" = the prompt
    hr_negative_prompt: str = ""  # "" = the negative prompt

    task: TaskName = field(default="txt2img", init=False)

    def validate(self) -> None:
        super().validate()
        if not self.enable_hr:
            return
        from app.engine.hires import check_upscaler, hires_sampler, hires_size
        from app.engine.samplers import resolve_sampler

        check_upscaler(self.hr_upscaler)
        self.check_limits(hires=True)
        width, height = hires_size(self)
        if max(width, height) > MAX_SIZE or min(width, height) < MIN_SIZE:
            raise ValueError(f"Hires fix would make {width}x{height}; each side must be {MIN_SIZE} to {MAX_SIZE}.")
        resolve_sampler(*hires_sampler(self))  # raises ValueError for unknown names
        for label, text in (("Hires prompt", self.hr_prompt), ("Hires negative prompt", self.hr_negative_prompt)):
            if not isinstance(text, str):
                raise ValueError(f"{label} must be text.")


@dataclass
class Img2ImgRequest(GenerationRequest):
    init_image: Image.Image | None = None
    denoising_strength: float = limited(0.75, "Denoising strength", 0.0, 1.0, 0.01)
    resize_mode: str = "Just resize"
    # A1111's img2img scripts: "" (none) or "sd upscale" (app.engine.sd_upscale; width x height is then the
    # tile size, and resize_mode does not apply). The script's arguments under LoRA Studio's names:
    script_name: str = ""
    sd_upscale_overlap: int = limited(64, "SD upscale overlap", 0, MAX_SD_UPSCALE_OVERLAP, 8)  # A1111's "Tile overlap"
    sd_upscale_upscaler: str = "Lanczos"  # a name from the upscaler library; "None" keeps the picture's size
    sd_upscale_scale: float = limited(2.0, "SD upscale scale", 1.0, MAX_SD_UPSCALE_SCALE, 0.05)  # "Scale Factor"

    task: TaskName = field(default="img2img", init=False)

    @property
    def sd_upscaling(self) -> bool:
        return isinstance(self.script_name, str) and self.script_name.strip().casefold() == SD_UPSCALE

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.init_image, Image.Image):
            raise ValueError("img2img needs an input image.")
        if self.denoising_strength * self.steps < 1:
            raise ValueError(
                f"Denoising strength {self.denoising_strength} with {self.steps} steps runs no step: "
                "raise the strength or the steps."
            )
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"Unknown resize mode {self.resize_mode!r}; choose one of {', '.join(RESIZE_MODES)}.")
        self._validate_script()

    def _validate_script(self) -> None:
        if not isinstance(self.script_name, str) or self.script_name.strip() and not self.sd_upscaling:
            raise ValueError(f"Unknown script {self.script_name!r}; LoRA Studio runs the img2img script "
                             f"{', '.join(repr(name) for name in IMG2IMG_SCRIPTS)} (A1111's SD upscale), or none.")
        if not self.sd_upscaling:
            return
        from app.engine.sd_upscale import MAX_SIDE, upscaled_size

        if self.task != "img2img":
            raise ValueError("SD upscale redraws a whole picture: run it in img2img, without a mask or outpainting.")
        if not isinstance(self.sd_upscale_upscaler, str) or not self.sd_upscale_upscaler.strip():
            raise ValueError("SD upscale needs an upscaler name (\"None\" to keep the picture's size).")
        if self.sd_upscale_overlap >= min(self.width, self.height):
            raise ValueError(f"SD upscale overlap {self.sd_upscale_overlap} must be smaller than the tile "
                             f"({self.width}x{self.height}: the width and height).")
        assert self.init_image is not None
        width, height = upscaled_size(self.init_image.size, self.sd_upscale_upscaler, self.sd_upscale_scale)
        if max(width, height) > MAX_SIDE:
            raise ValueError(f"SD upscale would make {width}x{height}; LoRA Studio makes up to {MAX_SIDE} pixels a "
                             "side this way: choose a smaller scale.")


@dataclass
class InpaintRequest(Img2ImgRequest):
    mask: Image.Image | None = None  # white = repaint, black = keep
    mask_blur: int = limited(4, "Mask blur", 0, MAX_MASK_BLUR)
    inpaint_area: str = "Whole picture"
    masked_padding: int = limited(32, "Masked area padding", 0, MAX_MASKED_PADDING, 4)
    masked_content: str = "original"
    invert_mask: bool = False
    # Outpainting (LoRA Studio's own fields): pixels added on each side; the canvas grows to a multiple of 8,
    # only the new area is generated, the original's pixels stay exactly (see app.engine.outpaint).
    outpaint_left: int = limited(0, "Outpaint left", 0, MAX_SIZE, SIZE_MULTIPLE)
    outpaint_right: int = limited(0, "Outpaint right", 0, MAX_SIZE, SIZE_MULTIPLE)
    outpaint_up: int = limited(0, "Outpaint up", 0, MAX_SIZE, SIZE_MULTIPLE)
    outpaint_down: int = limited(0, "Outpaint down", 0, MAX_SIZE, SIZE_MULTIPLE)
    outpaint_fill: str = "stretch"  # what the new area starts from: one of OUTPAINT_FILLS

    task: TaskName = field(default="inpaint", init=False)

    @property
    def outpainting(self) -> bool:
        return any((self.outpaint_left, self.outpaint_right, self.outpaint_up, self.outpaint_down))

    def outpaint_size(self) -> tuple[int, int]:
        """The extended canvas's width and height (the input image's plus the sides, grown to multiples of 8)."""
        from app.engine.outpaint import extended_sides

        assert self.init_image is not None
        width, height = self.init_image.size
        left, right, up, down = extended_sides(width, height, self.outpaint_left, self.outpaint_right,
                                               self.outpaint_up, self.outpaint_down)
        return width + left + right, height + up + down

    def validate(self) -> None:
        super().validate()
        self._validate_outpaint()
        if not self.outpainting:  # outpainting makes its own mask
            if not isinstance(self.mask, Image.Image):
                raise ValueError("Inpainting needs a mask: paint one on the image or upload it.")
            assert self.init_image is not None
            if self.mask.size != self.init_image.size:
                raise ValueError(
                    f"The mask is {self.mask.size[0]}x{self.mask.size[1]} but the image is "
                    f"{self.init_image.size[0]}x{self.init_image.size[1]}: they must be the same size."
                )
        if self.inpaint_area not in INPAINT_AREAS:
            raise ValueError(f"Unknown inpaint area {self.inpaint_area!r}; choose one of {', '.join(INPAINT_AREAS)}.")
        if self.masked_content not in MASKED_CONTENTS:
            raise ValueError(
                f"Unknown masked content {self.masked_content!r}; choose one of {', '.join(MASKED_CONTENTS)}."
            )

    def _validate_outpaint(self) -> None:
        from app.engine.outpaint import OUTPAINT_FILLS

        if self.outpaint_fill not in OUTPAINT_FILLS:
            raise ValueError(f"Unknown outpaint fill {self.outpaint_fill!r}; choose one of {', '.join(OUTPAINT_FILLS)}.")
        if not self.outpainting:
            return
        if isinstance(self.mask, Image.Image) and self.mask.getbbox() is not None:
            raise ValueError("Outpainting keeps the original exactly and repaints only the new area: "
                             "clear the painted mask, or inpaint first and outpaint the result.")
        width, height = self.outpaint_size()
        if max(width, height) > MAX_SIZE or min(width, height) < MIN_SIZE:
            raise ValueError(f"Outpainting would make {width}x{height}; each side must be {MIN_SIZE} to {MAX_SIZE}.")


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
