"""Bad picture files get a message that names them and what is wrong, the same in the UI and the REST API,
and the server goes on: the decoder (app.engine.image_input) on its own, the API routes that take pictures
(on the real router, in this process), and the UI's picture inputs through Gradio's event processing."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from app.engine.image_input import as_mask, as_rgb, open_picture


# ----- files, good and bad ---------------------------------------------------------------------

def png_bytes(image: Image.Image, pnginfo: PngInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo)
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_by_hand(width: int, height: int, colour_type: int, depth: int, rows: bytes | None) -> bytes:
    """A PNG written chunk by chunk: ``rows`` None leaves out the pixels (a header that costs nothing)."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
    pixels = chunk(b"IDAT", zlib.compress(rows)) if rows is not None else b""
    return b"\x89PNG\r\n\x1a\n" + header + pixels + chunk(b"IEND", b"")


def noise_png(size: int = 64) -> bytes:
    return png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)))


def corrupt_png() -> bytes:
    """A real PNG with part of its compressed pixels scrambled."""
    good = noise_png()
    return good[:100] + bytes(b ^ 0x55 for b in good[100:300]) + good[300:]


SVG = b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">' \
      b'<circle cx="32" cy="32" r="20" fill="red"/></svg>\n'

# name: (the file, what its message says)
BAD_FILES = {
    "corrupt.png": (corrupt_png(), "is a damaged PNG file and cannot be read"),
    "empty.png": (b"", "is an empty file (0 bytes)"),
    "notes.png": (b"shopping list: eggs, milk, flour\n", "is not an image LoRA Studio reads: send a PNG, JPEG"),
    "bomb.png": (png_by_hand(100_000, 100_000, 2, 8, None), "has too many pixels: more than the limit of 89,478,485"),
    "cut.png": (noise_png()[:2000], "is truncated: the PNG file ends before the picture does"),
    "drawing.svg": (SVG, "is an SVG: vector images are not supported; export it as a PNG"),
}


# ----- the decoder -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BAD_FILES)
def test_each_bad_file_gets_its_own_message(name: str, tmp_path: Path) -> None:
    data, message = BAD_FILES[name]
    with pytest.raises(ValueError) as from_bytes:
        open_picture(data, "init_images[0]")
    assert str(from_bytes.value).startswith(f"init_images[0] {message}")
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError) as from_path:
        open_picture(tmp_path / name, "The file 'x'")
    assert str(from_path.value) == str(from_bytes.value).replace("init_images[0]", "The file 'x'")


def test_the_messages_differ() -> None:
    messages = set()
    for data, _ in BAD_FILES.values():
        with pytest.raises(ValueError) as refused:
            open_picture(data, "f")
        messages.add(str(refused.value).split(":")[0])
    assert len(messages) == len(BAD_FILES)


def test_too_many_pixels_names_the_size_and_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 64x64 is over it, not over twice it (PIL's own error)
    with pytest.raises(ValueError, match=r"^mask has too many pixels: 64x64 is 4,096, more than the limit of 3,000"):
        open_picture(noise_png(), "mask")


def test_other_formats_and_unreadable_paths_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="PPM")  # PIL reads it; LoRA Studio does not open it
    with pytest.raises(ValueError, match="is not an image LoRA Studio reads"):
        open_picture(buffer.getvalue(), "image")
    with pytest.raises(ValueError, match="^image could not be read"):
        open_picture(tmp_path / "missing.png", "image")
    good = noise_png()
    scrambled_header = good[:16] + bytes(b ^ 0xFF for b in good[16:29]) + good[29:]
    with pytest.raises(ValueError, match="is a damaged PNG file: its header cannot be read"):
        open_picture(scrambled_header, "image")


def test_sixteen_bit_greyscale_is_scaled_to_eight_bits_with_its_text_kept() -> None:
    levels = np.array([[0, 4096, 32768, 65535]], dtype=np.uint16)
    info = PngInfo()
    info.add_text("parameters", "a grey ramp")
    picture = open_picture(png_bytes(Image.fromarray(levels), info), "image")
    assert picture.mode == "L" and picture.info["parameters"] == "a grey ramp"
    assert np.asarray(picture).tolist() == [[0, 16, 128, 255]]  # PIL's own conversion gives [0, 255, 255, 255]
    assert as_rgb(picture).getpixel((2, 0)) == (128, 128, 128)


