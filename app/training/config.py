"""Everything a LoRA training run is told, with checks, from flags or a TOML file."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("no", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit")
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
UNET_CONV_TARGETS = ("conv1", "conv2", "conv_shortcut")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass
class TrainConfig:
    base_model: str  # a checkpoint name from models/Stable-diffusion (or a path)
    dataset: Path
    output_name: str
    models_dir: Path = Path("models")
    outputs_dir: Path = Path("outputs")
    # network
    rank: int = 16
    alpha: float = 16.0
    conv_rank: int = 0  # > 0 also adapts the UNet's resnet convolutions (LoCon)
    conv_alpha: float = 1.0
    train_text_encoder: bool = False
    # optimisation
    learning_rate: float = 1e-4
    text_encoder_lr: float | None = None  # None: the UNet's rate
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 0
    max_steps: int = 1000
    batch_size: int = 1
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # "fp16"/"bf16" on a GPU; LoRA weights stay fp32
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    noise_offset: float = 0.0
    min_snr_gamma: float | None = 5.0
    seed: int = 42
    # data
    resolution: int = 512
    bucket_step: int = 64
    flip: bool = False
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout: float = 0.0
    cache_latents: bool = True
    cache_text: bool = True
    caption_overrides: Path | None = None  # a JSON file {relative image path: caption}, winning over .txt files
    # prior preservation without pictures: on captions of what the LoRA must leave alone, its prediction
    # is pulled towards the base model's own, on the same noisy latents (half of each batch)
    preserve_prompts: tuple[str, ...] = field(default_factory=tuple)
    preserve_weight: float = 1.0
    # run
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0 = only at the end
    resume: Path | None = None  # a checkpoint folder, or the run folder to take its latest
    sample_every: int = 0
    sample_prompts: tuple[str, ...] = field(default_factory=tuple)
    device: str = "auto"

    def __post_init__(self) -> None:  # prompts given as lists (from flags or TOML) are kept as tuples
        self.sample_prompts, self.preserve_prompts = tuple(self.sample_prompts), tuple(self.preserve_prompts)

    def validate(self) -> None:
        if not NAME.match(self.output_name) or ".." in self.output_name:
            raise ValueError(f"Output name {self.output_name!r}: use letters, digits, spaces, '-', '_' or '.'.")
        positive = {"rank": self.rank, "max_steps": self.max_steps, "batch_size": self.batch_size,
                    "gradient_accumulation": self.gradient_accumulation, "resolution": self.resolution,
                    "bucket_step": self.bucket_step}
        for label, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a whole number of at least 1, got {value!r}.")
        if self.resolution % self.bucket_step:
            raise ValueError(f"resolution {self.resolution} must be a multiple of bucket_step {self.bucket_step}.")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be between 0 and 1, got {self.learning_rate}.")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {', '.join(SCHEDULERS)}.")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {', '.join(PRECISIONS)}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}.")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError("caption_dropout must be in [0, 1).")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ValueError("min_snr_gamma must be positive (or absent to turn it off).")
        if self.preserve_prompts and self.train_text_encoder:
            raise ValueError("preserve_prompts works on the UNet's LoRA only: turn off train_text_encoder.")
        if self.preserve_weight < 0:
            raise ValueError("preserve_weight must not be negative.")

    def overrides(self) -> dict[str, str]:
        if self.caption_overrides is None:
            return {}
        import json

        try:
            data = json.loads(Path(self.caption_overrides).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"Cannot read the caption overrides {self.caption_overrides}: {exc}") from exc
        return {str(k): str(v) for k, v in data.items()}

    @property
    def run_dir(self) -> Path:
        """Where checkpoints, samples and the report of this run go (under outputs/)."""
        return Path(self.outputs_dir) / "training" / self.output_name

    @property
    def lora_path(self) -> Path:
        return Path(self.models_dir) / "Lora" / f"{self.output_name}.safetensors"

    def settings_key(self) -> dict[str, object]:
        """The settings that shape the data seen by the model (for cache keys and resume checks)."""
        return {k: getattr(self, k) for k in ("resolution", "bucket_step", "flip")}


def load_toml(path: Path, defaults: dict[str, object] | None = None, **overrides: object) -> TrainConfig:
    """A TrainConfig from a TOML file (keys as the dataclass fields): ``overrides`` win over the file,
    the file over ``defaults``."""
    try:
        import tomllib
    except ImportError as exc:  # Python 3.10
        raise ValueError("TOML configs need Python 3.11 or newer; pass flags instead.") from exc
    with open(path, "rb") as handle:
        values = tomllib.load(handle)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}.")
    values = {**(defaults or {}), **values, **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("dataset", "models_dir", "outputs_dir", "resume", "caption_overrides"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    return TrainConfig(**values)
