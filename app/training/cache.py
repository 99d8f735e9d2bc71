"""Training inputs computed once: VAE latents per (image file content, bucket, flip) and text
embeddings per caption, on disk under outputs/training/.cache and in memory for the run.

Keys hold the base model's hash, so another model never reuses them, and the image's content hash,
so an edited image is encoded again while a renamed one is not.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from app.engine.registry import sha256_file
from app.training.dataset import TrainImage, fit_to_bucket
from app.training.files import write_atomically
from app.training.text import encode_captions

log = logging.getLogger(__name__)


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def image_tensor(image: TrainImage, bucket: tuple[int, int], flipped: bool) -> torch.Tensor:
    """The image fitted to its bucket as a (3, H, W) tensor in [-1, 1]."""
    from PIL import Image

    with Image.open(image.path) as source:
        picture = fit_to_bucket(source, bucket)
    if flipped:
        picture = picture.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(picture, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


class LatentCache:
    """Latents of the training images (the VAE's mean, scaled): computed once, reused across runs.
    Disabled, it encodes each batch afresh (the slow path the throughput benchmark compares)."""

    def __init__(self, folder: Path, vae, model_key: str, *, enabled: bool = True) -> None:
        self.folder = Path(folder)
        self.vae = vae
        self.model_key = model_key
        self.enabled = enabled
        self._memory: dict[tuple[Path, tuple[int, int], bool], torch.Tensor] = {}
        self.computed = 0
        self.reused = 0

    def fill(self, images: list[TrainImage], bucket_of: list[tuple[int, int]], *, flips: bool,
             device: torch.device) -> None:
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for image, bucket in zip(images, bucket_of):
            digest = sha256_file(image.path)
            for flipped in (False, True) if flips else (False,):
                key = _digest(self.model_key, digest, bucket, flipped)
                path = self.folder / f"{key}.safetensors"
                if path.is_file():
                    latent = load_file(str(path))["latent"]
                    self.reused += 1
                else:
                    latent = self.encode(image, bucket, flipped, device).cpu()
                    tensors = {"latent": latent.contiguous()}
                    write_atomically(path, lambda temp: save_file(tensors, str(temp)))
                    self.computed += 1
                self._memory[(image.path, bucket, flipped)] = latent
        log.info("latent cache: %d computed, %d reused", self.computed, self.reused)

    @torch.no_grad()
    def encode(self, image: TrainImage, bucket: tuple[int, int], flipped: bool, device: torch.device) -> torch.Tensor:
        pixels = image_tensor(image, bucket, flipped).unsqueeze(0).to(device, self.vae.dtype)
        latent = self.vae.encode(pixels).latent_dist.mode()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((latent - shift) * self.vae.config.scaling_factor)[0].float()

    def get(self, image: TrainImage, bucket: tuple[int, int], flipped: bool, device: torch.device) -> torch.Tensor:
        if self.enabled:
            return self._memory[(image.path, bucket, flipped)]
        return self.encode(image, bucket, flipped, device)


class TextCache:
    """Text-encoder outputs per caption, when the text encoders are frozen and captions fixed."""

    def __init__(self, folder: Path, tokenizers: list, text_encoders: list, family: str, model_key: str, *,
                 enabled: bool = True) -> None:
        self.folder = Path(folder)
        self.tokenizers, self.text_encoders, self.family = tokenizers, text_encoders, family
        self.model_key = model_key
        self.enabled = enabled
        self._memory: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    @torch.no_grad()
    def fill(self, captions: list[str], device: torch.device) -> None:
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for caption in dict.fromkeys(captions):
            path = self.folder / f"{_digest(self.model_key, self.family, caption)}.safetensors"
            if path.is_file():
                stored = load_file(str(path))
            else:
                hidden, pooled = encode_captions(self.tokenizers, self.text_encoders, self.family, [caption], device)
                stored = {"hidden": hidden[0].float().cpu().contiguous()}
                if pooled is not None:
                    stored["pooled"] = pooled[0].float().cpu().contiguous()
                write_atomically(path, lambda temp: save_file(stored, str(temp)))
            self._memory[caption] = (stored["hidden"], stored.get("pooled"))

    def get(self, captions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = [self._memory[c] for c in captions]
        hidden = torch.stack([r[0] for r in rows]).to(device)
        pooled = torch.stack([r[1] for r in rows]).to(device) if rows[0][1] is not None else None
        return hidden, pooled