def test_sixteen_bit_colour_keeps_its_brightness() -> None:
    row = b"\x00" + struct.pack(">6H", 0x8000, 0x4000, 0xFFFF, 0x0000, 0x1000, 0x8000)  # filter 0, two pixels
    picture = open_picture(png_by_hand(2, 1, 2, 16, row), "image")
    assert as_rgb(picture).getpixel((0, 0)) == (128, 64, 255) and as_rgb(picture).getpixel((1, 0)) == (0, 16, 128)


def test_an_animated_gif_gives_its_first_frame_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with caplog.at_level(logging.WARNING, logger="app.engine.image_input"):
        picture = open_picture(buffer.getvalue(), "init_images[0]")
    assert as_rgb(picture).getpixel((8, 8)) == (255, 0, 0)
    assert "init_images[0] has 3 frames (an animation or a multi-picture file): using its first frame" in caplog.text


def test_photos_are_turned_as_the_camera_recorded() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(buffer, format="JPEG", exif=exif)
    assert open_picture(buffer.getvalue(), "image").size == (20, 40)


def test_transparency_becomes_white_or_the_mask() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.paste((10, 20, 30, 255), (2, 2, 6, 6))
    picture = open_picture(png_bytes(rgba), "image")
    assert as_rgb(picture).getpixel((0, 0)) == (255, 255, 255) and as_rgb(picture).getpixel((3, 3)) == (10, 20, 30)
    assert as_mask(picture).getpixel((0, 0)) == 0 and as_mask(picture).getpixel((3, 3)) == 255


# ----- the REST API, on the real router in this process -------------------------------------------

@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A TestClient on app.api.add_api with an engine without models: every refusal here comes first."""
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from app.api import add_api
    from app.api.context import ApiContext
    from app.api.options import OPTIONS_FILE, OptionsStore, default_options
    from app.engine import Engine, EngineConfig

    work = tmp_path_factory.mktemp("bad-uploads-api")
    engine = Engine(EngineConfig(models_dir=work / "models", outputs_dir=work / "outputs", device="cpu"))
    app = FastAPI()
    add_api(app, ApiContext(engine, OptionsStore(work / "outputs" / OPTIONS_FILE, default_options(None))))
    try:
        with TestClient(app) as client:
            yield client
    finally:
        engine.shutdown()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@pytest.mark.parametrize("name", BAD_FILES)
def test_every_api_route_that_takes_pictures_refuses_bad_ones_readably(api, name: str) -> None:
    data, message = BAD_FILES[name]
    good, bad = data_url(noise_png()), data_url(data)
    requests = [("img2img", {"init_images": [bad]}, "init_images[0]"),
                ("img2img", {"init_images": [good], "mask": bad}, "mask"),
                ("png-info", {"image": bad}, "image"),
                ("extra-single-image", {"image": bad, "upscaler_1": "Lanczos"}, "image"),
                ("extra-batch-images", {"imageList": [{"data": good, "name": "a"}, {"data": bad, "name": "b"}],
                                        "upscaler_1": "Lanczos"}, "imageList[1].data")]
    for route, body, field in requests:
        answer = api.post(f"/sdapi/v1/{route}", json=body)
        assert answer.status_code == 422, (route, answer.text)
        assert answer.json()["detail"].startswith(f"{field} {message}"), (route, answer.json()["detail"])
    assert api.get("/sdapi/v1/samplers").status_code == 200


def test_the_api_reads_sixteen_bit_and_animated_pictures(api) -> None:
    info = PngInfo()
    info.add_text("parameters", "a grey ramp\nSteps: 3, Seed: 1")
    wide = png_bytes(Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)), info)
    answer = api.post("/sdapi/v1/png-info", json={"image": data_url(wide)})
    assert answer.status_code == 200 and answer.json()["info"] == "a grey ramp\nSteps: 3, Seed: 1"
    scaled = api.post("/sdapi/v1/extra-single-image", json={"image": data_url(wide), "upscaler_1": "None"})
    assert scaled.status_code == 200, scaled.text
    picture = Image.open(io.BytesIO(base64.b64decode(scaled.json()["image"])))
    assert picture.convert("L").getpixel((0, 0)) == 128


# ----- the UI: the tabs' picture inputs, through Gradio's event processing (not launched) ------------

@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The real img2img, inpaint and PNG info tabs in a Blocks that is never launched."""
    import gradio as gr

    from app.engine import Engine, EngineConfig
    from app.ui.generate_tab import quick_settings
    from app.ui.img2img_tab import build_img2img_tab
    from app.ui.inpaint_tab import build_inpaint_tab
    from app.ui.png_info_tab import build_png_info_tab

    work = tmp_path_factory.mktemp("bad-uploads-ui")
    engine = Engine(EngineConfig(models_dir=work / "models", outputs_dir=work / "outputs", device="cpu"))
    with gr.Blocks() as blocks:
        quick = quick_settings()
        img2img, inpaint = build_img2img_tab(engine, quick), build_inpaint_tab(engine, quick)
        build_png_info_tab()
    try:
        yield blocks, img2img, inpaint
    finally:
        engine.shutdown()


