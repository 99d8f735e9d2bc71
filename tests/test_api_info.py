"""The information and extras routes of /sdapi/v1 as A1111 clients read them, against the launched app on
the placeholder model (one app for the module, with a LoRA, a VAE and two embeddings in its models
folder); and ``app.engine.resize`` on its own."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from safetensors.torch import save_file

from app.engine.placeholder import ensure_placeholder_model
from app.engine.resize import (
    BUILTIN_UPSCALERS,
    LATENT_UPSCALE_MODES,
    MAX_SIDE,
    blend_upscalers,
    canonical_upscaler,
    target_size,
    upscale,
)
from app_server import RunningApp, start_app

API = "/sdapi/v1"
MODEL = "tiny-random-sd1"
TAG_FREQUENCY = {"10_style": {"red": 3, "circle": 2}}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    from lora_fixtures import random_layers, write_kohya

    from app.engine.tiny import build_tiny_pipeline

    workdir = tmp_path_factory.mktemp("api-info")
    models = workdir / "models"
    ensure_placeholder_model(models)
    pipe = build_tiny_pipeline("sd1", seed=0)  # the placeholder's architecture
    (models / "Lora").mkdir(parents=True)
    write_kohya(random_layers(pipe, 4, 4.0, seed=1, text_encoder=False), models / "Lora" / "info-style.safetensors",
                "sd1", pipe.unet.config.layers_per_block,
                metadata={"ss_output_name": "info_style_v1", "ss_tag_frequency": json.dumps(TAG_FREQUENCY),
                          "ss_network_dim": "4"})
    (models / "embeddings").mkdir(parents=True)
    save_file({"emb_params": torch.randn(2, 32)}, str(models / "embeddings" / "fits-tiny.safetensors"))
    save_file({"emb_params": torch.randn(2, 768)}, str(models / "embeddings" / "for-sd15.safetensors"))
    shutil.copytree(models / "Stable-diffusion" / MODEL / "vae", models / "VAE" / "info-vae")
    (models / "styles.csv").write_text('name,prompt,negative_prompt\nfilm,"film still of {prompt}",cartoon\n',
                                       encoding="utf-8")
    running = start_app(workdir)
    yield running
    running.stop()


def get(app: RunningApp, route: str) -> Any:
    response = requests.get(f"{app.url}{API}/{route}", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def post(app: RunningApp, route: str, body: Any = None) -> requests.Response:
    return requests.post(f"{app.url}{API}/{route}", json=body, timeout=60)


def b64_png(image: Image.Image, prefix: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    text = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/png;base64,{text}" if prefix else text


def decoded(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


# ----- lists ------------------------------------------------------------------------------------

def test_sd_models_lists_the_checkpoint_with_a_title_options_take_back(app: RunningApp) -> None:
    models = get(app, "sd-models")
    (item,) = [m for m in models if m["model_name"] == MODEL]
    assert set(item) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert isinstance(item["hash"], str) and len(item["hash"]) == 10 and int(item["hash"], 16) >= 0
    assert item["title"] == f"{MODEL} [{item['hash']}]"
    assert item["sha256"] is None and item["config"] is None
    assert Path(item["filename"]).is_absolute() and Path(item["filename"]).is_dir()
    assert post(app, "options", {"sd_model_checkpoint": item["title"]}).status_code == 200
    assert get(app, "options")["sd_model_checkpoint"] == item["title"]
    assert "fits-tiny" in get(app, "embeddings")["loaded"]  # the titled checkpoint is found again


def test_samplers_and_schedulers_in_a1111_shape(app: RunningApp) -> None:
    samplers = get(app, "samplers")
    by_name = {s["name"]: s for s in samplers}
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC"} <= set(by_name)
    for sampler in samplers:
        assert set(sampler) == {"name", "aliases", "options"}
        assert isinstance(sampler["aliases"], list) and isinstance(sampler["options"], dict)
        assert all(isinstance(v, str) for v in sampler["options"].values())
    assert "k_dpmpp_2m" in by_name["DPM++ 2M"]["aliases"] and by_name["DPM++ 2M"]["options"]["scheduler"] == "karras"
    assert "k_euler_a" in by_name["Euler a"]["aliases"]
    schedulers = get(app, "schedulers")
    names = [s["name"] for s in schedulers]
    assert names[0] == "automatic" and {"karras", "exponential", "sgm_uniform", "uniform"} <= set(names)
    for scheduler in schedulers:
        assert set(scheduler) == {"name", "label", "aliases", "default_rho", "need_inner_model"}
    karras = next(s for s in schedulers if s["name"] == "karras")
    assert karras["label"] == "Karras" and karras["default_rho"] == 7.0 and karras["need_inner_model"] is False


def test_upscalers_latent_modes_and_vaes(app: RunningApp) -> None:
    upscalers = get(app, "upscalers")
    assert [u["name"] for u in upscalers] == list(BUILTIN_UPSCALERS)
    for item in upscalers:
        assert set(item) == {"name", "model_name", "model_path", "model_url", "scale"} and item["model_name"] is None
    assert [m["name"] for m in get(app, "latent-upscale-modes")] == list(LATENT_UPSCALE_MODES)
    assert {"model_name": "info-vae", "filename": str(app.models_dir.absolute() / "VAE" / "info-vae")} in \
        get(app, "sd-vae")


def test_loras_list_the_tag_name_alias_and_metadata(app: RunningApp) -> None:
    (lora,) = get(app, "loras")
    assert set(lora) == {"name", "alias", "path", "metadata"}
    assert lora["name"] == "info-style" and lora["alias"] == "info_style_v1"
    assert Path(lora["path"]) == (app.models_dir / "Lora" / "info-style.safetensors").absolute()
    assert lora["metadata"]["ss_network_dim"] == "4" and lora["metadata"]["ss_tag_frequency"] == TAG_FREQUENCY


def test_embeddings_loaded_and_skipped(app: RunningApp) -> None:
    answer = get(app, "embeddings")
    assert set(answer) == {"loaded", "skipped"}
    keys = {"step", "sd_checkpoint", "sd_checkpoint_name", "shape", "vectors"}
    assert set(answer["loaded"]) == {"fits-tiny"} and set(answer["skipped"]) == {"for-sd15"}
    assert answer["loaded"]["fits-tiny"] == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                             "shape": 32, "vectors": 2}
    assert set(answer["skipped"]["for-sd15"]) == keys and answer["skipped"]["for-sd15"]["shape"] == 768


def test_features_lora_studio_lacks_answer_empty(app: RunningApp) -> None:
    for route in ("face-restorers", "realesrgan-models", "hypernetworks"):
        assert get(app, route) == [], route
    assert get(app, "scripts") == {"txt2img": [], "img2img": ["sd upscale"]}  # the one script (test_sd_upscale.py)
    assert [script["name"] for script in get(app, "script-info")] == ["sd upscale"]


def test_cmd_flags_memory_and_refresh(app: RunningApp) -> None:
    flags = get(app, "cmd-flags")
    assert isinstance(flags, dict) and flags["models_dir"] == str(app.models_dir) and "auth" not in flags
    memory = get(app, "memory")
    assert set(memory) == {"ram", "cuda"} and set(memory["ram"]) == {"free", "used", "total"}
    assert 0 < memory["ram"]["used"] <= memory["ram"]["total"]
    assert "error" in memory["cuda"] or {"system", "allocated", "reserved"} <= set(memory["cuda"])
    for kind in ("checkpoints", "loras", "vae", "embeddings"):
        response = post(app, f"refresh-{kind}")
        assert response.status_code == 200 and response.json() is None, kind


def test_openapi_describes_every_route(app: RunningApp) -> None:
    schema = requests.get(f"{app.url}/openapi.json", timeout=60).json()
    gets = ("sd-models", "samplers", "schedulers", "upscalers", "latent-upscale-modes", "sd-vae", "loras", "embeddings",
            "prompt-styles", "cmd-flags", "memory", "face-restorers", "realesrgan-models", "hypernetworks", "scripts",
            "script-info")
    posts = ("refresh-checkpoints", "refresh-loras", "refresh-vae", "refresh-embeddings", "extra-single-image",
             "extra-batch-images")
    for route in gets:
        assert "get" in schema["paths"][f"{API}/{route}"], route
    for route in posts:
        assert "post" in schema["paths"][f"{API}/{route}"], route
    assert {"SDModelItem", "EmbeddingsResponse", "ExtrasSingleImageRequest", "ExtrasBatchImagesResponse"} <= \
        set(schema["components"]["schemas"])


# ----- extras -----------------------------------------------------------------------------------

def extras(app: RunningApp, image: Image.Image, **fields: Any) -> Image.Image:
    response = post(app, "extra-single-image", {"image": b64_png(image, prefix=True), **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"html_info", "image"} and isinstance(body["html_info"], str)
    return decoded(body["image"])


def test_extra_single_image_by_factor_and_to_a_size(app: RunningApp) -> None:
    picture = noise(32, 24)
    lanczos = extras(app, picture, upscaler_1="Lanczos", upscaling_resize=2)
    nearest = extras(app, picture, upscaler_1="Nearest", upscaling_resize=2)
    assert lanczos.size == nearest.size == (64, 48)
    assert np.array_equal(pixels(nearest), pixels(picture).repeat(2, axis=0).repeat(2, axis=1))
    assert np.abs(pixels(lanczos) - pixels(nearest)).mean() > 5
    mixed = extras(app, picture, upscaler_1="Lanczos", upscaler_2="Nearest", extras_upscaler_2_visibility=0.5,
                   upscaling_resize=2)
    assert np.abs(pixels(mixed) - (pixels(lanczos) + pixels(nearest)) / 2).max() <= 1
    cropped = extras(app, picture, resize_mode=1, upscaling_resize_w=50, upscaling_resize_h=50, upscaling_crop=True,
                     upscaler_1="Lanczos")
    covering = extras(app, picture, resize_mode=1, upscaling_resize_w=50, upscaling_resize_h=50,
                      upscaling_crop=False, upscaler_1="Lanczos")
    assert cropped.size == (50, 50) and covering.size == (67, 50)
    assert extras(app, picture, upscaler_1="None", upscaling_resize=2).size == (32, 24)  # "None": no upscale step


def test_extras_keep_the_generation_parameters(app: RunningApp) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a red circle\nSteps: 4, Sampler: Euler a, Seed: 1")
    buffer = io.BytesIO()
    noise(16, 16).save(buffer, format="PNG", pnginfo=info)
    response = post(app, "extra-single-image", {"image": base64.b64encode(buffer.getvalue()).decode(),
                                                "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert response.status_code == 200, response.text
    assert decoded(response.json()["image"]).info["parameters"].startswith("a red circle\n")
    assert "Postprocess upscaler: Lanczos" in response.json()["html_info"]


def test_extra_batch_images(app: RunningApp) -> None:
    body = {"imageList": [{"data": b64_png(noise(16, 16, 1)), "name": "a.png"},
                          {"data": b64_png(noise(20, 10, 2), prefix=True), "name": "b.png"}],
            "upscaler_1": "Nearest", "upscaling_resize": 3}
    response = post(app, "extra-batch-images", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"html_info", "images"}
    assert [decoded(text).size for text in answer["images"]] == [(48, 48), (60, 30)]


def test_upscaler_and_face_model_files_are_listed_and_used(app: RunningApp) -> None:
    """Files dropped into A1111's folders while the app runs: listed with what is read from them, and used."""
    from restoration_fixtures import write_face_restorer, write_upscaler

    upscaler = write_upscaler(app.models_dir, "RealESRGAN_x2_tiny", scale=2, folder="RealESRGAN")
    face = write_face_restorer(app.models_dir)
    try:
        listed = get(app, "upscalers")
        assert [item["name"] for item in listed] == [*BUILTIN_UPSCALERS, "RealESRGAN_x2_tiny"]
        assert listed[-1] == {"name": "RealESRGAN_x2_tiny", "model_name": "ESRGAN", "model_url": None, "scale": 2.0,
                              "model_path": str(upscaler.absolute())}
        assert get(app, "realesrgan-models") == [{"name": "RealESRGAN_x2_tiny", "scale": 2,
                                                  "path": str(upscaler.absolute())}]
        assert get(app, "face-restorers") == [{"name": "RestoreFormer", "cmd_dir": str(face.parent.absolute())}]
        picture = noise(20, 16)
        doubled = post(app, "extra-single-image", {"image": b64_png(picture), "upscaler_1": "realesrgan_x2_tiny"})
        assert doubled.status_code == 200, doubled.text
        assert decoded(doubled.json()["image"]).size == (40, 32)
        assert "Postprocess upscaler: RealESRGAN_x2_tiny" in doubled.json()["html_info"]
        missing = post(app, "extra-single-image", {"image": b64_png(picture), "codeformer_visibility": 1})
        assert missing.status_code == 422 and "No CodeFormer face model is installed" in missing.json()["detail"]
        skimage_data = pytest.importorskip("skimage.data")
        astronaut = Image.fromarray(skimage_data.astronaut()).resize((256, 256))
        restored = post(app, "extra-single-image", {"image": b64_png(astronaut), "gfpgan_visibility": 1})
        assert restored.status_code == 200, restored.text
        changed = np.abs(pixels(decoded(restored.json()["image"])) - pixels(astronaut)).max(axis=2) > 0
        assert 0 < changed.mean() < 0.5 and "GFPGAN visibility: 1" in restored.json()["html_info"]
    finally:
        upscaler.unlink()
        face.unlink()


