"""A1111's generation API (/sdapi/v1 txt2img, img2img, progress, interrupt, skip, options, png-info):
the field mapping and the image codec on their own, then the launched app driven with ``requests``
and with the real ``webuiapi`` client. No logins here (tests/test_api_access.py covers them)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from app.api.errors import ApiError
from app.api.images import decode_image, encode_png, open_image, text_items
from app.engine import Img2ImgRequest, InpaintRequest, JobResult, Txt2ImgRequest
from app.api.generate_models import StableDiffusionImg2ImgProcessingAPI, StableDiffusionTxt2ImgProcessingAPI
from app.engine.a1111_request import (
    API_DEFAULTS,
    HIRES_FIELDS,
    IGNORED,
    UNSUPPORTED,
    Empty,
    a1111_info,
    checkpoint_name,
    request_from_a1111,
    validate_options,
    vae_name,
)
from app.engine.outputs import read_parameters
from app.engine.registry import ModelRegistry
from app.engine.requests import MAX_SIZE, MAX_STEPS, MIN_SIZE, SIZE_MULTIPLE
from app_server import RunningApp, start_app

MODEL = "tiny-random-sd1"
SMALL = {"width": 64, "height": 64, "steps": 3}
INFO_KEYS = {
    "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
    "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
    "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
    "seed_resize_from_w", "seed_resize_from_h", "denoising_strength", "extra_generation_params",
    "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip", "is_using_inpainting_conditioning",
    "version",
}


# ----- helpers ---------------------------------------------------------------------------------
def png_b64(image: Image.Image, pnginfo: PngInfo | None = None) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def noise_image(size: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def square_mask(size: int = 64, low: int = 26, high: int = 38) -> Image.Image:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[low:high, low:high] = 255
    return Image.fromarray(mask)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    """A models folder with one (empty) checkpoint file and one VAE file: enough for name lookups."""
    (tmp_path / "Stable-diffusion").mkdir()
    (tmp_path / "Stable-diffusion" / "dreamy.safetensors").write_bytes(b"")
    (tmp_path / "VAE").mkdir()
    (tmp_path / "VAE" / "sharp-vae.safetensors").write_bytes(b"")
    return ModelRegistry(tmp_path)


# ----- the mapping, without a server ----------------------------------------------------------
def test_txt2img_fields_take_a1111s_api_defaults() -> None:
    request = request_from_a1111("txt2img", {"prompt": "a cat", "unknown_key": 3}, defaults={})
    assert isinstance(request, Txt2ImgRequest)
    assert (request.prompt, request.steps, request.sampler, request.width, request.height) == ("a cat", 50, "Euler",
                                                                                             512, 512)
    assert (request.save, request.model, request.vae, request.clip_skip, request.emphasis) == (False, None, None, 1,
                                                                                               "Original")
    request.validate()


def test_field_names_map_onto_the_request() -> None:
    fields = {"prompt": "p", "negative_prompt": "n", "seed": 42, "sampler_name": "DPM++ 2M", "scheduler": "karras",
              "steps": 12, "cfg_scale": 4.5, "width": 128, "height": 96, "batch_size": 2, "n_iter": 3,
              "save_images": True}
    request = request_from_a1111("txt2img", fields, defaults={})
    assert (request.prompt, request.negative_prompt, request.seed, request.steps, request.cfg_scale) == ("p", "n", 42,
                                                                                                         12, 4.5)
    assert (request.sampler, request.schedule_type) == ("DPM++ 2M", "Karras")
    assert (request.width, request.height, request.batch_size, request.batch_count, request.save) == (128, 96, 2, 3,
                                                                                                      True)


def test_styles_pass_to_the_engine_by_name() -> None:
    assert request_from_a1111("txt2img", {"styles": ["Cinematic", "Noir"]}, defaults={}).styles == ("Cinematic", "Noir")
    assert request_from_a1111("txt2img", {"styles": None}, defaults={}).styles == ()
    with pytest.raises(ValueError, match="styles must be a list"):
        request_from_a1111("txt2img", {"styles": "Cinematic"}, defaults={})


def test_legacy_and_fused_sampler_names() -> None:
    legacy = request_from_a1111("txt2img", {"sampler_index": "DPM++ 2M Karras"}, defaults={})
    assert (legacy.sampler, legacy.schedule_type) == ("DPM++ 2M", "Karras")
    both = request_from_a1111("txt2img", {"sampler_name": "Euler a", "sampler_index": "DDIM"}, defaults={})
    assert both.sampler == "Euler a"  # sampler_name wins; sampler_index is the legacy fallback
    odd = request_from_a1111("txt2img", {"sampler_name": "Nonsense sampler"}, defaults={})
    with pytest.raises(ValueError, match="Unknown sampler"):  # kept as written, so that validate() names it
        odd.validate()


def test_override_settings_win_over_the_options() -> None:
    options = {"sd_model_checkpoint": "base.safetensors [0123abcd]", "sd_vae": "some-vae.safetensors",
               "CLIP_stop_at_last_layers": 2, "emphasis": "No norm"}
    from_options = request_from_a1111("txt2img", {}, defaults=options)
    assert (from_options.model, from_options.vae, from_options.clip_skip, from_options.emphasis) == (
        "base.safetensors", "some-vae.safetensors", 2, "No norm")
    overridden = request_from_a1111("txt2img", {"override_settings": {
        "sd_model_checkpoint": "other [89abcdef01]", "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1.0,
        "emphasis": "Ignore", "samples_format": "jpg"}}, defaults=options)
    assert (overridden.model, overridden.vae, overridden.clip_skip, overridden.emphasis) == ("other", None, 1, "Ignore")
    assert request_from_a1111("txt2img", {"override_settings": {"sd_vae": "None"}}, defaults=options).vae is None
    with pytest.raises(ValueError, match="CLIP_stop_at_last_layers"):
        request_from_a1111("txt2img", {"override_settings": {"CLIP_stop_at_last_layers": 13}}, defaults={})
    with pytest.raises(ValueError, match="emphasis"):
        request_from_a1111("txt2img", {"override_settings": {"emphasis": "Loud"}}, defaults={})


def test_checkpoint_titles_resolve_through_the_registry(registry: ModelRegistry) -> None:
    assert checkpoint_name("dreamy.safetensors [0123abcd]", registry) == "dreamy.safetensors"
    assert checkpoint_name("dreamy [0123abcd]", registry) == "dreamy.safetensors"
    assert checkpoint_name("dreamy", registry) == "dreamy.safetensors"
    assert checkpoint_name("", registry) is None
    assert vae_name("sharp-vae [abcdef0123]", registry) == "sharp-vae.safetensors"
    assert vae_name("Automatic", registry) is None and vae_name("None", registry) is None
    with pytest.raises(ValueError, match="No checkpoint called 'nightmare.safetensors'"):
        checkpoint_name("nightmare.safetensors [0123abcd]", registry)
    request = request_from_a1111("txt2img", {"override_settings": {"sd_model_checkpoint": "dreamy [0123abcd]"}},
                                 defaults={}, registry=registry)
    assert request.model == "dreamy.safetensors"


def test_options_are_checked_before_they_are_stored(registry: ModelRegistry) -> None:
    changes = {"sd_model_checkpoint": "dreamy.safetensors [0123abcd]", "sd_vae": "None",
               "CLIP_stop_at_last_layers": 2.0, "emphasis": "No norm", "my_own_key": [1, 2]}
    assert validate_options(changes, registry) == {**changes, "CLIP_stop_at_last_layers": 2}
    for bad in ({"sd_model_checkpoint": "nope"}, {"sd_vae": "missing.pt"}, {"CLIP_stop_at_last_layers": 0},
                {"CLIP_stop_at_last_layers": "two"}, {"emphasis": "Shouty"}):
        with pytest.raises(ValueError):
            validate_options(bad, registry)


def test_img2img_and_inpaint_fields() -> None:
    image, mask = noise_image(), square_mask()
    plain = request_from_a1111("img2img", {"init_image": image, "resize_mode": 1, "denoising_strength": 0.4},
                               defaults={})
    assert isinstance(plain, Img2ImgRequest) and not isinstance(plain, InpaintRequest)
    assert (plain.init_image, plain.resize_mode, plain.denoising_strength) == (image, "Crop and resize", 0.4)
    assert request_from_a1111("img2img", {"init_image": image}, defaults={}).denoising_strength == 0.75
    inpaint = request_from_a1111("img2img", {"init_image": image, "mask": mask, "mask_blur": 2, "inpainting_fill": 1,
                                             "inpaint_full_res": False, "inpaint_full_res_padding": 16,
                                             "inpainting_mask_invert": 1, "resize_mode": 2}, defaults={})
    assert isinstance(inpaint, InpaintRequest)
    assert (inpaint.mask, inpaint.mask_blur, inpaint.masked_content, inpaint.inpaint_area, inpaint.masked_padding,
            inpaint.invert_mask, inpaint.resize_mode) == (mask, 2, "original", "Whole picture", 16, True,
                                                          "Resize and fill")
    defaults = request_from_a1111("img2img", {"init_image": image, "mask": mask}, defaults={})
    assert (defaults.masked_content, defaults.inpaint_area, defaults.masked_padding, defaults.mask_blur) == (
        "fill", "Only masked", 0, 4)
    assert request_from_a1111("img2img", {"init_image": image, "mask": mask, "mask_blur_x": 6, "mask_blur_y": 6},
                              defaults={}).mask_blur == 6


@pytest.mark.parametrize("fields, named", [
    ({"inpainting_fill": 2}, "inpainting_fill"),
    ({"inpainting_fill": 3}, "inpainting_fill"),
    ({"resize_mode": 3}, "resize_mode"),
    ({"mask_blur_x": 2, "mask_blur_y": 8}, "mask_blur_x"),
])
def test_img2img_choices_lora_studio_lacks_are_refused(fields: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named) as refused:
        request_from_a1111("img2img", {"init_image": noise_image(), "mask": square_mask(), **fields}, defaults={})
    assert "not supported" in str(refused.value) or "must be" in str(refused.value)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unimplemented_fields_pass_when_neutral_and_are_refused_otherwise(name: str) -> None:
    for neutral in UNSUPPORTED[name].neutral:
        request_from_a1111("txt2img", {name: neutral.example() if isinstance(neutral, Empty) else neutral},
                           defaults={})
    with pytest.raises(ValueError, match=f"^{name} = .* is not supported"):
        request_from_a1111("txt2img", {name: 12345}, defaults={})


@pytest.mark.parametrize("fields", [{"alwayson_scripts": {"ControlNet": {"args": [1]}}},
                                    {"script_args": [0.5]}, {"subseed_strength": 0.3}, {"eta": 0.5}])
def test_lists_objects_and_numbers_that_ask_for_something_are_refused(fields: dict) -> None:
    with pytest.raises(ValueError, match=f"^{next(iter(fields))} = .* is not supported"):
        request_from_a1111("txt2img", fields, defaults={})


def test_what_webuiapi_sends_by_default_is_neutral() -> None:
    sent = {"enable_hr": False, "denoising_strength": 0.7, "firstphase_width": 0, "hr_scale": 2, "hr_upscaler": "Latent",
            "styles": [], "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0, "seed_resize_from_w": 0,
            "restore_faces": False, "tiling": False, "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
            "s_noise": 1, "override_settings": {}, "script_args": [], "script_name": None, "alwayson_scripts": {},
            "sampler_name": "Euler a", "scheduler": "automatic", "image_cfg_scale": 1.5, "initial_noise_multiplier": 1}
    request = request_from_a1111("txt2img", sent, defaults={})
    assert (request.sampler, request.schedule_type) == ("Euler a", "Automatic")


@pytest.mark.parametrize("model", [StableDiffusionTxt2ImgProcessingAPI, StableDiffusionImg2ImgProcessingAPI])
def test_every_api_field_is_read_refused_or_knowingly_ignored(model) -> None:
    read = set(API_DEFAULTS) | {"sampler_name", "mask_blur", "mask", "init_images", "override_settings", "styles",
                                "enable_hr", "tiling", "script_name", "script_args"} | set(HIRES_FIELDS)
    assert set(model.model_fields) <= read | set(UNSUPPORTED) | set(IGNORED)
    assert not (read & set(IGNORED)) and not (set(UNSUPPORTED) & set(IGNORED))
    assert not (read & set(UNSUPPORTED))


def test_info_has_a1111s_keys() -> None:
    request = Txt2ImgRequest(prompt="p", seed=5, steps=3, width=64, height=64, batch_size=2, styles=("s",))
    text = "p, styled\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, Model: m, Mask blur: 4, Version: v9"
    result = JobResult(images=[noise_image(), noise_image()], seeds=[5, 6], infotexts=[text, text],
                       info={"model": "m", "model_hash": "abc"})
    info = a1111_info(request, result, job_timestamp="20260101000000")
    assert set(info) == INFO_KEYS
    assert (info["seed"], info["all_seeds"], info["version"], info["styles"]) == (5, [5, 6], "v9", ["s"])
    assert (info["prompt"], info["all_prompts"]) == ("p", ["p, styled", "p, styled"])  # as asked, as run
    assert info["extra_generation_params"] == {"Mask blur": "4"}
    empty = a1111_info(request, JobResult(), job_timestamp="0")  # an interrupted job
    assert (empty["all_seeds"], empty["infotexts"], empty["seed"]) == ([], [], 5)


# ----- the image codec -------------------------------------------------------------------------
def test_images_decode_with_or_without_a_data_prefix() -> None:
    image = noise_image(16)
    bare = png_b64(image)
    for text in (bare, "data:image/png;base64," + bare, bare[:40] + "\n" + bare[40:], bare.rstrip("=")):
        assert np.array_equal(np.asarray(decode_image("init_images[0]", text)), np.asarray(image))
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    rgba.paste((255, 255, 255, 255), (4, 4, 12, 12))
    mask = decode_image("mask", png_b64(rgba), mode="L")  # a transparent mask: its alpha is the mask
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 0 and mask.getpixel((8, 8)) == 255
    assert decode_image("init_images[0]", png_b64(rgba)).getpixel((0, 0)) == (255, 255, 255)  # onto white


@pytest.mark.parametrize("data, message", [
    ("not base64 at all!", "init_images[0] is not valid base64"),
    (base64.b64encode(b"hello, not a picture").decode(), "init_images[0] is not an image"),
    (png_b64(Image.new("RGB", (1, 1))), "init_images[0] is 1x1 pixels"),
    ("data:image/png,rawbytes", "init_images[0] is a data: URL that is not base64"),
    ("", "init_images[0] must be a base64-encoded image"),
])
def test_bad_images_are_refused_naming_the_field(data: str, message: str) -> None:
    with pytest.raises(ApiError) as refused:
        decode_image("init_images[0]", data)
    assert refused.value.status_code == 422 and refused.value.message.startswith(message)


def test_too_many_pixels_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = png_b64(Image.new("RGB", (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ApiError, match="too many pixels"):
        decode_image("mask", data)


def test_encoded_pngs_carry_the_parameters_chunk() -> None:
    encoded = encode_png(noise_image(16), "a cat\nSteps: 3, Seed: 1, Size: 16x16")
    assert not encoded.startswith("data:")
    with decoded(encoded) as image:
        assert read_parameters(image) == "a cat\nSteps: 3, Seed: 1, Size: 16x16"
    info = PngInfo()
    info.add_text("parameters", "x")
    info.add_text("Software", "paint")
    assert text_items(open_image("image", png_b64(noise_image(16), info))) == ("x", {"Software": "paint"})


# ----- the launched app ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    running = start_app(tmp_path_factory.mktemp("api-generate"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(app: RunningApp) -> str:
    return app.url + "/sdapi/v1"


def post(api: str, route: str, **fields) -> requests.Response:
    return requests.post(f"{api}/{route}", json=fields, timeout=120)


def new_pngs(app: RunningApp, before: set[Path]) -> list[Path]:
    return sorted(set(app.outputs_dir.rglob("*.png")) - before)


def test_txt2img_answers_images_parameters_and_info_matching_the_saved_files(app: RunningApp, api: str) -> None:
    before = set(app.outputs_dir.rglob("*.png"))
    response = post(api, "txt2img", prompt="a red circle", seed=123, batch_size=2, save_images=True, **SMALL)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"} and len(body["images"]) == 2
    assert body["parameters"]["prompt"] == "a red circle" and body["parameters"]["sampler_index"] == "Euler"
    assert body["parameters"]["n_iter"] == 1 and body["parameters"]["cfg_scale"] == 7.0  # defaults filled
    info = json.loads(body["info"])
    assert set(info) >= INFO_KEYS
    assert info["all_seeds"] == [123, 124] and info["seed"] == 123 and info["sd_model_name"] == MODEL
    saved = new_pngs(app, before)
    assert [p.name.split("-", 1)[1] for p in saved] == ["123.png", "124.png"]
    assert [read_parameters(p) for p in saved] == info["infotexts"]
    for encoded, text, path in zip(body["images"], info["infotexts"], saved):
        assert not encoded.startswith("data:")
        with decoded(encoded) as image, Image.open(path) as on_disk:
            assert image.size == (64, 64) and read_parameters(image) == text
            assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(on_disk.convert("RGB")))
    again = post(api, "txt2img", prompt="a red circle", seed=123, batch_size=2, **SMALL).json()
    for repeated, original in zip(again["images"], body["images"]):
        with decoded(repeated) as repeat, decoded(original) as first:
            assert np.array_equal(np.asarray(repeat), np.asarray(first))  # same seed, same pixels
    assert new_pngs(app, before) == saved  # save_images defaults to False


def test_override_settings_reach_the_infotext(api: str) -> None:
    body = post(api, "txt2img", prompt="a (blue:1.2) square", seed=3, sampler_name="DPM++ 2M Karras",
                override_settings={"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": MODEL + " [0123456789]"},
                send_images=False, **SMALL).json()
    info = json.loads(body["info"])
    assert body["images"] == [] and info["clip_skip"] == 2
    (text,) = info["infotexts"]
    assert "Clip skip: 2" in text and "Sampler: DPM++ 2M, Schedule type: Karras" in text
    assert "Clip skip" not in json.loads(post(api, "txt2img", seed=3, **SMALL).json()["info"])["infotexts"][0]


def test_styles_from_styles_csv_apply(app: RunningApp, api: str) -> None:
    (app.models_dir / "styles.csv").write_text('name,prompt,negative_prompt\nInked,"{prompt}, ink drawing",smudges\n')
    body = post(api, "txt2img", prompt="a fox", negative_prompt="blur", styles=["Inked"], seed=4, send_images=False,
                **SMALL)
    assert body.status_code == 200, body.text
    info = json.loads(body.json()["info"])
    assert (info["prompt"], info["all_prompts"], info["all_negative_prompts"], info["styles"]) == (
        "a fox", ["a fox, ink drawing"], ["blur, smudges"], ["Inked"])
    assert info["infotexts"][0].startswith("a fox, ink drawing\nNegative prompt: blur, smudges\n")
    refused = post(api, "txt2img", styles=["Nope"], **SMALL)
    assert refused.status_code == 422 and "No style called 'Nope'" in refused.json()["detail"]


def test_img2img_with_a_data_url(api: str) -> None:
    source = "data:image/png;base64," + png_b64(noise_image(96))
    response = post(api, "img2img", init_images=[source], prompt="a wall", denoising_strength=0.5, seed=1, **SMALL)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["parameters"]["init_images"] is None  # echoed only with include_init_images
    with decoded(body["images"][0]) as image:
        assert image.size == (64, 64)
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.5 and "Denoising strength: 0.5" in info["infotexts"][0]
    echoed = post(api, "img2img", init_images=[source], include_init_images=True, send_images=False, **SMALL).json()
    assert echoed["parameters"]["init_images"] == [source]


def test_inpainting_changes_only_the_masked_area(api: str) -> None:
    original = noise_image(64, seed=5)
    body = post(api, "img2img", init_images=[png_b64(original)], mask=png_b64(square_mask()), prompt="a hole",
                denoising_strength=1.0, seed=2, **SMALL).json()
    with decoded(body["images"][0]) as result:
        out = np.asarray(result.convert("RGB")).astype(int)
    before = np.asarray(original).astype(int)
    band = 12  # mask blur 4 spreads the mask this far at most
    outside = np.ones((64, 64), dtype=bool)
    outside[26 - band:38 + band, 26 - band:38 + band] = False
    assert np.array_equal(out[outside], before[outside])
    assert np.abs(out[26:38, 26:38] - before[26:38, 26:38]).mean() > 10
    info = json.loads(body["info"])
    assert "Inpaint area: Only masked" in info["infotexts"][0] and "Masked content: fill" in info["infotexts"][0]


def test_options_round_trip_and_are_saved(app: RunningApp, api: str) -> None:
    options = requests.get(f"{api}/options", timeout=30).json()
    assert options["sd_model_checkpoint"] == MODEL and options["CLIP_stop_at_last_layers"] == 1
    answer = post(api, "options", my_client_setting={"a": [1, 2]}, sd_vae="None", emphasis="No norm")
    assert answer.status_code == 200 and answer.json() is None
    after = requests.get(f"{api}/options", timeout=30).json()
    assert after["my_client_setting"] == {"a": [1, 2]} and after["emphasis"] == "No norm"
    saved = json.loads((app.outputs_dir / ".lora-studio" / "options.json").read_text())
    assert saved["my_client_setting"] == {"a": [1, 2]}
    for bad, message in (({"sd_model_checkpoint": "no-such-model.safetensors [0123abcd]"}, "No checkpoint called"),
                         ({"sd_vae": "missing.pt"}, "No VAE called"),
                         ({"CLIP_stop_at_last_layers": 13}, "CLIP_stop_at_last_layers must be between 1 and 12"),
                         ({"emphasis": "Shouty"}, "Unknown emphasis")):
        refused = post(api, "options", **bad)
        assert refused.status_code == 422 and message in refused.json()["detail"]
    assert requests.get(f"{api}/options", timeout=30).json() == after
    post(api, "options", emphasis="Original")


def test_png_info_reads_a_generated_image(api: str) -> None:
    body = post(api, "txt2img", prompt="a green, triangle", negative_prompt="blur", seed=77, **SMALL).json()
    text = json.loads(body["info"])["infotexts"][0]
    answer = post(api, "png-info", image="data:image/png;base64," + body["images"][0]).json()
    assert answer["info"] == text and answer["items"] == {}
    params = answer["parameters"]
    assert (params["Prompt"], params["Negative prompt"], params["Seed"], params["Size-1"]) == ("a green, triangle",
                                                                                              "blur", "77", "64")
    assert params["Clip skip"] == "1"  # A1111's defaults filled in
    plain = post(api, "png-info", image=png_b64(noise_image(16))).json()
    assert plain["info"] == "" and plain["items"] == {}


def slow_job(api: str, results: list, **fields) -> threading.Thread:
    """A txt2img that runs for minutes unless stopped, in a thread; its response lands in ``results``."""
    payload = {"prompt": "slow", "seed": 1, "width": 64, "height": 64, "steps": 150, "n_iter": 100, **fields}
    thread = threading.Thread(target=lambda: results.append(requests.post(f"{api}/txt2img", json=payload, timeout=300)))
    thread.start()
    return thread


def wait_for_steps(api: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = requests.get(f"{api}/progress", timeout=30).json()
        if progress["state"]["sampling_step"] >= 3:
            return progress
        time.sleep(0.2)
    raise AssertionError("the slow job never reported sampling steps")


def test_progress_follows_the_callers_job_and_interrupt_stops_it(api: str) -> None:
    idle = requests.get(f"{api}/progress", timeout=30).json()
    assert (idle["progress"], idle["state"]["job_count"], idle["current_image"]) == (0, 0, None)
    results: list[requests.Response] = []
    thread = slow_job(api, results)
    try:
        progress = wait_for_steps(api)
        state = progress["state"]
        assert 0 < progress["progress"] < 0.05 and progress["eta_relative"] > 0
        assert (state["sampling_steps"], state["job_count"], state["job_no"], state["interrupted"]) == (150, 100, 0,
                                                                                                        False)
        assert len(state["job_timestamp"]) == 14 and progress["textinfo"]
        with decoded(progress["current_image"]) as preview:  # the live preview (every 2 steps)
            assert preview.size[0] > 0
        skipped = requests.get(f"{api}/progress", params={"skip_current_image": "true"}, timeout=30).json()
        assert skipped["current_image"] is None and skipped["state"]["sampling_step"] >= 3
    finally:
        assert requests.post(f"{api}/interrupt", timeout=30).json() == {}
        thread.join(120)
    (response,) = results
    assert response.status_code == 200 and response.json()["images"] == []
    assert requests.get(f"{api}/progress", timeout=30).json()["state"]["job_count"] == 0


def test_skip_drops_the_batch_being_drawn(api: str) -> None:
    """A1111's Skip: the batch being drawn is dropped and the job goes on with its next one."""
    results: list[requests.Response] = []
    thread = slow_job(api, results, seed=2, n_iter=2, steps=40)
    try:
        wait_for_steps(api)
    finally:
        assert requests.post(f"{api}/skip", timeout=30).json() == {}
        thread.join(240)
    assert results[0].status_code == 200
    assert json.loads(results[0].json()["info"])["all_seeds"] == [3]  # the first batch (seed 2) was skipped
    assert len(results[0].json()["images"]) == 1


