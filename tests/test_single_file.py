"""Single-file (A1111 / civitai layout) checkpoints: detection, offline loading, shipped configs.

Tiny random pipelines of each family are written in the original layout by ``ldm_export`` and
loaded back through ``app.engine.checkpoints`` with the socket guard on: every tensor and the
output image must match the original exactly.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    SchedulerMixin,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

import diffusers
from app.engine import checkpoints
from app.engine.checkpoints import (
    CONFIGS_DIR,
    CheckpointError,
    CheckpointInfo,
    detect_checkpoint,
    info_from_shapes,
    load_single_file,
    missing_config_files,
)
from app.engine.tiny import build_tiny_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from ldm_export import (  # noqa: E402
    SD1_CLIP_PREFIX,
    SD2_OPENCLIP_PREFIX,
    SDXL_CLIP_PREFIX,
    SDXL_OPENCLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    export_single_file,
    pipeline_to_ldm,
)

# name -> (build_tiny_pipeline kwargs, expected family, inpainting, prediction type)
MODELS = {
    "tiny-sd1": (dict(family="sd1"), "sd1", False, "epsilon"),
    "tiny-sd2-v": (dict(family="sd2", prediction_type="v_prediction"), "sd2", False, "v_prediction"),
    "tiny-sdxl": (dict(family="sdxl"), "sdxl", False, "epsilon"),
    "tiny-sd1-inpainting": (dict(family="sd1", inpainting=True), "sd1", True, "epsilon"),
}
EXPECTED_CONFIG = {"tiny-sd1": "sd1", "tiny-sd2-v": "sd2-768-v", "tiny-sdxl": "sdxl-base",
                   "tiny-sd1-inpainting": "sd1-inpaint"}
SHIPPED = ("sd1", "sd1-inpaint", "sd2-512", "sd2-768-v", "sd2-inpaint", "sdxl-base", "sdxl-inpaint")
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
SIZE = 32  # pixels: 16x16 latents, the tiny UNets' sample size


# ----- fixtures ----------------------------------------------------------------------------------
def write_config_dir(pipe: DiffusionPipeline, folder: Path) -> Path:
    """A diffusers-format folder of ``pipe``'s configs, no weights, tokenizers null (like the shipped ones)."""
    folder.mkdir(parents=True)
    index = {k: v for k, v in dict(pipe.config).items()}
    for name in ("tokenizer", "tokenizer_2", "safety_checker", "feature_extractor", "image_encoder"):
        if name in index:
            index[name] = [None, None]
    index["_class_name"] = type(pipe).__name__
    (folder / "model_index.json").write_text(json.dumps(index, default=list), encoding="utf-8")
    pipe.unet.save_config(folder / "unet")
    pipe.vae.save_config(folder / "vae")
    pipe.scheduler.save_config(folder / "scheduler")
    pipe.text_encoder.config.save_pretrained(folder / "text_encoder")
    if getattr(pipe, "text_encoder_2", None) is not None:
        pipe.text_encoder_2.config.save_pretrained(folder / "text_encoder_2")
    assert not list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimpleNamespace]:
    """Each tiny model: the pipeline, its single .safetensors file and its config folder."""
    root = tmp_path_factory.mktemp("single_file")
    out = {}
    for name, (kwargs, *_rest) in MODELS.items():
        pipe = build_tiny_pipeline(**kwargs)
        pipe.set_progress_bar_config(disable=True)
        for module in pipe.components.values():  # loaded pipelines are in eval mode; compare like with like
            if isinstance(module, torch.nn.Module):
                module.eval()
        file = export_single_file(pipe, root / f"{name}.safetensors")
        out[name] = SimpleNamespace(pipe=pipe, file=file, config=write_config_dir(pipe, root / f"{name}-config"))
    return out


def assert_same_weights(original: DiffusionPipeline, loaded: DiffusionPipeline) -> None:
    for name in COMPONENTS:
        module = getattr(original, name, None)
        if module is None:
            assert getattr(loaded, name, None) is None
            continue
        want, got = module.state_dict(), getattr(loaded, name).state_dict()
        assert set(got) == set(want), f"{name}: different weight names"
        for key, value in want.items():
            assert got[key].dtype == value.dtype, f"{name}.{key} dtype"
            assert torch.equal(got[key], value), f"{name}.{key} differs"


