"""An SD 1.5-architecture diffusers folder with random weights, for the GPU benchmarks.

No real weights can be downloaded here; the shipped SD 1.x configs give the exact architecture
(UNet, VAE, CLIP ViT-L text encoder, SD's real tokenizer vocabulary), which is what speed depends on.
"""

from __future__ import annotations

from pathlib import Path

import app  # noqa: F401  (first: it makes torchvision importable before diffusers imports it)
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from app.engine.checkpoints import CONFIGS_DIR
from app.engine.tiny import SD_SCHEDULER
from app.engine.tokenizers import clip_tokenizer

NAME = "random-sd15"


def build_sd15(models_dir: Path, dtype: torch.dtype) -> str:
    """Write the folder under ``models_dir/Stable-diffusion`` and return its checkpoint name."""
    config = CONFIGS_DIR / "sd1"
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=EulerDiscreteScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.to(dtype=dtype).save_pretrained(models_dir / "Stable-diffusion" / NAME)
    return NAME