BAD_REQUESTS = [
    ("img2img", {"init_images": ["!!! not base64 !!!"]}, "init_images[0] is not valid base64"),
    ("img2img", {"init_images": [base64.b64encode(b"GIF? no, text").decode()]}, "init_images[0] is not an image"),
    ("img2img", {"init_images": [png_b64(Image.new("RGB", (1, 1)))]}, "1x1"),
    ("img2img", {"init_images": [png_b64(noise_image())], "mask": "@@@"}, "mask is not valid base64"),
    ("img2img", {}, "init_images"),
    ("img2img", {"init_images": [png_b64(noise_image())], "mask": png_b64(Image.new("L", (64, 64)))},
     "The mask is empty"),  # found by the job on the worker: a failed job is a 422 too
    ("txt2img", {"width": 63}, "multiple of 8"),
    ("txt2img", {"steps": 0}, "greater than or equal to 1"),
    ("txt2img", {"sampler_name": "Warp drive"}, "Unknown sampler"),
    ("txt2img", {"override_settings": {"sd_model_checkpoint": "missing.safetensors [0123abcd]"}}, "No checkpoint"),
    ("txt2img", {"enable_hr": True, "hr_upscaler": "Magic"}, "Hires upscaler: Unknown upscaler 'Magic'"),
    ("txt2img", {"enable_hr": True, "hr_scale": 9}, "Hires upscale"),
    ("txt2img", {"restore_faces": True}, "restore_faces"),
    ("txt2img", {"prompt": "<lora:not-there:1>"}, "not-there"),
]