def run_event(blocks, fn, values: dict) -> dict:
    """Process one event as a request from a client would be: every input through its component."""
    inputs = [values.get(component, component.value) for component in fn.inputs]
    return asyncio.run(blocks.process_api(fn, inputs, explicit_call=True))


def upload(path: Path) -> dict:
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("name", BAD_FILES)
def test_every_picture_input_of_the_ui_names_the_bad_file(ui, name: str, tmp_path: Path) -> None:
    import gradio as gr

    blocks, img2img, inpaint = ui
    data, message = BAD_FILES[name]
    bad, good = tmp_path / name, tmp_path / "good.png"
    bad.write_bytes(data)
    good.write_bytes(noise_png())
    by_api_name = {fn.api_name: fn for fn in blocks.fns.values() if isinstance(fn.api_name, str)}
    size_of = next(fn for fn in blocks.fns.values() if fn.inputs == [img2img.source_image] and fn.fn.__name__ == "_size_of")
    editor, mask = inpaint.source_image, inpaint.inputs["mask"]
    events = [(by_api_name["png_info"], None, "The file"),
              (size_of, img2img.source_image, "The file"),  # the image's change event
              (by_api_name["img2img"], img2img.source_image, "The file"),
              (by_api_name["inpaint"], editor, "The file"),
              (by_api_name["inpaint"], mask, "The mask file")]
    for fn, component, what in events:
        if component is None:  # PNG info's one input
            component = fn.inputs[0]
        values = {component: upload(bad)}
        if component is editor:
            values[editor] = {"background": upload(bad), "layers": [], "composite": None, "id": None}
        elif component is mask:
            values[editor] = {"background": upload(good), "layers": [], "composite": None, "id": None}
        with pytest.raises(gr.Error) as refused:
            run_event(blocks, fn, values)
        assert refused.value.message.startswith(f"{what} '{name}' {message}"), (fn.api_name, refused.value.message)
    text = run_event(blocks, by_api_name["png_info"], {by_api_name["png_info"].inputs[0]: upload(good)})
    assert text["data"][0] == "This image carries no generation parameters."


def test_ui_inputs_convert_what_they_read(ui, tmp_path: Path) -> None:
    from gradio.data_classes import ImageData

    _, img2img, inpaint = ui
    wide = tmp_path / "wide.png"
    wide.write_bytes(png_bytes(Image.fromarray(np.full((16, 24), 32768, dtype=np.uint16))))
    picture = img2img.source_image.preprocess(ImageData(path=str(wide), orig_name="wide.png"))
    assert picture.mode == "RGB" and picture.size == (24, 16) and picture.getpixel((0, 0)) == (128, 128, 128)
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.paste((255, 255, 255, 255), (2, 2, 6, 6))
    (tmp_path / "mask.png").write_bytes(png_bytes(rgba))
    mask = inpaint.inputs["mask"].preprocess(ImageData(path=str(tmp_path / "mask.png"), orig_name="mask.png"))
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 0 and mask.getpixel((3, 3)) == 255  # alpha is the mask
    ui_folder = Path(__file__).resolve().parent.parent / "app" / "ui"
    assert not list(ui_folder.glob("*.pyi"))  # what Gradio writes beside a Component subclass


def test_upload_events_are_queued_so_that_the_browser_shows_their_errors(ui) -> None:
    blocks, img2img, inpaint = ui
    pictures = ([img2img.source_image], [inpaint.source_image], [inpaint.inputs["mask"]])
    on_upload = [fn for fn in blocks.fns.values()
                 if fn.inputs in pictures and fn.fn.__name__ in ("_size_of", "_size_of_editor", "_mask_uploaded")]
    assert len(on_upload) == 3 and all(fn.queue for fn in on_upload)  # Gradio drops an unqueued event's error
