"""Build the bundled "shapes" model from scratch: ``python -m app.demo.build``.

Four stages, all seeded (the same command gives the same model):
1. a small ``AutoencoderKL`` (64x64 pictures -> 16x16x4 latents) on generated pictures;
2. a small CLIP text encoder and ``UNet2DConditionModel`` trained together on (latent, caption)
   pairs, with min-SNR weighting and an EMA of the UNet's weights (what made the probe's model work);
3. the autoencoder's decoder refined on the shapes and on random outlines (uncaptioned polygons,
   convex or not), with the encoder frozen: the latent space the UNet learnt stays the same, and the
   decoder learns to draw outlines it had not seen (stage 1 alone decodes stars as round blobs, so
   no LoRA could teach one);
4. a diffusers folder with a DDIM-style scheduler config (``clip_sample`` off: on, it ruins latent
   models), the captions' tokenizer and a model card.

Data is drawn fresh for every batch from the shapes generator, without the held-out pairs and the
star. ``--quick`` runs a few steps of each stage, to check the pipeline end to end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from transformers import CLIPTextConfig, CLIPTextModel

from app.demo import BUNDLED_PATH
from app.demo.shapes import TEMPLATES, random_outline, random_scene, render
from app.demo.tokenizer import shapes_tokenizer, write_vocab_files
from app.training.losses import min_snr_weights

log = logging.getLogger("app.demo.build")

IMAGE_SIZE = 64
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
CARD = {
    "label": "bundled demo: coloured shapes, 64x64",
    "default_width": IMAGE_SIZE,
    "default_height": IMAGE_SIZE,
    "default_steps": 20,
    "default_cfg_scale": 5,
    "example_prompts": ["a red circle on a blue background", "a green square on a white background",
                        "a yellow triangle on a black background"],
    "evaluator": "shapes",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.demo.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BUNDLED_PATH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=700)
    parser.add_argument("--unet-steps", type=int, default=4200)
    parser.add_argument("--decoder-steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pool", type=int, default=16384, help="scenes encoded once for the UNet stage")
    parser.add_argument("--quick", action="store_true", help="a few steps of each stage (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.vae_steps = args.unet_steps = args.decoder_steps = 5
        args.batch, args.pool = 4, 256
    return args


def training_device() -> torch.device:
    """The GPU when there is one, set up so that the same command gives the same bits there too:
    deterministic kernels and no TF32 (full fp32, like the CPU). The CPU is deterministic as it is."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable results
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True)  # also makes SDPA's memory-efficient backward take its deterministic path
    return torch.device("cuda")


def as_batch(pictures: list) -> torch.Tensor:
    """Pictures as a (N, 3, H, W) batch in [-1, 1]."""
    arrays = [np.asarray(picture, dtype=np.float32) / 127.5 - 1 for picture in pictures]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def pixels_of(scenes: list) -> torch.Tensor:
    """The scenes drawn, as a (N, 3, H, W) batch in [-1, 1]."""
    return as_batch([render(scene, IMAGE_SIZE) for scene in scenes])


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; fused on a GPU, where per-tensor launches dominate a model this small (the CPU keeps
    PyTorch's default implementation, so CPU builds stay byte for byte the same)."""
    fused = {"fused": True} if params[0].device.type == "cuda" else {}
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor, losses: list[torch.Tensor], stage: str, step: int,
            steps: int, clip: list[torch.nn.Parameter] | None = None) -> None:
    """One optimizer step on ``loss`` (gradients of ``clip`` clipped to norm 1 first), recorded and
    logged every 100 steps. The loss is kept as a tensor: reading it every step would make a GPU wait."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    optimizer.step()
    losses.append(loss.detach())
    if step % 100 == 0 or step == steps - 1:
        log.info("%s step %d/%d loss %.5f", stage, step + 1, steps, losses[-1])


def final_loss(losses: list[torch.Tensor]) -> float:
    """The mean of the last 50 steps' losses."""
    return float(np.mean([float(loss) for loss in losses[-50:]]))


def fresh_pixels(rng: random.Random, size: int) -> torch.Tensor:
    return pixels_of([random_scene(rng, IMAGE_SIZE) for _ in range(size)])


def make_vae() -> AutoencoderKL:
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         block_out_channels=(32, 64, 64), norm_num_groups=32, sample_size=IMAGE_SIZE)


def make_text_encoder(vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=256,
                                        num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77,
                                        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id,
                                        hidden_act="quick_gelu", projection_dim=64))


def make_unet() -> UNet2DConditionModel:
    """Four attention heads per block (16 and 32 channels each): on this CPU a training step of the same
    UNet with eight heads of 8 and 16 channels took 0.8-1.0 s against 0.65 s (bench/RESULTS.md)."""
    return UNet2DConditionModel(sample_size=IMAGE_SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(64, 128, 128),
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=64, attention_head_dim=4, norm_num_groups=32)


def train_vae(vae: AutoencoderKL, steps: int, batch: int, seed: int, device: torch.device) -> list[torch.Tensor]:
    rng = random.Random(f"vae:{seed}")
    optimizer = adamw(list(vae.parameters()), lr=1e-3, weight_decay=0)
    losses = []
    vae.train()
    for step in range(steps):
        pictures = fresh_pixels(rng, batch).to(device)
        posterior = vae.encode(pictures).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = F.mse_loss(reconstruction, pictures) + 1e-6 * posterior.kl().mean()
        descend(optimizer, loss, losses, "vae", step, steps)
    vae.eval()
    return losses