@pytest.mark.parametrize("route, fields, message", BAD_REQUESTS)
def test_bad_input_is_a_readable_4xx(api: str, route: str, fields: dict, message: str) -> None:
    response = post(api, route, **{**SMALL, **fields})
    assert 400 <= response.status_code < 500, response.text
    assert message in response.text and "detail" in response.json()


def test_the_openapi_schema_shows_the_engines_limits(app: RunningApp) -> None:
    schema = requests.get(app.url + "/openapi.json", timeout=30).json()
    fields = schema["components"]["schemas"]["StableDiffusionTxt2ImgProcessingAPI"]["properties"]
    assert (fields["steps"]["maximum"], fields["width"]["minimum"], fields["width"]["maximum"]) == (MAX_STEPS, MIN_SIZE,
                                                                                                   MAX_SIZE)
    assert fields["width"]["multipleOf"] == SIZE_MULTIPLE and fields["steps"]["default"] == 50
    assert {"/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/progress", "/sdapi/v1/interrupt", "/sdapi/v1/skip",
            "/sdapi/v1/options", "/sdapi/v1/png-info"} <= set(schema["paths"])


def test_oversized_bodies_are_refused_and_the_server_lives_on(api: str) -> None:
    big = b'{"prompt": "' + b"x" * (51 * 1024 * 1024) + b'"}'
    response = requests.post(f"{api}/txt2img", data=big, headers={"Content-Type": "application/json"}, timeout=120)
    assert response.status_code == 413 and "50 MB" in response.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        yield b'{"prompt": "'
        for _ in range(52):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    streamed = requests.post(f"{api}/img2img", data=chunks(), headers={"Content-Type": "application/json"}, timeout=120)
    assert streamed.status_code == 413
    alive = post(api, "txt2img", seed=9, **SMALL)
    assert alive.status_code == 200 and len(alive.json()["images"]) == 1


