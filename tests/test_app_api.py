"""The launched app driven as a client would: gradio_client on every api_name, and what the server
lets a browser fetch or upload. The app runs as ``launch.py`` would start it, on the placeholder model."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.engine.outputs import read_parameters
from app_server import RunningApp, start_app

MODEL = "tiny-random-sd1"
STYLES_CSV = '''name,prompt,negative_prompt
cinematic,"cinematic still of {prompt}, film grain","cartoon"
quality,"masterpiece, best quality","lowres"
'''


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("app")
    (workdir / "models").mkdir()
    (workdir / "models" / "styles.csv").write_text(STYLES_CSV, encoding="utf-8")  # there when the app starts
    running = start_app(workdir, "--max-upload-mb", "1")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(app: RunningApp):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def settings(prompt: str, seed: int = 7, steps: int = 4, vae: str = "Automatic", clip_skip: int = 1,
             emphasis: str = "Original", styles: list[str] | None = None, tiling: bool = False,
             negative_prompt: str = "", restore_faces: bool = False) -> list:
    """The 18 shared arguments: the 13 of the tab, the page's quick settings (clip skip, emphasis), then the
    tab's styles, tiling and restore faces."""
    return [MODEL, vae, prompt, negative_prompt, "Euler a", "Automatic", steps, 7, 64, 64, seed, 1, 1, clip_skip,
            emphasis, styles or [], tiling, restore_faces]


def gallery_paths(result: tuple) -> list[Path]:
    return [Path(item["image"]) for item in result[0]]


def saved_pngs(app: RunningApp, folder: str) -> list[Path]:
    return sorted((app.outputs_dir / folder).rglob("*.png"))


def test_txt2img_returns_the_saved_image_with_its_parameters(app: RunningApp, client) -> None:
    before = saved_pngs(app, "txt2img-images")
    result = client.predict(*settings("a red circle", seed=123), api_name="/txt2img")
    (path,) = gallery_paths(result)
    info = result[3]
    assert info.startswith("a red circle\nSteps: 4, Sampler: Euler a") and "Seed: 123" in info
    assert f"Model: {MODEL}" in info and "Size: 64x64" in info
    new = [p for p in saved_pngs(app, "txt2img-images") if p not in before]
    assert len(new) == 1 and new[0].name.endswith("-123.png")
    with Image.open(path) as served, Image.open(new[0]) as saved:
        assert served.size == (64, 64)
        assert np.array_equal(np.asarray(served.convert("RGB")), np.asarray(saved.convert("RGB")))
        assert read_parameters(saved) == info
    again = client.predict(*settings("a red circle", seed=123), api_name="/txt2img")
    with Image.open(gallery_paths(again)[0]) as repeat, Image.open(path) as first:
        assert np.array_equal(np.asarray(repeat), np.asarray(first))  # same seed, same pixels


def test_quick_settings_reach_the_job_and_its_parameters(client) -> None:
    result = client.predict(*settings("a (red:1.3) circle", seed=11, clip_skip=2, emphasis="No norm"),
                            api_name="/txt2img")
    info = result[3]
    assert info.startswith("a (red:1.3) circle\n") and "Clip skip: 2" in info and "Emphasis: No norm" in info
    assert len(gallery_paths(result)) == 1
    api = client.view_api(return_format="dict", print_info=False)
    names = [p["parameter_name"] for p in api["named_endpoints"]["/txt2img"]["parameters"]]
    assert names[:3] == ["sd_model_checkpoint", "sd_vae", "prompt"]  # the A1111 field each control stands for
    assert names[11:18] == ["n_iter", "batch_size", "CLIP_stop_at_last_layers", "emphasis", "styles", "tiling",
                            "restore_faces"]
    assert names[18] == "enable_hr"  # hires fix after the shared 18
    assert not [name for name in api["named_endpoints"] if name.startswith("/lambda")]  # UI-only events stay hidden


def hires(enable: bool = True, upscaler: str = "Latent", steps: int = 0, denoising: float = 0.7, scale: float = 2,
          resize_x: int = 0, resize_y: int = 0, checkpoint: str = "Use same checkpoint",
          sampler: str = "Use same sampler", prompt: str = "", negative_prompt: str = "") -> list:
    """The 11 hires fix arguments /txt2img takes after the shared 18 (optional: Enable defaults to off)."""
    return [enable, upscaler, steps, denoising, scale, resize_x, resize_y, checkpoint, sampler, prompt, negative_prompt]