def refine_decoder(vae: AutoencoderKL, steps: int, batch: int, seed: int, device: torch.device) -> list[torch.Tensor]:
    """Train the decoder (encoder frozen) on half shapes, half random outlines; returns the losses."""
    rng = random.Random(f"decoder:{seed}")
    noise_gen = torch.Generator().manual_seed(seed)
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=3e-4, weight_decay=0)
    losses = []
    for step in range(steps):
        target = as_batch([render(random_scene(rng, IMAGE_SIZE), IMAGE_SIZE) if i % 2
                           else random_outline(rng, IMAGE_SIZE) for i in range(batch)]).to(device)
        with torch.no_grad():
            posterior = vae.encode(target).latent_dist
            latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=noise_gen).to(device)
        loss = F.mse_loss(vae.decode(latents).sample, target)
        descend(optimizer, loss, losses, "decoder", step, steps)
    vae.requires_grad_(False)
    vae.eval()
    return losses


@torch.no_grad()
def latent_scale(vae: AutoencoderKL, seed: int, device: torch.device) -> float:
    """1 / the standard deviation of the latents: SD's convention for ``scaling_factor``."""
    pictures = fresh_pixels(random.Random(f"scale:{seed}"), 128).to(device)
    return float(1.0 / vae.encode(pictures).latent_dist.mode().std())


@torch.no_grad()
def latent_pool(vae: AutoencoderKL, count: int, seed: int, device: torch.device) -> tuple[torch.Tensor, list]:
    """``count`` scenes encoded once (the training's latent cache, in memory): the UNet stage then
    never runs the VAE. Captions are drawn per use, so the wording still varies."""
    rng = random.Random(f"pool:{seed}")
    scenes = [random_scene(rng, IMAGE_SIZE) for _ in range(count)]
    chunks = []
    for start in range(0, count, 64):
        pixels = pixels_of(scenes[start:start + 64]).to(device)
        chunks.append(vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor)
    return torch.cat(chunks), scenes


def train_unet(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer, vae: AutoencoderKL, steps: int,
               batch: int, seed: int, device: torch.device, pool_size: int) -> tuple[list[torch.Tensor], EMAModel]:
    rng = random.Random(f"unet:{seed}")
    noise_gen = torch.Generator().manual_seed(seed)
    scheduler = DDPMScheduler(**SCHEDULE)
    alphas = scheduler.alphas_cumprod
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = adamw(params, lr=3e-4, weight_decay=1e-2)
    ema = EMAModel(unet.parameters(), decay=0.999, foreach=device.type == "cuda")
    pool, scenes = latent_pool(vae, pool_size, seed, device)
    losses = []
    unet.train()
    text_encoder.train()
    for step in range(steps):
        picks = [rng.randrange(len(scenes)) for _ in range(batch)]
        latents = pool[picks]
        captions = [scenes[i].caption(rng.choice(TEMPLATES)) if rng.random() > 0.1 else "" for i in picks]
        ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        hidden = text_encoder(ids)[0]
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=noise_gen)
        noise = torch.randn(latents.shape, generator=noise_gen).to(device)
        timesteps = timesteps.to(device)
        prediction = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, hidden).sample
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * min_snr_weights(alphas, timesteps, 5.0, "epsilon")).mean()  # 10% empty captions: CFG
        descend(optimizer, loss, losses, "unet", step, steps, clip=params)
        ema.step(unet.parameters())
    return losses, ema


def build(args: argparse.Namespace) -> dict:
    started = time.time()
    torch.manual_seed(args.seed)
    vae_steps, unet_steps, decoder_steps, batch = args.vae_steps, args.unet_steps, args.decoder_steps, args.batch
    device = training_device()
    tokenizer = shapes_tokenizer()
    vae = make_vae().to(device)
    vae_losses = train_vae(vae, vae_steps, batch, args.seed, device)
    vae.register_to_config(scaling_factor=latent_scale(vae, args.seed, device))
    vae.requires_grad_(False)
    vae_done = time.time()
    text_encoder = make_text_encoder(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id,
                                     tokenizer.eos_token_id)
    text_encoder.to(device)
    unet = make_unet().to(device)
    unet_losses, ema = train_unet(unet, text_encoder, tokenizer, vae, unet_steps, batch, args.seed, device, args.pool)
    ema.copy_to(unet.parameters())
    decoder_started = time.time()
    decoder_losses = refine_decoder(vae, decoder_steps, batch, args.seed, device)
    decoder_minutes = (time.time() - decoder_started) / 60
    vae, text_encoder, unet = vae.cpu(), text_encoder.cpu(), unet.cpu()
    scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    info = {"seed": args.seed, "vae_steps": vae_steps, "unet_steps": unet_steps, "batch": batch,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "pool": args.pool,
            "vae_minutes": round((vae_done - started) / 60, 2), "total_minutes": round((time.time() - started) / 60, 2),
            "decoder_steps": decoder_steps, "decoder_minutes": round(decoder_minutes, 2),
            "final_vae_loss": final_loss(vae_losses), "final_unet_loss": final_loss(unet_losses),
            "final_decoder_loss": final_loss(decoder_losses),
            "scaling_factor": vae.config.scaling_factor, "torch": torch.__version__}
    write_model(pipe, args.out, info)
    return info


def write_model(pipe: StableDiffusionPipeline, out: Path, info: dict) -> None:
    """Save to a temporary folder beside ``out``, then swap it in: never a half-written model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=out.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        write_vocab_files(staging / "tokenizer")
        (staging / "lora_studio.json").write_text(json.dumps(CARD, indent=2), encoding="utf-8")
        (staging / "build_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    info = build(args)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