# ----- a real client ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(app: RunningApp):
    import webuiapi

    port = int(app.url.rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=3)


def test_webuiapi_txt2img_img2img_and_png_info(client) -> None:
    first = client.txt2img(prompt="a lighthouse", seed=11, width=64, height=64)
    assert first.image.size == (64, 64) and first.info["all_seeds"] == [11]
    mask = square_mask()
    inpainted = client.img2img(images=[first.image], mask_image=mask, prompt="a boat", seed=12, width=64, height=64,
                               denoising_strength=0.9)
    assert inpainted.image.size == (64, 64) and "Mask blur: 4" in inpainted.info["infotexts"][0]
    outside = np.asarray(mask) == 0
    outside[14:50, 14:50] = False
    assert np.array_equal(np.asarray(inpainted.image.convert("RGB"))[outside],
                          np.asarray(first.image.convert("RGB"))[outside])
    read = client.png_info(first.image)
    assert read.info == first.info["infotexts"][0] and read.parameters["Seed"] == "11"


def test_webuiapi_models_progress_and_interrupt(client, api: str) -> None:
    titles = client.util_get_model_names()
    assert any(title.startswith(MODEL) for title in titles)
    client.util_set_model(MODEL)
    assert client.util_get_current_model().startswith(MODEL)
    assert isinstance(client.get_loras(), list)
    assert client.get_progress()["state"]["job_count"] == 0
    results: list[requests.Response] = []
    thread = slow_job(api, results, seed=4)
    try:
        wait_for_steps(api)
        assert client.get_progress()["state"]["sampling_step"] >= 3
    finally:
        assert client.interrupt() == {}
        thread.join(120)
    assert results[0].status_code == 200


def test_hires_fix_through_the_api(api: str) -> None:
    answer = post(api, "txt2img", **{**SMALL, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Lanczos",
                                     "hr_second_pass_steps": 4, "denoising_strength": 0.5, "seed": 6})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    picture = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert picture.size == (SMALL["width"] * 2, SMALL["height"] * 2)
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.5 and info["width"] == SMALL["width"]
    assert "Hires upscale: 2" in info["infotexts"][0] and "Hires upscaler: Lanczos" in info["infotexts"][0]