def test_hires_fix_through_the_api(client) -> None:
    api = client.view_api(return_format="dict", print_info=False)
    hires_params = api["named_endpoints"]["/txt2img"]["parameters"][18:]
    assert [p["parameter_name"] for p in hires_params][:2] == ["enable_hr", "hr_upscaler"] and len(hires_params) == 12
    assert all(p["parameter_has_default"] for p in hires_params)
    result = client.predict(*settings("a red circle", seed=21), *hires(upscaler="Lanczos", steps=4, denoising=0.5),
                            api_name="/txt2img")
    (path,) = gallery_paths(result)
    with Image.open(path) as image:
        assert image.size == (128, 128)
    info = result[3]
    assert "Size: 64x64" in info and "Denoising strength: 0.5" in info
    assert "Hires upscale: 2" in info and "Hires steps: 4" in info and "Hires upscaler: Lanczos" in info
    resized = client.predict(*settings("a red circle", seed=21), *hires(resize_x=96, resize_y=80), api_name="/txt2img")
    with Image.open(gallery_paths(resized)[0]) as image:
        assert image.size == (96, 80)
    assert "Hires resize: 96x80" in resized[3]


def test_styles_and_tiling_through_the_api(client) -> None:
    result = client.predict(*settings("a red fox", seed=3, styles=["cinematic", "quality"], negative_prompt="blurry"),
                            api_name="/txt2img")
    info = result[3]
    assert info.startswith("cinematic still of a red fox, film grain, masterpiece, best quality\n"
                           "Negative prompt: blurry, cartoon, lowres\n")  # the prompt as run, as A1111 saves it
    assert "Tiling" not in info and len(gallery_paths(result)) == 1
    api = client.view_api(return_format="dict", print_info=False)
    for endpoint in ("/txt2img", "/img2img", "/inpaint"):
        names = [p["parameter_name"] for p in api["named_endpoints"][endpoint]["parameters"]]
        assert names[15:17] == ["styles", "tiling"], endpoint
    tiled = client.predict(*settings("a red fox", seed=3, tiling=True), api_name="/txt2img")
    assert "Tiling: True" in tiled[3] and tiled[3].startswith("a red fox\n")


def test_styles_added_while_running_are_used_and_unknown_ones_are_readable_errors(app: RunningApp, client) -> None:
    from gradio_client.exceptions import AppError

    path = app.models_dir / "styles.csv"
    path.write_text(STYLES_CSV + 'late,"{prompt}, added later",\n', encoding="utf-8")
    try:
        result = client.predict(*settings("a fox", styles=["late"]), api_name="/txt2img")
        assert result[3].startswith("a fox, added later\n")
        with pytest.raises(AppError, match="No style called 'nope'"):
            client.predict(*settings("x", styles=["nope"]), api_name="/txt2img")
    finally:
        path.write_text(STYLES_CSV, encoding="utf-8")


def test_img2img_and_inpaint_through_the_api(app: RunningApp, client, tmp_path: Path) -> None:
    from gradio_client import handle_file

    rng = np.random.default_rng(0)
    picture = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(picture)
    result = client.predict(*settings("a blue square"), handle_file(str(picture)), 0.5, "Just resize",
                            api_name="/img2img")
    assert "Denoising strength: 0.5" in result[3] and len(gallery_paths(result)) == 1

    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[8:24, 8:40] = 255
    mask_file = tmp_path / "mask.png"
    Image.fromarray(mask, mode="L").save(mask_file)
    editor = {"background": handle_file(str(picture)), "layers": [], "composite": None, "id": None}
    result = client.predict(*settings("a green triangle"), editor, handle_file(str(mask_file)), 4, 32, "original",
                            "Whole picture", 0.9, api_name="/inpaint")
    with Image.open(gallery_paths(result)[0]) as out:
        after = np.asarray(out.convert("RGB")).astype(int)
    before = np.asarray(Image.open(picture).convert("RGB")).astype(int)
    far = np.ones((64, 64), dtype=bool)
    far[0:36, 0:52] = False  # the mask grown by more than its blur
    assert np.array_equal(after[far], before[far])
    assert np.abs(after[8:24, 8:40] - before[8:24, 8:40]).mean() > 10


def test_png_info_reads_what_txt2img_wrote(app: RunningApp, client) -> None:
    from gradio_client import handle_file

    client.predict(*settings("png info check", seed=5), api_name="/txt2img")
    path = saved_pngs(app, "txt2img-images")[-1]
    text, fields = client.predict(handle_file(str(path)), api_name="/png_info")
    assert text.startswith("png info check\n") and fields["Seed"] == "5" and fields["Model"] == MODEL


