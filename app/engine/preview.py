"""Cheap live previews: a linear latent-to-RGB projection instead of a VAE decode.

The factors are the published approximations (A1111's "Approx cheap" for the SD 1.x/2.x VAE,
ComfyUI's for SDXL's). A model folder may carry its own in ``lora_studio.json`` under
``"latent_rgb_factors"`` (rows per latent channel, columns R, G, B) and optional
``"latent_rgb_bias"``; the demo model does, since its VAE is not SD's.

On a GPU a preview never makes the sampler wait: ``start`` queues the copy of the first latent into
pinned host memory behind the step's kernels and returns a ``PendingPreview``; the reporter turns it into
pixels at a later step, once the copy is done. A plain ``.cpu()`` would synchronise the host with the
device every time, so the host could no longer queue the next step's kernels while the GPU runs this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
        """The preview now (waits for the device)."""
        return self.start(latents).image()

    def start(self, latents: torch.Tensor) -> "PendingPreview":
        """Queue the copy of the first image's latent to the host, without waiting for it."""
        latent = latents[0].detach()
        if latent.shape[0] != len(self.factors):
            raise ValueError(f"preview factors are for {len(self.factors)} latent channels, got {latent.shape[0]}")
        if latent.device.type != "cuda":
            return PendingPreview(self, latent.to("cpu"), None)
        host = torch.empty(latent.shape, dtype=latent.dtype, pin_memory=True)
        host.copy_(latent, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(latent.device))  # the stream the copy went on (cuda:N too)
        return PendingPreview(self, host, copied)

    def project(self, latent: torch.Tensor) -> Image.Image:
        """A latent (C, h, w) on the CPU as an RGB image of h x w."""
        weights = torch.tensor(self.factors, dtype=torch.float32)  # (C, 3)
        rgb = torch.einsum("chw,cr->hwr", latent.to(torch.float32), weights) + torch.tensor(self.bias)
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


@dataclass(frozen=True)
class PendingPreview:
    """A preview's latent on its way to the host. ``copied`` is the CUDA event recorded behind the copy
    (None: the latent is on the host already)."""

    previewer: LatentPreviewer
    latent: torch.Tensor
    copied: Any = None

    def ready(self) -> bool:
        return self.copied is None or bool(self.copied.query())

    def image(self) -> Image.Image:
        if not self.ready():
            self.copied.synchronize()
        return self.previewer.project(self.latent)
