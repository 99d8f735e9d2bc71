"""Tiling: with circular padding the model works on a torus, so shifting the starting noise shifts the
picture by the same amount with its edges wrapped (which is what makes it seamless); without it, not."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler

from app.engine import Engine, Txt2ImgRequest
from app.engine.infotext import parse_infotext
from app.engine.infotext_fields import request_from_infotext
from app.engine.tiling import circular_padding
from app.engine.tiny import build_tiny_pipeline


def draw(pipe, latents: torch.Tensor) -> np.ndarray:
    image = pipe("a red circle", latents=latents, num_inference_steps=4, guidance_scale=5.0, width=64, height=64,
                 output_type="np").images[0]
    return image


def test_circular_padding_makes_the_picture_wrap_around() -> None:
    pipe = build_tiny_pipeline("sd1")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # no noise added between steps
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    shift = 4  # latent cells: a multiple of the UNet's downsampling; pixels shift by twice that (the tiny VAE)
    with circular_padding(pipe.unet, pipe.vae):
        tiled = draw(pipe, latents)
        tiled_shifted = draw(pipe, torch.roll(latents, shifts=(shift, shift), dims=(2, 3)))
    plain = draw(pipe, latents)
    plain_shifted = draw(pipe, torch.roll(latents, shifts=(shift, shift), dims=(2, 3)))
    pixel_shift = shift * pipe.vae_scale_factor
    wrapped = np.roll(tiled, shift=(pixel_shift, pixel_shift), axis=(0, 1))
    assert np.abs(wrapped - tiled_shifted).max() < 1e-3  # the same picture, moved across its edges
    assert np.abs(np.roll(plain, (pixel_shift, pixel_shift), (0, 1)) - plain_shifted).max() > 0.05
    assert all(conv.padding_mode == "zeros" for conv in pipe.unet.modules() if isinstance(conv, torch.nn.Conv2d))


def test_tiling_through_the_engine_is_for_that_job_only(engine: Engine) -> None:
    request = Txt2ImgRequest(prompt="a red circle", seed=8, width=64, height=64, steps=4, save=False)
    before = engine.generate(request).images[0]
    tiled = engine.generate(request.with_changes(tiling=True))
    after = engine.generate(request).images[0]
    assert np.array_equal(np.asarray(before), np.asarray(after))
    assert not np.array_equal(np.asarray(before), np.asarray(tiled.images[0]))
    assert parse_infotext(tiled.infotexts[0])["Tiling"] == "True"
    assert request_from_infotext(tiled.infotexts[0]).tiling
    assert "Tiling" not in engine.generate(request).infotexts[0]
