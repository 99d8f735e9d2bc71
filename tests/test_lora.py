"""LoRAs at generation time: applied completely and at the right scale, mixed, swapped from caches,
and never leaking into the next job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.engine import Engine, EngineConfig, LoraSpec, Txt2ImgRequest
from app.engine.lora_files import LoraFormatError, addnet_hash, inspect_lora
from app.engine.lora_keys import sgm_path
from app.engine.lora_runtime import ActiveLora, LoraTensorCache, PipelineAdapters
from app.engine.prompts import merge_loras, split_lora_tags
from app.engine.tiny import build_tiny_pipeline
from lora_fixtures import hand_merged, random_layers, write_kohya, write_peft

# ----- prompt syntax -------------------------------------------------------------------------


def test_lora_tags_are_parsed_and_removed() -> None:
    prompt, specs = split_lora_tags("a cat <lora:my style:0.8>, sitting <lora:detail> <LORA:neg: -0.5 >")
    assert prompt == "a cat , sitting"
    assert specs == (LoraSpec("my style", 0.8), LoraSpec("detail", 1.0), LoraSpec("neg", -0.5))
    assert split_lora_tags("no tags here") == ("no tags here", ())
    assert split_lora_tags("<lora:x:>")[1] == (LoraSpec("x", 1.0),)
    assert merge_loras((LoraSpec("a", 0.5),), (LoraSpec("a", 0.25), LoraSpec("b", 1.0))) == (
        LoraSpec("a", 0.75), LoraSpec("b", 1.0))


@pytest.mark.parametrize(("prompt", "message"), [
    ("<lora::1>", "names no LoRA"),
    ("<lora:x:heavy>", "'heavy' in <lora:x:heavy> is not a number"),
    ("<lora:x:1:0.5>", "separate text-encoder and UNet weights are not supported"),
])
def test_bad_lora_tags_are_clear_errors(prompt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_lora_tags(prompt)


# ----- applying a LoRA on a pipeline -----------------------------------------------------------

RANK, ALPHA = 4, 2.0  # alpha != rank: the file must be scaled by alpha / rank = 0.5


def _image(pipe, prompt: str = "a red circle") -> np.ndarray:
    return pipe(prompt=prompt, num_inference_steps=3, width=64, height=64, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(11), output_type="np").images[0]


def _adapters(pipe, family: str = "sd1", max_adapters: int = 4, cache: LoraTensorCache | None = None):
    return PipelineAdapters(pipe, cache or LoraTensorCache(2**30), max_adapters, family, "tiny")


def _active(path: Path, weight: float, name: str | None = None) -> ActiveLora:
    return ActiveLora(name or path.stem, path, inspect_lora(path), weight)


def _fresh_sd1():
    pipe = build_tiny_pipeline("sd1", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def sd1_pipe():
    """A pipeline of its own per test: adapters loaded by one test must not be seen by the next."""
    return _fresh_sd1()


@pytest.fixture(scope="module")
def kohya_file(tmp_path_factory) -> tuple[Path, list]:
    pipe = _fresh_sd1()
    layers = random_layers(pipe, RANK, ALPHA, seed=1, text_encoder=True, conv=True)
    path = write_kohya(layers, tmp_path_factory.mktemp("lora") / "kohya-style.safetensors", "sd1",
                       pipe.unet.config.layers_per_block, metadata={"ss_network_dim": "4"})
    return path, layers


def test_kohya_lora_with_te_and_conv_equals_the_hand_merge(sd1_pipe, kohya_file) -> None:
    path, layers = kohya_file
    base = _image(sd1_pipe)
    expected = _image(hand_merged(sd1_pipe, [(layers, 0.7)]))
    adapters = _adapters(sd1_pipe)
    adapters.activate([_active(path, 0.7)])
    got = _image(sd1_pipe)
    assert np.abs(expected - base).max() > 0.05, "the LoRA must change the picture noticeably"
    assert np.abs(got - expected).max() < 1e-4
    info = inspect_lora(path)
    assert info.format == "kohya" and info.rank == RANK and info.alpha == ALPHA and info.has_conv
    assert info.has_text_encoder and info.layers == len(layers) == adapters.layer_count(adapters.loaded_adapters[0])
    adapters.activate([])
    assert np.array_equal(_image(sd1_pipe), base), "no LoRA: the base output, bit for bit"


def test_peft_lora_equals_the_hand_merge(sd1_pipe, tmp_path: Path) -> None:
    layers = random_layers(sd1_pipe, RANK, ALPHA, seed=2, text_encoder=False)
    path = write_peft(sd1_pipe, layers, tmp_path)
    base = _image(sd1_pipe)
    expected = _image(hand_merged(sd1_pipe, [(layers, 1.3)]))
    adapters = _adapters(sd1_pipe)
    adapters.activate([_active(path, 1.3)])
    assert inspect_lora(path).format == "peft"
    assert np.abs(_image(sd1_pipe) - expected).max() < 1e-4
    adapters.activate([])
    assert np.array_equal(_image(sd1_pipe), base)


def test_two_loras_mix_to_the_hand_merged_sum_and_the_base_returns_after_each(sd1_pipe, kohya_file,
                                                                               tmp_path: Path) -> None:
    first, first_layers = kohya_file
    second_layers = random_layers(sd1_pipe, 8, 8.0, seed=3, text_encoder=False)
    second = write_kohya(second_layers, tmp_path / "second.safetensors", "sd1", 1)
    base = _image(sd1_pipe)
    adapters = _adapters(sd1_pipe)
    both = _image(hand_merged(sd1_pipe, [(first_layers, 0.6), (second_layers, -0.4)]))
    second_alone = _image(hand_merged(sd1_pipe, [(second_layers, 1.0)]))
    for _ in range(2):  # again, from the caches: same result
        adapters.activate([_active(first, 0.6), _active(second, -0.4)])
        assert np.abs(_image(sd1_pipe) - both).max() < 1e-4
        adapters.activate([])
        assert np.array_equal(_image(sd1_pipe), base)
        adapters.activate([_active(second, 1.0)])
        assert np.abs(_image(sd1_pipe) - second_alone).max() < 1e-4
        adapters.activate([])
        assert np.array_equal(_image(sd1_pipe), base)
    assert adapters.loads == 2 and adapters.cache.disk_reads == 2  # each file read and loaded once


def test_adapters_are_bounded_and_reloaded_from_memory(sd1_pipe, tmp_path: Path) -> None:
    files = []
    for seed in range(3):
        layers = random_layers(sd1_pipe, 2, 2.0, seed=10 + seed, text_encoder=False)
        files.append(write_kohya(layers, tmp_path / f"l{seed}.safetensors", "sd1", 1))
    adapters = _adapters(sd1_pipe, max_adapters=2)
    for path in files:
        adapters.activate([_active(path, 1.0)])
    assert len(adapters.loaded_adapters) == 2 and adapters.loads == 3
    adapters.activate([_active(files[0], 1.0)])  # evicted from the pipeline, still in the tensor cache
    assert adapters.loads == 4 and adapters.cache.disk_reads == 3
    adapters.activate([_active(files[0], 0.5)])  # a new weight for a loaded adapter: no load at all
    assert adapters.loads == 4
    adapters.activate([])


def test_layers_that_match_nothing_are_refused(sd1_pipe, tmp_path: Path) -> None:
    layers = random_layers(sd1_pipe, 2, 2.0, seed=5, text_encoder=False)[:4]
    path = write_kohya(layers, tmp_path / "extra.safetensors", "sd1", 1)
    # a fifth layer for a module this UNet does not have
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state["lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight"] = torch.zeros(2, 32)
    state["lora_unet_down_blocks_7_attentions_0_proj_in.lora_up.weight"] = torch.zeros(32, 2)
    save_file(state, str(path))
    base = _image(sd1_pipe)
    adapters = _adapters(sd1_pipe)
    with pytest.raises(ValueError, match="does not fit|layers match"):
        adapters.activate([_active(path, 1.0)])
    adapters.activate([])
    assert adapters.loaded_adapters == [] and np.array_equal(_image(sd1_pipe), base)


def test_sd2_kohya_lora_with_text_encoder(tmp_path: Path) -> None:
    pipe = build_tiny_pipeline("sd2", prediction_type="v_prediction", seed=0)
    pipe.set_progress_bar_config(disable=True)
    layers = random_layers(pipe, RANK, ALPHA, seed=6, text_encoder=True)
    path = write_kohya(layers, tmp_path / "v2.safetensors", "sd2", pipe.unet.config.layers_per_block,
                       metadata={"ss_v2": "True", "ss_base_model_version": "sd_v2_v"})
    assert inspect_lora(path).family == "sd2"
    expected = _image(hand_merged(pipe, [(layers, 0.5)]))
    _adapters(pipe, family="sd2").activate([_active(path, 0.5)])
    assert np.abs(_image(pipe) - expected).max() < 1e-4


def test_sdxl_kohya_lora_with_sgm_names_and_both_text_encoders(tmp_path: Path) -> None:
    pipe = build_tiny_pipeline("sdxl", seed=0)
    pipe.set_progress_bar_config(disable=True)
    layers = random_layers(pipe, RANK, ALPHA, seed=4, text_encoder=True)
    assert {layer.component for layer in layers} == {"unet", "text_encoder", "text_encoder_2"}
    path = write_kohya(layers, tmp_path / "xl.safetensors", "sdxl", pipe.unet.config.layers_per_block,
                       metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    info = inspect_lora(path)
    assert info.family == "sdxl" and any("input_blocks" in k for k in _keys(path))
    expected = _image(hand_merged(pipe, [(layers, 0.9)]))
    _adapters(pipe, family="sdxl").activate([_active(path, 0.9)])
    assert np.abs(_image(pipe) - expected).max() < 1e-4


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def test_sgm_names_follow_the_original_block_layout() -> None:
    assert sgm_path("down_blocks.1.attentions.0.proj_in", 2) == "input_blocks.4.1.proj_in"
    assert sgm_path("down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2", 2) == \
        "input_blocks.8.1.transformer_blocks.9.ff.net.2"
    assert sgm_path("mid_block.attentions.0.proj_out", 2) == "middle_block.1.proj_out"
    assert sgm_path("up_blocks.0.attentions.2.proj_in", 2) == "output_blocks.2.1.proj_in"
    assert sgm_path("up_blocks.1.attentions.0.proj_in", 2) == "output_blocks.3.1.proj_in"
    assert sgm_path("down_blocks.0.resnets.1.conv1", 2) == "input_blocks.2.0.in_layers.2"
    assert sgm_path("down_blocks.0.downsamplers.0.conv", 2) == "input_blocks.3.0.op"
    assert sgm_path("mid_block.resnets.1.time_emb_proj", 2) == "middle_block.2.emb_layers.1"


# ----- files LoRA Studio refuses -----------------------------------------------------------------


def test_loha_and_lokr_files_are_refused_clearly(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    loha = tmp_path / "loha.safetensors"
    save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2), "lora_unet_x.hada_w1_b": torch.zeros(2, 2),
               "lora_unet_x.alpha": torch.tensor(1.0)}, str(loha))
    with pytest.raises(LoraFormatError, match="LoHa .*not supported"):
        inspect_lora(loha)
    lokr = tmp_path / "lokr.safetensors"
    save_file({"lora_unet_x.lokr_w1": torch.zeros(2, 2), "lora_unet_x.lokr_w2": torch.zeros(2, 2)}, str(lokr))
    with pytest.raises(LoraFormatError, match="LoKr"):
        inspect_lora(lokr)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(LoraFormatError, match="not a readable"):
        inspect_lora(broken)


def test_family_and_trigger_words_from_metadata(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"lora_unet_a.lora_down.weight": torch.zeros(4, 768), "lora_unet_a.lora_up.weight": torch.zeros(8, 4)}
    tags = json.dumps({"5_shapes": {"hexagon": 30, "blue": 12, "zigzag pattern": 40}})
    path = tmp_path / "meta.safetensors"
    save_file(tensors, str(path), metadata={"ss_base_model_version": "sd_v2", "ss_network_alpha": "2",
                                            "ss_tag_frequency": tags, "modelspec.trigger_phrase": "hxg"})
    info = inspect_lora(path)
    assert (info.family, info.rank, info.alpha) == ("sd2", 4, 2.0)
    assert info.trigger_words == ("hxg", "zigzag pattern", "hexagon", "blue")
    assert not info.fits("sd1") and info.fits("sd2")
    shapes_only = tmp_path / "shapes.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
               torch.zeros(4, 2048)}, str(shapes_only))
    assert inspect_lora(shapes_only).family == "sdxl"


# ----- through the engine ------------------------------------------------------------------------


@pytest.fixture
def lora_engine(models_dir: Path, tmp_path: Path, kohya_file):
    models = tmp_path / "models"
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd1", models / "Stable-diffusion" / "tiny-sd1")
    (models / "Lora" / "styles").mkdir(parents=True)
    shutil.copy(kohya_file[0], models / "Lora" / "styles" / "kohya-style.safetensors")
    engine = Engine(EngineConfig(models_dir=models, outputs_dir=tmp_path / "outputs", default_model="tiny-sd1",
                                 device="cpu", preview_every=0))
    yield engine
    engine.shutdown()


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0]).astype(int)


def test_engine_applies_prompt_tags_and_records_hashes(lora_engine: Engine, kohya_file) -> None:
    def request(prompt: str, **extra) -> Txt2ImgRequest:
        return Txt2ImgRequest(prompt=prompt, steps=3, width=64, height=64, seed=21, sampler="Euler", **extra)

    base = lora_engine.generate(request("a red circle"))
    tagged = lora_engine.generate(request("a red circle <lora:kohya-style:0.7>"))
    by_field = lora_engine.generate(request("a red circle", loras=(LoraSpec("kohya-style", 0.7),)))
    after = lora_engine.generate(request("a red circle"))
    assert np.array_equal(_pixels(after), _pixels(base)), "a LoRA job must not leak into the next one"
    assert np.array_equal(_pixels(tagged), _pixels(by_field))
    assert np.abs(_pixels(tagged) - _pixels(base)).mean() > 3
    text = tagged.infotexts[0]
    short = addnet_hash(kohya_file[0])[:12]
    assert text.startswith("a red circle <lora:kohya-style:0.7>\n") and f'Lora hashes: "kohya-style: {short}"' in text
    assert "Lora hashes" not in base.infotexts[0]
    with Image.open(tagged.paths[0]) as saved:
        assert saved.info["parameters"] == text


def test_engine_refuses_unknown_and_mismatched_loras_before_queueing(lora_engine: Engine, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(ValueError, match="No LoRA called 'missing'"):
        lora_engine.submit(Txt2ImgRequest(prompt="x <lora:missing:1>", steps=2, width=64, height=64))
    xl = lora_engine.config.models_dir / "Lora" / "for-xl.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(2, 4), "lora_unet_a.lora_up.weight": torch.zeros(4, 2)},
              str(xl), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    job = lora_engine.submit(Txt2ImgRequest(prompt="x <lora:for-xl>", steps=2, width=64, height=64))
    with pytest.raises(Exception, match="is for SDXL; the checkpoint tiny-sd1 is SD 1.x"):
        job.wait(60)
    ok = lora_engine.generate(Txt2ImgRequest(prompt="still works", steps=2, width=64, height=64))
    assert len(ok.images) == 1


def test_checkpoint_families_are_told_without_loading(models_dir: Path) -> None:
    from app.engine.registry import ModelRegistry

    registry = ModelRegistry(models_dir)
    families = {name: registry.checkpoint_family(registry.find_checkpoint(name))
                for name in ("tiny-sd1", "tiny-sd2-v", "tiny-sdxl", "tiny-sd1-inpainting")}
    assert families == {"tiny-sd1": "sd1", "tiny-sd2-v": "sd2", "tiny-sdxl": "sdxl", "tiny-sd1-inpainting": "sd1"}


def test_picker_marks_loras_for_another_family(lora_engine: Engine) -> None:
    from safetensors.torch import save_file

    from app.ui.lora_picker import lora_choices, lora_summary

    save_file({"lora_unet_a.lora_down.weight": torch.zeros(2, 4), "lora_unet_a.lora_up.weight": torch.zeros(4, 2)},
              str(lora_engine.config.models_dir / "Lora" / "xl-only.safetensors"),
              metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    choices = dict((value, label) for label, value in lora_choices(lora_engine, "tiny-sd1"))
    assert choices == {"kohya-style": "kohya-style", "xl-only": "xl-only ⚠ for SDXL, not this model"}
    assert "SD 1.x" not in lora_summary(lora_engine, "xl-only") and "SDXL" in lora_summary(lora_engine, "xl-only")
    assert "rank 4, alpha 2" in lora_summary(lora_engine, "kohya-style")
