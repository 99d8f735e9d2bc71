"""Tiny randomly initialised Stable Diffusion pipelines of the real architectures.

They load and run through exactly the code paths real checkpoints use, in a fraction of a
second on a CPU: the app writes one as its placeholder default model, and the tests build
SD 1.x, SD 2.x (v-prediction) and SDXL ones in fixtures.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from app.engine.tokenizers import PAD_BANG, PAD_EOS, clip_tokenizer

Family = Literal["sd1", "sd2", "sdxl"]

# SD's own scheduler settings (scaled-linear betas, 1000 steps); clip_sample off for latents.
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    timestep_spacing="leading",
)


def tiny_text_config(hidden: int = 32, layers: int = 3, *, act: str = "quick_gelu", pad: int = 49407) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=pad,
        projection_dim=hidden,
    )


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        layers_per_block=1,
    )


def with_norm_bias(encoder: CLIPTextModel) -> CLIPTextModel:
    """Give the final layer norm a bias, as trained CLIP encoders have. A fresh norm has none, so every
    token's output has mean 0 and A1111's emphasis, which restores the mean, would divide noise by noise."""
    inner = getattr(encoder, "text_model", encoder)
    with torch.no_grad():
        inner.final_layer_norm.bias.normal_(0.0, 0.5)
    return encoder


def build_tiny_pipeline(
    family: Family = "sd1", *, inpainting: bool = False, prediction_type: str | None = None, seed: int = 0
) -> DiffusionPipeline:
    """A random-weight pipeline of the given family (deterministic for a seed)."""
    torch.manual_seed(seed)
    in_channels = 9 if inpainting else 4
    scheduler = EulerDiscreteScheduler(
        **SD_SCHEDULER, prediction_type=prediction_type or ("v_prediction" if family == "sd2" else "epsilon")
    )
    if family == "sdxl":
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=16,
            in_channels=in_channels,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 32,
            cross_attention_dim=64,
            norm_num_groups=32,
        )
        text_encoder = with_norm_bias(CLIPTextModel(tiny_text_config(32, 3, pad=49407)))
        text_encoder_2 = with_norm_bias(CLIPTextModelWithProjection(tiny_text_config(32, 3, act="gelu", pad=0)))
        return StableDiffusionXLPipeline(
            vae=tiny_vae(),
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=clip_tokenizer(PAD_EOS),
            tokenizer_2=clip_tokenizer(PAD_BANG),
            unet=unet,
            scheduler=scheduler,
        )
    sd2 = family == "sd2"
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4) if sd2 else 8,
        use_linear_projection=sd2,
        norm_num_groups=32,
    )
    text_encoder = with_norm_bias(
        CLIPTextModel(tiny_text_config(32, 3, act="gelu" if sd2 else "quick_gelu", pad=0 if sd2 else 49407)))
    return StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(PAD_BANG if sd2 else PAD_EOS),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