def run(pipe: DiffusionPipeline, inpainting: bool) -> np.ndarray:
    kwargs: dict = dict(prompt="a red cube on a table", negative_prompt="blurry", num_inference_steps=2,
                        height=SIZE, width=SIZE, guidance_scale=5.0, output_type="np",
                        generator=torch.Generator().manual_seed(1234))
    if inpainting:
        image = Image.fromarray((np.arange(SIZE * SIZE * 3) % 251).astype(np.uint8).reshape(SIZE, SIZE, 3))
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[SIZE // 4: 3 * SIZE // 4, SIZE // 4: 3 * SIZE // 4] = 255
        kwargs.update(image=image, mask_image=Image.fromarray(mask), strength=1.0)
    return pipe(**kwargs).images


def as_pipeline_class(pipe: DiffusionPipeline, inpainting: bool) -> DiffusionPipeline:
    if not inpainting:
        return pipe
    cls = StableDiffusionXLInpaintPipeline if "text_encoder_2" in pipe.components else StableDiffusionInpaintPipeline
    out = cls(**pipe.components)
    out.set_progress_bar_config(disable=True)
    return out


# ----- loading tiny single files -----------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_single_file_loads_offline_exactly(tiny: dict, name: str) -> None:
    _, family, inpainting, prediction = MODELS[name]
    model = tiny[name]
    loaded = load_single_file(model.file, config_dir=model.config)
    expected_cls = {
        ("sd1", False): StableDiffusionPipeline, ("sd2", False): StableDiffusionPipeline,
        ("sdxl", False): StableDiffusionXLPipeline, ("sd1", True): StableDiffusionInpaintPipeline,
    }[(family, inpainting)]
    assert type(loaded) is expected_cls
    assert_same_weights(model.pipe, loaded)
    assert loaded.scheduler.config.prediction_type == prediction
    assert loaded.tokenizer.pad_token == model.pipe.tokenizer.pad_token
    if family == "sdxl":
        assert loaded.tokenizer_2.pad_token == "!"
    else:
        assert loaded.safety_checker is None and loaded.config.requires_safety_checker is False
    loaded.set_progress_bar_config(disable=True)
    original = as_pipeline_class(model.pipe, inpainting)
    want, got = run(original, inpainting), run(loaded, inpainting)
    assert want.shape == (1, SIZE, SIZE, 3)
    assert np.array_equal(want, got), f"max abs diff {np.abs(want - got).max()}"


@pytest.mark.parametrize("name", list(MODELS))
def test_detect_checkpoint_reads_the_header(tiny: dict, name: str) -> None:
    _, family, inpainting, prediction = MODELS[name]
    info = detect_checkpoint(tiny[name].file)
    assert info == CheckpointInfo(family, inpainting, prediction, CONFIGS_DIR / EXPECTED_CONFIG[name])


def test_sdxl_text_encoders_are_not_swapped(tiny: dict) -> None:
    """The tiny SDXL's two encoders have the same width, which diffusers alone cannot tell apart."""
    model = tiny["tiny-sdxl"]
    assert model.pipe.text_encoder.config.hidden_size == model.pipe.text_encoder_2.config.hidden_size
    loaded = load_single_file(model.file, config_dir=model.config)
    assert torch.equal(loaded.text_encoder_2.text_projection.weight, model.pipe.text_encoder_2.text_projection.weight)
    assert not torch.equal(loaded.text_encoder_2.text_model.embeddings.token_embedding.weight,
                           loaded.text_encoder.embeddings.token_embedding.weight)


def test_export_layout_keeps_text_model_level(tiny: dict) -> None:
    state = pipeline_to_ldm(tiny["tiny-sd1"].pipe)
    assert f"{SD1_CLIP_PREFIX}encoder.layers.0.self_attn.q_proj.weight" in state
    assert f"{SD1_CLIP_PREFIX}embeddings.position_ids" in state
    assert "embeddings.token_embedding.weight" in tiny["tiny-sd1"].pipe.text_encoder.state_dict()  # transformers 5
    assert f"{UNET_PREFIX}input_blocks.0.0.weight" in state and f"{VAE_PREFIX}encoder.down.0.block.0.conv1.weight" in state
    sd2 = pipeline_to_ldm(tiny["tiny-sd2-v"].pipe)
    assert sd2[f"{SD2_OPENCLIP_PREFIX}transformer.resblocks.0.attn.in_proj_weight"].shape == (96, 32)
    sdxl = pipeline_to_ldm(tiny["tiny-sdxl"].pipe)
    assert f"{SDXL_CLIP_PREFIX}final_layer_norm.weight" in sdxl and f"{SDXL_OPENCLIP_PREFIX}text_projection" in sdxl
    assert f"{UNET_PREFIX}label_emb.0.0.weight" in sdxl


def test_torch_dtype_is_applied(tiny: dict) -> None:
    loaded = load_single_file(tiny["tiny-sd1"].file, config_dir=tiny["tiny-sd1"].config, torch_dtype=torch.bfloat16)
    for name in ("unet", "vae", "text_encoder"):
        assert {p.dtype for p in getattr(loaded, name).parameters()} == {torch.bfloat16}


def test_prediction_type_argument_wins(tiny: dict) -> None:
    model = tiny["tiny-sd1"]
    loaded = load_single_file(model.file, config_dir=model.config, prediction_type="v_prediction")
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    assert type(loaded.scheduler) is type(model.pipe.scheduler)
    with pytest.raises(ValueError, match="prediction_type"):
        load_single_file(model.file, config_dir=model.config, prediction_type="v")


# ----- pickles -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-sd1", "tiny-sdxl"])
def test_pickle_needs_permission_and_loads_weights_only(tiny: dict, name: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny[name]
    ckpt = export_single_file(model.pipe, tmp_path / f"{name}.ckpt")
    with pytest.raises(ValueError, match="pickle") as refused:
        load_single_file(ckpt, config_dir=model.config)
    assert str(ckpt) in str(refused.value)
    with pytest.raises(CheckpointError, match="pickle"):  # a ValueError subclass
        detect_checkpoint(ckpt)
    assert issubclass(CheckpointError, ValueError)

    calls: list[dict] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(dict(kwargs))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = load_single_file(ckpt, config_dir=model.config, allow_pickle=True)
    assert calls and all(c.get("weights_only") is True for c in calls), calls
    assert_same_weights(model.pipe, loaded)
    assert detect_checkpoint(ckpt, allow_pickle=True).family == MODELS[name][1]


class _Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_even_when_allowed(tiny: dict, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = pipeline_to_ldm(tiny["tiny-sd1"].pipe)
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "payload": _Payload(marker)}, ckpt)
    with pytest.raises(ValueError, match="weights_only"):
        load_single_file(ckpt, config_dir=tiny["tiny-sd1"].config, allow_pickle=True)
    assert not marker.exists()
    # the same file under an unsafe loader really runs the payload: the test is meaningful
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


# ----- errors ------------------------------------------------------------------------------------
def test_unknown_layout_is_a_clear_error(tmp_path: Path) -> None:
    odd = tmp_path / "mystery.safetensors"
    save_file({"some.weight": torch.zeros(2, 2)}, str(odd))
    with pytest.raises(ValueError, match="original .A1111/civitai. layout") as err:
        detect_checkpoint(odd)
    assert str(odd) in str(err.value) and "model.diffusion_model." in str(err.value)
    with pytest.raises(ValueError, match="mystery.safetensors"):
        load_single_file(odd)

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    with pytest.raises(ValueError, match="LoRA"):
        detect_checkpoint(lora)

    no_text = tmp_path / "unet_only.safetensors"
    save_file({f"{UNET_PREFIX}input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, str(no_text))
    with pytest.raises(ValueError, match="no text encoder"):
        detect_checkpoint(no_text)

    pix2pix = fake_checkpoint(tmp_path / "ip2p.safetensors", "sd1", in_channels=8)
    with pytest.raises(ValueError, match="8 input channels"):
        detect_checkpoint(pix2pix)

    junk = tmp_path / "broken.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="broken.safetensors"):
        detect_checkpoint(junk)

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        load_single_file(text)
    with pytest.raises(FileNotFoundError):
        load_single_file(tmp_path / "absent.safetensors")


def test_incomplete_config_folder_names_the_missing_file(tiny: dict, tmp_path: Path) -> None:
    model = tiny["tiny-sd1"]
    broken = write_config_dir(model.pipe, tmp_path / "cfg")
    (broken / "unet" / "config.json").unlink()
    assert missing_config_files(broken) == ["unet/config.json"]
    with pytest.raises(ValueError, match=r"lacks unet/config\.json") as err:
        load_single_file(model.file, config_dir=broken)
    assert str(broken) in str(err.value)
    assert missing_config_files(tmp_path / "nowhere") == ["model_index.json"]


def test_download_attempts_are_rewrapped(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    def wants_the_hub(*args: object, **kwargs: object) -> None:
        raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder for the specified revision")

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", wants_the_hub)
    model = tiny["tiny-sd1"]
    with pytest.raises(ValueError, match="config folder") as err:
        load_single_file(model.file, config_dir=model.config)
    assert "Nothing is downloaded" in str(err.value) and model.file.name in str(err.value)


# ----- prediction-type rules ---------------------------------------------------------------------
def fake_checkpoint(path: Path, family: str, *, in_channels: int = 4, extra: dict | None = None,
                    metadata: dict | None = None) -> Path:
    """A header-only stand-in: just the keys detection looks at, with tiny tensors."""
    text_key = {"sd1": f"{SD1_CLIP_PREFIX}embeddings.token_embedding.weight",
                "sd2": f"{SD2_OPENCLIP_PREFIX}transformer.resblocks.0.ln_1.weight",
                "sdxl": f"{SDXL_OPENCLIP_PREFIX}positional_embedding"}[family]
    tensors = {f"{UNET_PREFIX}input_blocks.0.0.weight": torch.zeros(2, in_channels, 3, 3), text_key: torch.zeros(2)}
    tensors.update(extra or {})
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "filename, family, kwargs, sidecar, expected",
    [
        ("v2-1_768-ema-pruned.safetensors", "sd2", {}, None, ("v_prediction", "sd2-768-v")),
        ("v2-1_512-ema-pruned.safetensors", "sd2", {}, None, ("epsilon", "sd2-512")),
        ("512-base-ema.safetensors", "sd2", {}, None, ("epsilon", "sd2-512")),
        ("768-v-ema.safetensors", "sd2", {}, None, ("v_prediction", "sd2-768-v")),
        ("someFinetune.safetensors", "sd2", {}, None, ("v_prediction", "sd2-768-v")),
        ("sd2-inpainting.safetensors", "sd2", {"in_channels": 9}, None, ("epsilon", "sd2-inpaint")),
        ("sd2_768_anything.safetensors", "sd2", {}, 'model:\n  params:\n    parameterization: "eps"\n',
         ("epsilon", "sd2-512")),
        ("plain.safetensors", "sd2", {}, 'model:\n  params:\n    parameterization: "v"\n',
         ("v_prediction", "sd2-768-v")),
        ("plain.safetensors", "sd2", {"metadata": {"modelspec.architecture": "stable-diffusion-v2-512"}}, None,
         ("epsilon", "sd2-512")),
        ("plain512.safetensors", "sd2", {"metadata": {"modelspec.architecture": "stable-diffusion-v2-768-v"}}, None,
         ("v_prediction", "sd2-768-v")),
        ("plain768.safetensors", "sd2", {"metadata": {"modelspec.prediction_type": "epsilon"}}, None,
         ("epsilon", "sd2-512")),
        ("noob-768.safetensors", "sdxl", {"extra": {"v_pred": torch.zeros(0)}}, None, ("v_prediction", "sdxl-base")),
        ("x768.safetensors", "sdxl", {}, None, ("epsilon", "sdxl-base")),
        ("x.safetensors", "sd1", {}, 'model:\n  params:\n    parameterization: "v"\n', ("v_prediction", "sd1")),
        ("x.safetensors", "sd1", {"in_channels": 9}, None, ("epsilon", "sd1-inpaint")),
        ("x.safetensors", "sdxl", {"in_channels": 9}, None, ("epsilon", "sdxl-inpaint")),
    ],
)
def test_prediction_type_rules(tmp_path: Path, filename: str, family: str, kwargs: dict, sidecar: str | None,
                               expected: tuple[str, str]) -> None:
    path = fake_checkpoint(tmp_path / filename, family, **kwargs)
    if sidecar is not None:
        path.with_suffix(".yaml").write_text(sidecar, encoding="utf-8")
    info = detect_checkpoint(path)
    assert (info.prediction_type, info.config_dir.name) == expected
    assert info.family == family
    # the caller's choice beats every rule
    other = "epsilon" if expected[0] == "v_prediction" else "v_prediction"
    assert detect_checkpoint(path, prediction_type=other).prediction_type == other


# ----- the shipped (real-size) config folders ---------------------------------------------------
SHIPPED_FACTS = {
    # folder: (family, in_channels, cross_attention_dim, text widths, scheduler prediction type, class)
    "sd1": ("sd1", 4, 768, (768,), "epsilon", StableDiffusionPipeline),
    "sd1-inpaint": ("sd1", 9, 768, (768,), "epsilon", StableDiffusionInpaintPipeline),
    "sd2-512": ("sd2", 4, 1024, (1024,), "epsilon", StableDiffusionPipeline),
    "sd2-768-v": ("sd2", 4, 1024, (1024,), "v_prediction", StableDiffusionPipeline),
    "sd2-inpaint": ("sd2", 9, 1024, (1024,), "epsilon", StableDiffusionInpaintPipeline),
    "sdxl-base": ("sdxl", 4, 2048, (768, 1280), "epsilon", StableDiffusionXLPipeline),
    "sdxl-inpaint": ("sdxl", 9, 2048, (768, 1280), "epsilon", StableDiffusionXLInpaintPipeline),
}
SHIPPED_NAMES = {"sd2-512": "v2-1_512-ema-pruned", "sd2-768-v": "v2-1_768-ema-pruned"}


def meta_pipeline(folder: Path) -> SimpleNamespace:
    """The folder's modules built on the meta device (no memory) from its configs."""
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        text_encoder_2 = None
        if (folder / "text_encoder_2").is_dir():
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    return SimpleNamespace(unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2)


def test_shipped_folders_are_exactly_the_families() -> None:
    shipped = {p.name for p in CONFIGS_DIR.iterdir() if p.is_dir() and (p / "model_index.json").exists()}
    assert shipped == set(SHIPPED)


@pytest.mark.parametrize("folder_name", SHIPPED)
def test_shipped_config_folder_is_complete_and_fits_detection(folder_name: str, tmp_path: Path) -> None:
    family, in_channels, cross_dim, widths, prediction, pipeline_cls = SHIPPED_FACTS[folder_name]
    folder = CONFIGS_DIR / folder_name
    assert missing_config_files(folder) == []
    assert not list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
    assert not (folder / "tokenizer").exists()

    index = pipeline_cls.load_config(folder)
    assert index["_class_name"] == pipeline_cls.__name__
    for optional in ("safety_checker", "feature_extractor", "tokenizer"):
        assert index.get(optional, [None, None]) == [None, None]
    assert index.get("requires_safety_checker", False) is False

    scheduler_cls = getattr(diffusers, index["scheduler"][1])
    assert issubclass(scheduler_cls, SchedulerMixin)
    scheduler = scheduler_cls.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    assert scheduler.config.prediction_type == prediction
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["clip_sample"] is False
    assert DDIMScheduler.from_config(scheduler.config).config.clip_sample is False

    meta = meta_pipeline(folder)
    unet = meta.unet
    assert unet.conv_in.weight.device.type == "meta"
    assert unet.config.in_channels == in_channels and unet.conv_in.weight.shape[1] == in_channels
    assert unet.config.cross_attention_dim == cross_dim
    encoders = [meta.text_encoder] + ([meta.text_encoder_2] if meta.text_encoder_2 is not None else [])
    assert tuple(e.config.hidden_size for e in encoders) == widths
    assert sum(widths) == cross_dim  # SDXL concatenates its two encoders' hidden states
    attn2 = next(m for n, m in unet.named_modules() if n.endswith("attn2.to_k"))
    assert attn2.in_features == cross_dim
    if family == "sdxl":  # time ids (6 x 256) + pooled text embedding of encoder 2
        assert unet.add_embedding.linear_1.in_features == 6 * unet.config.addition_time_embed_dim + \
            meta.text_encoder_2.config.projection_dim
    assert meta.vae.config.scaling_factor == (0.13025 if family == "sdxl" else 0.18215)

    # The folder's modules written in the original layout must be detected as this very folder.
    state = pipeline_to_ldm(meta, family=family, extras=True)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    name = SHIPPED_NAMES.get(folder_name, f"some-{folder_name}-model")
    info = info_from_shapes(tmp_path / f"{name}.safetensors", shapes)
    assert (info.family, info.inpainting, info.config_dir) == (family, in_channels == 9, folder)
    assert info.prediction_type == prediction


def test_shipped_sd1_layout_matches_a_real_checkpoint() -> None:
    """The tensor counts of an SD 1.5 file: 686 UNet, 248 VAE, 196 text encoder (+ position_ids)."""
    state = pipeline_to_ldm(meta_pipeline(CONFIGS_DIR / "sd1"), family="sd1")
    assert sum(k.startswith(UNET_PREFIX) for k in state) == 686
    assert sum(k.startswith(VAE_PREFIX) for k in state) == 248
    assert sum(k.startswith(SD1_CLIP_PREFIX) and not k.endswith("position_ids") for k in state) == 196
    assert state[f"{UNET_PREFIX}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 768)


def test_checkpoints_module_has_no_mutable_state() -> None:
    mutable = (list, dict, set)
    offenders = [k for k, v in vars(checkpoints).items() if not k.startswith("__") and isinstance(v, mutable)]
    assert offenders == []


def test_the_socket_guard_is_active() -> None:
    """Every load above ran with the guard: any download attempt would have failed the test."""
    with pytest.raises(Exception, match="network|resolve"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
