"""An SDXL-base-architecture diffusers folder with random weights: random_sd15.py's twin for SDXL.

The shipped SDXL configs give the exact architecture (UNet, VAE, CLIP ViT-L and OpenCLIP bigG text
encoders, SD's tokenizer vocabulary). The modules are initialised on ``device`` (a GPU initialises
SDXL's 3.5 billion random weights in a moment; a CPU takes a while).
"""

from __future__ import annotations

from pathlib import Path

import app  # noqa: F401  (first: it makes torchvision importable before diffusers imports it)
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from app.engine.checkpoints import CONFIGS_DIR
from app.engine.tokenizers import PAD_BANG, PAD_EOS, clip_tokenizer

NAME = "random-sdxl"


def build_sdxl(models_dir: Path, dtype: torch.dtype, device: str | torch.device = "cpu") -> str:
    """Write the folder under ``models_dir/Stable-diffusion`` and return its checkpoint name."""
    config = CONFIGS_DIR / "sdxl-base"
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config / "text_encoder_2"))
    scheduler = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(config / "scheduler"))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=clip_tokenizer(PAD_EOS), tokenizer_2=clip_tokenizer(PAD_BANG),
                                     unet=unet, scheduler=scheduler)
    pipe.to(dtype=dtype).save_pretrained(models_dir / "Stable-diffusion" / NAME)
    return NAME