def test_a_vae_added_while_running_is_used_by_name(app: RunningApp, client) -> None:
    import shutil

    vae_dir = app.models_dir / "VAE" / "my-vae"
    shutil.copytree(app.models_dir / "Stable-diffusion" / MODEL / "vae", vae_dir)
    result = client.predict(*settings("with a vae", vae="my-vae"), api_name="/txt2img")
    assert "VAE: my-vae" in result[3] and "VAE hash: " in result[3]


def test_a_lora_tag_in_the_prompt_is_applied_and_recorded(app: RunningApp, client) -> None:
    from lora_fixtures import random_layers, write_kohya

    from app.engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1", seed=0)  # the placeholder's architecture
    write_kohya(random_layers(pipe, 4, 4.0, seed=3, text_encoder=False), app.models_dir / "Lora" / "api-style.safetensors",
                "sd1", pipe.unet.config.layers_per_block)
    plain = client.predict(*settings("a red circle", seed=9), api_name="/txt2img")
    styled = client.predict(*settings("a red circle <lora:api-style:0.8>", seed=9), api_name="/txt2img")
    again = client.predict(*settings("a red circle", seed=9), api_name="/txt2img")
    with Image.open(gallery_paths(plain)[0]) as a, Image.open(gallery_paths(styled)[0]) as b, \
            Image.open(gallery_paths(again)[0]) as c:
        base, lora, after = (np.asarray(i.convert("RGB")).astype(int) for i in (a, b, c))
    assert np.abs(lora - base).mean() > 3 and np.array_equal(after, base)
    assert styled[3].startswith("a red circle <lora:api-style:0.8>\n") and 'Lora hashes: "api-style: ' in styled[3]


def test_bad_requests_are_readable_errors_and_the_app_keeps_working(client) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="No checkpoint called 'nope'"):
        client.predict(*(["nope"] + settings("x")[1:]), api_name="/txt2img")
    with pytest.raises(AppError, match="needs an input image"):
        client.predict(*settings("x"), None, 0.5, "Just resize", api_name="/img2img")
    assert len(gallery_paths(client.predict(*settings("still fine"), api_name="/txt2img"))) == 1


def test_bad_picture_files_are_named_and_the_app_keeps_working(client, tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    text_file = tmp_path / "notes.png"
    text_file.write_text("not a picture at all\n")
    with pytest.raises(AppError, match="The file 'notes.png' is not an image LoRA Studio reads"):
        client.predict(*settings("x"), handle_file(str(text_file)), 0.5, "Just resize", api_name="/img2img")
    cut = tmp_path / "cut.png"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
    cut.write_bytes(buffer.getvalue()[:2000])
    with pytest.raises(AppError, match="The file 'cut.png' is truncated"):
        client.predict(handle_file(str(cut)), api_name="/png_info")
    assert len(gallery_paths(client.predict(*settings("still fine"), api_name="/txt2img"))) == 1


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_files_are_served_from_outputs_only(app: RunningApp, client) -> None:
    client.predict(*settings("served"), api_name="/txt2img")
    output = saved_pngs(app, "txt2img-images")[-1]
    weights = next((app.models_dir / "Stable-diffusion" / MODEL / "unet").glob("*.safetensors"))
    assert _status(f"{app.url}/gradio_api/file={output}") == 200
    assert _status(f"{app.url}/gradio_api/file={weights}") == 403
    assert _status(f"{app.url}/gradio_api/file={app.models_dir / 'Stable-diffusion' / MODEL / 'model_index.json'}") == 403
    assert _status(f"{app.url}/gradio_api/file=/etc/hostname") == 403
    assert _status(f"{app.url}/gradio_api/file={app.log_path}") == 403
    cache = app.outputs_dir / ".gradio-cache"
    assert any(cache.rglob("*.png")), "uploads and results are cached under outputs/"


def test_uploads_over_the_limit_are_refused(app: RunningApp, tmp_path: Path) -> None:
    import httpx

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(2 * 1024 * 1024))
    small = tmp_path / "small.png"
    Image.new("RGB", (8, 8)).save(small)
    with httpx.Client(timeout=30) as http:
        refused = http.post(f"{app.url}/gradio_api/upload", files={"files": big.open("rb")})
        accepted = http.post(f"{app.url}/gradio_api/upload", files={"files": small.open("rb")})
    assert refused.status_code == 413 and "1" in refused.text
    assert accepted.status_code == 200
    assert Path(accepted.json()[0]).resolve().is_relative_to((app.outputs_dir / ".gradio-cache").resolve())