def test_extras_refusals_are_readable(app: RunningApp) -> None:
    picture = b64_png(noise(16, 16))
    unknown = post(app, "extra-single-image", {"image": picture, "upscaler_1": "R-ESRGAN 4x+"})
    assert unknown.status_code == 422 and "upscaler_1" in unknown.json()["detail"]
    assert "Lanczos" in unknown.json()["detail"]
    bad = post(app, "extra-single-image", {"image": "not base64 at all!", "upscaler_1": "Lanczos"})
    assert bad.status_code == 422 and "image" in bad.json()["detail"] and "base64" in bad.json()["detail"]
    not_image = post(app, "extra-single-image", {"image": base64.b64encode(b"hello, world").decode()})
    assert not_image.status_code == 422 and "not an image" in not_image.json()["detail"]
    faces = post(app, "extra-single-image", {"image": picture, "gfpgan_visibility": 0.5})
    assert faces.status_code == 422 and "gfpgan_visibility" in faces.json()["detail"]
    neutral = post(app, "extra-single-image", {"image": picture, "gfpgan_visibility": 0, "codeformer_visibility": 0,
                                               "codeformer_weight": 0.5, "upscale_first": True,
                                               "show_extras_results": False})
    assert neutral.status_code == 200, neutral.text
    huge = post(app, "extra-single-image", {"image": picture, "upscaler_1": "Lanczos", "resize_mode": 1,
                                            "upscaling_resize_w": 9000, "upscaling_resize_h": 64})
    assert huge.status_code == 422 and str(MAX_SIDE) in huge.json()["detail"]
    batch = post(app, "extra-batch-images", {"imageList": [{"data": picture, "name": "ok"}, {"data": "%%%", "name": "x"}],
                                             "upscaler_1": "Lanczos"})
    assert batch.status_code == 422 and "imageList[1]" in batch.json()["detail"]
    assert get(app, "upscalers")  # still serving


