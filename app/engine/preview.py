"""Cheap live previews: a linear latent-to-RGB projection instead of a VAE decode.

The factors are the published approximations (A1111's "Approx cheap" for the SD 1.x/2.x VAE,
ComfyUI's for SDXL's). A model folder may carry its own in ``lora_studio.json`` under
``"latent_rgb_factors"`` (rows per latent channel, columns R, G, B) and optional
``"latent_rgb_bias"``; the demo model does, since its VAE is not SD's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

SD1_FACTORS = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_BIAS = (0.1084, -0.0175, -0.0011)


@dataclass(frozen=True)
class LatentPreviewer:
    """Projects a batch of latents to a small RGB image (the first image of the batch)."""

    factors: tuple[tuple[float, ...], ...] = SD1_FACTORS
    bias: tuple[float, ...] = (0.0, 0.0, 0.0)

    @classmethod
    def for_family(cls, family: str) -> "LatentPreviewer":
        return cls(SDXL_FACTORS, SDXL_BIAS) if family == "sdxl" else cls()

    def __call__(self, latents: torch.Tensor) -> Image.Image:
        latent = latents[0].detach().to(device="cpu", dtype=torch.float32)  # (C, h, w)
        weights = torch.tensor(self.factors, dtype=torch.float32)  # (C, 3)
        if weights.shape[0] != latent.shape[0]:
            raise ValueError(f"preview factors are for {weights.shape[0]} latent channels, got {latent.shape[0]}")
        rgb = torch.einsum("chw,cr->hwr", latent, weights) + torch.tensor(self.bias)
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
