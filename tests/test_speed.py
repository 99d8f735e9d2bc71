"""Speed settings (app.engine.speed): torch.compile with static shapes and batch buckets, channels_last and
fused QKV projections give the plain pipeline's pictures; compiled graphs are reused across jobs, sizes
and LoRA swaps.

The recompilation tests compile with the "eager" backend (dynamo captures the graphs and runs them as they
are): whether dynamo recompiles is decided by its guards, before any backend runs, and inductor takes about
a minute per graph on a small CPU. One test compiles the UNet with inductor, --compile's backend, for
correctness.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine import Engine, EngineConfig, Txt2ImgRequest
from app.engine.lora_files import inspect_lora
from app.engine.lora_runtime import ActiveLora, LoraTensorCache, PipelineAdapters
from app.engine.speed import SpeedSettings, apply_speed, bucket, compile_module, compiled_graphs
from app.engine.tiny import build_tiny_pipeline
from lora_fixtures import random_layers, write_kohya

# Pixels are floats in [0, 1]. Measured on a CPU (fp32, 2026-12-06): channels_last differs from the plain
# pipeline by 2.6e-6, the inductor-compiled UNet by 2.8e-6; fused QKV (with or without a LoRA) and a batch
# padded to its bucket gave identical pixels. The bound leaves headroom for other CPUs' kernels.
SAME_PIXELS = 1e-4


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test starts with no compiled code, so graph counts are this test's own."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _pipe(seed: int = 0):
    pipe = build_tiny_pipeline("sd1", seed=seed)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _images(pipe, *, batch: int = 1, width: int = 64, height: int = 64, prompt: str = "a red circle") -> np.ndarray:
    generator = [torch.Generator().manual_seed(11 + i) for i in range(batch)]
    return pipe(prompt=prompt, num_inference_steps=3, width=width, height=height, guidance_scale=5.0,
                num_images_per_prompt=batch, generator=generator, output_type="np").images


def _eager(**settings) -> SpeedSettings:
    return SpeedSettings(backend="eager", **settings)


# ----- settings ---------------------------------------------------------------------------------


def test_buckets_are_powers_of_two() -> None:
    assert [bucket(n) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 16]


def test_settings_are_checked_and_come_from_the_flags(tmp_path: Path) -> None:
    from app.cli import COMPILE_MODE_CHOICES, RNG_CHOICES, build_parser, engine_config_from_args
    from app.engine.config import COMPILE_MODES, RNG_SOURCES

    assert COMPILE_MODE_CHOICES == list(COMPILE_MODES) and RNG_CHOICES == list(RNG_SOURCES)
    with pytest.raises(ValueError, match="--compile-mode 'fastest' is not one of default, reduce-overhead"):
        EngineConfig(compile_mode="fastest")
    with pytest.raises(ValueError, match="cannot go with --attention xformers"):
        EngineConfig(fuse_qkv=True, attention="xformers")
    args = build_parser().parse_args(["--models-dir", str(tmp_path), "--model", "m", "--compile", "--compile-mode",
                                      "max-autotune", "--channels-last", "--fuse-qkv"])
    config = engine_config_from_args(args)
    assert SpeedSettings.from_config(config) == SpeedSettings(True, "max-autotune", True, True)
    plain = engine_config_from_args(build_parser().parse_args(["--models-dir", str(tmp_path), "--model", "m"]))
    assert not SpeedSettings.from_config(plain).any
    assert plain.rng == "cpu" and config.rng == "cpu"
    assert engine_config_from_args(build_parser().parse_args(["--models-dir", str(tmp_path), "--model", "m",
                                                              "--rng", "gpu"])).rng == "gpu"
    with pytest.raises(ValueError, match="--rng 'nv' is not one of cpu, gpu"):
        EngineConfig(rng="nv")


def test_an_upcast_fp16_vae_decoder_compiles_without_cuda_graphs() -> None:
    from app.engine.speed import _decoder_settings

    pipe = _pipe()
    settings = SpeedSettings(compile=True, compile_mode="max-autotune")
    assert _decoder_settings(pipe.vae, settings) == settings  # fp32: the VAE keeps its weights between decodes
    pipe.vae.to(torch.float16)
    pipe.vae.register_to_config(force_upcast=True)  # as SDXL's: the pipeline casts it to fp32 for each decode
    assert _decoder_settings(pipe.vae, settings).compile_mode == "max-autotune-no-cudagraphs"
    assert _decoder_settings(pipe.vae, SpeedSettings(compile=True)).compile_mode == "default"


# ----- pixels -----------------------------------------------------------------------------------


def test_channels_last_and_fused_qkv_give_the_plain_pictures() -> None:
    plain = _images(_pipe(), batch=2)
    for settings in (SpeedSettings(channels_last=True), SpeedSettings(fuse_qkv=True),
                     SpeedSettings(channels_last=True, fuse_qkv=True)):
        pipe = _pipe()
        state = apply_speed(pipe, settings)
        if settings.channels_last:
            assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        if settings.fuse_qkv:
            assert state.fused is not None and len(state.fused.attentions) > 0
            assert type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__ == \
                "FusedAttnProcessor2_0"
        assert np.abs(_images(pipe, batch=2) - plain).max() < SAME_PIXELS, settings


@pytest.mark.slow
def test_inductor_compiled_unet_matches_eager_and_reuses_its_graph() -> None:
    eager = _images(_pipe())
    pipe = _pipe()
    start = compiled_graphs()
    compile_module(pipe.unet, SpeedSettings(compile=True, compile_mode="default"))  # the VAE's turn: below, "eager"
    first = _images(pipe)
    graphs = compiled_graphs()
    assert graphs > start
    assert np.abs(first - eager).max() < SAME_PIXELS
    second = _images(pipe)
    assert compiled_graphs() == graphs, "a second job of the same shape reuses the graphs"
    assert np.array_equal(first, second)


@pytest.mark.slow
def test_batches_are_padded_to_buckets_and_new_sizes_compile_once() -> None:
    eager = _pipe()
    pipe = _pipe()
    apply_speed(pipe, _eager(compile=True))
    three = _images(pipe, batch=3)  # 6 UNet rows with CFG -> bucket 8; 3 latents -> VAE bucket 4
    after_three = compiled_graphs()
    assert three.shape == (3, 64, 64, 3)
    assert np.abs(three - _images(eager, batch=3)).max() < SAME_PIXELS, "padding changes no picture"
    four = _images(pipe, batch=4)  # 8 rows and 4 latents: the same buckets
    assert compiled_graphs() == after_three, "batch 4 reuses batch 3's graphs"
    assert np.abs(four[:3] - three).max() < SAME_PIXELS  # each image keeps its own seed
    wide = _images(pipe, batch=1, width=96)  # a new size (and batch bucket): compiled once...
    after_wide = compiled_graphs()
    assert after_wide > after_three
    _images(pipe, batch=1, width=96)
    _images(pipe, batch=4)
    assert compiled_graphs() == after_wide, "...then reused, and the older shapes stay cached"
    assert np.abs(wide - _images(eager, batch=1, width=96)).max() < SAME_PIXELS


# ----- LoRA swaps -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_loras(tmp_path_factory) -> list[Path]:
    """Two kohya LoRAs on every attention and MLP layer of the UNet (to_q/to_k/to_v included)."""
    pipe = _pipe()
    folder = tmp_path_factory.mktemp("speed-lora")
    return [write_kohya(random_layers(pipe, 4, 4.0, seed=seed, text_encoder=False),
                        folder / f"style-{seed}.safetensors", "sd1", pipe.unet.config.layers_per_block)
            for seed in (1, 2)]


def _active(path: Path, weight: float = 1.0) -> ActiveLora:
    return ActiveLora(path.stem, path, inspect_lora(path), weight)


def _adapters(pipe, state=None) -> PipelineAdapters:
    adapters = PipelineAdapters(pipe, LoraTensorCache(2**30), 4, "sd1", "tiny")
    if state is not None:
        adapters.on_weights_changed = state.weights_changed
    return adapters


def test_a_lora_changes_the_picture_the_same_with_fused_qkv(two_loras) -> None:
    plain, fused = _pipe(), _pipe()
    state = apply_speed(fused, SpeedSettings(fuse_qkv=True))
    plain_adapters, fused_adapters = _adapters(plain), _adapters(fused, state)
    base = _images(plain)
    for loras in ([two_loras[0]], [two_loras[1]], two_loras):
        active = [_active(path, 0.8) for path in loras]
        plain_adapters.activate(active)
        fused_adapters.activate(active)
        expected = _images(plain)
        assert np.abs(expected - base).max() > 0.05, "the LoRA changes the picture noticeably"
        assert np.abs(_images(fused) - expected).max() < SAME_PIXELS
    fused_adapters.activate([])
    assert np.abs(_images(fused) - base).max() < SAME_PIXELS
    # Without the refresh the fused projections would keep the base q/k/v: the LoRA's attention part is lost.
    stale = _pipe()
    apply_speed(stale, SpeedSettings(fuse_qkv=True))
    _adapters(stale).activate([_active(two_loras[0], 0.8)])
    plain_adapters.activate([_active(two_loras[0], 0.8)])
    assert np.abs(_images(stale) - _images(plain)).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("fuse_qkv", [False, True])
def test_switching_loras_and_none_under_compile_recompiles_nothing(two_loras, fuse_qkv: bool) -> None:
    eager = _pipe()
    eager_adapters = _adapters(eager)
    pipe = _pipe()
    state = apply_speed(pipe, _eager(compile=True, fuse_qkv=fuse_qkv))
    adapters = _adapters(pipe, state)
    first, second = (_active(path) for path in two_loras)
    sets = {"none": [], "first": [first], "second": [second], "both": [first, second]}
    for loras in sets.values():  # load each LoRA once (peft wraps the layers: that may compile)
        adapters.activate(loras)
        _images(pipe)
    graphs = compiled_graphs()
    pictures = {}
    for name in ("first", "none", "second", "both", "first", "none", "second"):
        adapters.activate(sets[name])
        pictures[name] = _images(pipe)
    assert compiled_graphs() == graphs, "switching LoRAs recompiles nothing"
    assert adapters.loads == 2
    for name, loras in sets.items():
        eager_adapters.activate(loras)
        assert np.abs(pictures[name] - _images(eager)).max() < SAME_PIXELS, name
    assert np.abs(pictures["first"] - pictures["none"]).max() > 0.05
    assert np.abs(pictures["second"] - pictures["first"]).max() > 0.05


# ----- through the engine -------------------------------------------------------------------------


@pytest.mark.slow
def test_engine_applies_the_settings_once_per_model(models_dir: Path, tmp_path: Path, two_loras) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd1", models / "Stable-diffusion" / "tiny-sd1")
    (models / "Lora").mkdir()
    shutil.copy(two_loras[0], models / "Lora" / "style-1.safetensors")
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd1" / "vae", models / "VAE" / "own-vae")

    def run(engine: Engine, prompt: str, vae: str | None = None) -> np.ndarray:
        result = engine.generate(Txt2ImgRequest(prompt=prompt, steps=3, width=64, height=64, seed=5, sampler="Euler",
                                                vae=vae, save=False))
        return np.asarray(result.images[0]).astype(int)

    common = dict(models_dir=models, outputs_dir=tmp_path / "out", default_model="tiny-sd1", device="cpu",
                  preview_every=0)
    plain = Engine(EngineConfig(**common))
    fast = Engine(EngineConfig(**common, compile=True, compile_backend="eager", channels_last=True, fuse_qkv=True))
    try:
        for prompt in ("a red circle", "a red circle <lora:style-1:0.8>"):
            expected, got = run(plain, prompt), run(fast, prompt)
            assert np.abs(got - expected).max() <= 1, prompt  # 8-bit pixels: at most one level of rounding
        graphs = compiled_graphs()
        loaded = fast.manager.get("tiny-sd1")
        assert loaded.speed is not None and loaded.speed.fused is not None
        assert loaded.pipeline("img2img").unet is loaded.txt2img.unet, "the variants share the compiled UNet"
        lora, base = run(fast, "a red circle <lora:style-1:0.8>"), run(fast, "a red circle")
        assert compiled_graphs() == graphs, "the engine's LoRA swaps recompile nothing"
        assert np.abs(lora - base).mean() > 3
        # a VAE from models/VAE gets the settings too: its own compiled decoder, channels_last, fused QKV
        assert np.abs(run(fast, "a red circle", vae="own-vae") - run(plain, "a red circle", vae="own-vae")).max() <= 1
        picked = fast.manager.vae(fast.registry.find_vae("own-vae"), like=loaded.txt2img.vae)  # the cached one
        assert picked is not loaded.txt2img.vae and picked.decoder._compiled_call_impl is not None
        assert picked.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert any(getattr(module, "fused_projections", False) for module in picked.modules())
    finally:
        plain.shutdown()
        fast.shutdown()