# ----- app.engine.resize without the server ------------------------------------------------------

def test_target_sizes() -> None:
    assert target_size((32, 24), scale=2) == (64, 48)
    assert target_size((30, 20), scale=1.5) == (45, 30)
    assert target_size((32, 24), size=(50, 50), crop=True) == (50, 50)
    assert target_size((32, 24), size=(50, 50)) == (67, 50)  # covers 50x50, aspect kept
    assert target_size((24, 32), size=(50, 50)) == (50, 67)
    assert target_size((32, 16), size=(40, 10)) == (40, 20)
    for bad in ({"scale": 0}, {"scale": float("nan")}, {}, {"scale": 2, "size": (8, 8)}, {"size": (0, 8)}):
        with pytest.raises(ValueError):
            target_size((32, 24), **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"up to {MAX_SIDE} pixels a side"):
        target_size((1000, 10), scale=9)


def test_upscale_filters_crop_and_names() -> None:
    picture = noise(10, 8, 3)
    assert np.array_equal(pixels(upscale(picture, "nearest", scale=3)), pixels(picture).repeat(3, 0).repeat(3, 1))
    assert np.array_equal(pixels(upscale(picture, "None", scale=2)), pixels(upscale(picture, "Lanczos", scale=2)))
    assert upscale(picture, "Lanczos", scale=1).tobytes() == picture.tobytes()
    # Crop keeps the centre: a picture with a marked middle column keeps it in the middle.
    wide = Image.new("RGB", (30, 10), (0, 0, 0))
    wide.paste((255, 255, 255), (14, 0, 16, 10))
    square = pixels(upscale(wide, "Nearest", size=(20, 20), crop=True))
    assert square.shape == (20, 20, 3) and square[:, 8:12].min() == 255 and square[:, :6].max() == 0
    assert canonical_upscaler(" LANCZOS ") == "Lanczos"
    with pytest.raises(ValueError, match="available: None, Lanczos, Nearest"):
        upscale(picture, "SwinIR_4x", scale=2)


def test_blend_upscalers() -> None:
    picture = noise(12, 12, 4)
    first = pixels(upscale(picture, "Lanczos", scale=2))
    second = pixels(upscale(picture, "Nearest", scale=2))
    for visibility, expected in ((0.0, first), (1.0, second), (0.25, first * 0.75 + second * 0.25)):
        mixed = pixels(blend_upscalers(picture, "Lanczos", "Nearest", visibility, scale=2))
        assert np.abs(mixed - expected).max() <= 1, visibility
    untouched = blend_upscalers(picture, "None", "Lanczos", 0.5, scale=2)
    assert untouched.size == (12, 12) and untouched is not picture and np.array_equal(pixels(untouched), pixels(picture))
    with pytest.raises(ValueError, match="between 0 and 1"):
        blend_upscalers(picture, "Lanczos", "Nearest", 1.5, scale=2)
    with pytest.raises(ValueError, match="Unknown upscaler"):
        blend_upscalers(picture, "None", "LDSR", 0.5, scale=2)


def test_transparency_and_modes_are_kept_sensibly() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 4, 8))
    out = upscale(rgba, "Nearest", scale=2)
    assert out.mode == "RGBA" and out.size == (16, 16) and out.getpixel((0, 0)) == (0, 0, 255, 255)
    assert out.getchannel("A").getpixel((15, 0)) == 0
    assert upscale(Image.new("L", (4, 4), 128), "Lanczos", scale=2).mode == "RGB"
    palette = Image.new("P", (4, 4))
    assert upscale(palette, "Nearest", scale=2).mode == "RGB"


def test_prompt_styles_list_styles_csv_and_apply_through_txt2img(app: RunningApp) -> None:
    assert get(app, "prompt-styles") == [{"name": "film", "prompt": "film still of {prompt}",
                                          "negative_prompt": "cartoon"}]
    answer = requests.post(f"{app.url}{API}/txt2img", json={"prompt": "a fox", "styles": ["film"], "steps": 2,
                                                            "width": 64, "height": 64}, timeout=120)
    assert answer.status_code == 200, answer.text
    infotext = json.loads(answer.json()["info"])["infotexts"][0]
    assert infotext.startswith("film still of a fox\nNegative prompt: cartoon\n")
    unknown = requests.post(f"{app.url}{API}/txt2img", json={"prompt": "x", "styles": ["nope"], "steps": 2,
                                                             "width": 64, "height": 64}, timeout=120)
    assert unknown.status_code == 422 and "No style called 'nope'" in unknown.text
