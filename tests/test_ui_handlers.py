"""UI helpers that turn browser values into engine inputs (no browser needed)."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from app.ui.inpaint_tab import mask_from_editor
from app.ui.png_info_tab import read_png_info
from app.ui.send_to import infotext_fields


def test_painted_layers_become_the_mask() -> None:
    background = Image.new("RGBA", (40, 30), (10, 20, 30, 255))
    layer = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (5, 5, 15, 12))
    picture, mask = mask_from_editor({"background": background, "layers": [layer], "composite": background})
    assert picture.mode == "RGB" and picture.size == (40, 30)
    painted = np.asarray(mask) > 0
    assert painted.sum() == 10 * 7 and painted[5:12, 5:15].all()
    assert mask_from_editor(None) == (None, None)


def test_png_info_reads_parameters_and_fills_fields(tmp_path) -> None:
    text = "a cat, sitting\nNegative prompt: dog\nSteps: 12, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 99, Size: 96x64, Model: tiny"
    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png", pnginfo=info)
    read, fields = read_png_info(Image.open(tmp_path / "a.png"))
    assert read == text and fields["Seed"] == "99" and fields["Size-1"] == "96"
    fields = infotext_fields(read)
    assert fields == {"sd_model_checkpoint": "tiny", "sd_vae": "Automatic", "prompt": "a cat, sitting",
                      "negative_prompt": "dog", "sampler_name": "DPM++ 2M", "scheduler": "Karras", "steps": 12,
                      "cfg_scale": 5.5, "width": 96, "height": 64, "seed": 99, "CLIP_stop_at_last_layers": 1,
                      "emphasis": "Original", "styles": [], "tiling": False, "restore_faces": False, "enable_hr": False,
                      "sd_upscale": False,
                      "inpainting_mask_invert": 0, "inpaint_full_res": False, "inpaint_full_res_padding": 32,
                      "inpainting_fill": 1, "hr_resize_x": 0, "hr_resize_y": 0, "hr_sampler_name": "Use same sampler",
                      "hr_scheduler": "Use same scheduler", "hr_checkpoint_name": "Use same checkpoint",
                      "hr_prompt": "", "hr_negative_prompt": ""}  # A1111's defaults for what is not written
    assert read_png_info(Image.new("RGB", (4, 4)))[0] == "This image carries no generation parameters."


def test_sending_nothing_is_a_readable_error() -> None:
    import gradio as gr

    with pytest.raises(gr.Error):
        infotext_fields("")


def test_lora_picker_inserts_a_tag_once() -> None:
    from app.ui.lora_picker import with_tag

    assert with_tag("a cat", "my style", 0.8) == "a cat <lora:my style:0.8>"
    assert with_tag("", "x", 1.0) == "<lora:x:1>"
    assert with_tag("a cat <lora:x:1>", "x", 1.0) == "a cat <lora:x:1>"
    assert with_tag("a cat", None) == "a cat"


def test_only_edited_captions_become_overrides(tmp_path) -> None:
    import pandas as pd

    from app.ui.train_tab import caption_overrides, caption_table

    for name, caption in (("a.png", "first"), ("b.png", "second")):
        Image.new("RGB", (64, 64)).save(tmp_path / name)
        (tmp_path / name).with_suffix(".txt").write_text(caption)
    table, summary = caption_table(tmp_path)
    assert table.values.tolist() == [["a.png", "first"], ["b.png", "second"]] and summary.startswith("2 images")
    edited = pd.DataFrame([["a.png", "first"], ["b.png", " changed "], ["ghost.png", "x"]], columns=["image", "caption"])
    assert caption_overrides(edited, tmp_path) == {"b.png": "changed"}
    assert (tmp_path / "b.txt").read_text() == "second"  # the user's file is untouched


# ----- quick settings, token counter, textual-inversion picker ------------------------------------

A1111_PROMPT = r"masterpiece, (detailed fur:1.2), [dog:cat:0.5] BREAK \(literal\) <lora:x:0.8>"
A1111_NEGATIVE = "EasyNegative, (worst quality:1.4)"


@pytest.fixture
def ti_engine(models_dir, tmp_path):
    """An engine on its own models dir (a copy of tiny-sd1, 32-wide text encoder) with two embeddings:
    ``good-emb`` fits it, ``sd1-emb`` (768 wide) is skipped."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from app.engine import Engine, EngineConfig

    root = tmp_path / "models"
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd1", root / "Stable-diffusion" / "tiny-sd1")
    (root / "embeddings").mkdir()
    save_file({"emb_params": torch.randn(2, 32)}, root / "embeddings" / "good-emb.safetensors")
    save_file({"emb_params": torch.randn(2, 768)}, root / "embeddings" / "sd1-emb.safetensors")
    engine = Engine(EngineConfig(models_dir=root, outputs_dir=tmp_path / "outputs", default_model="tiny-sd1",
                                 device="cpu"))
    yield engine
    engine.shutdown()


def test_quick_settings_reach_the_request() -> None:
    from app.ui.generate_tab import request_from_ui

    request = request_from_ui("txt2img", dict(
        sd_model_checkpoint="tiny", sd_vae="Automatic", prompt="a (red:1.3) circle", negative_prompt="",
        sampler_name="Euler a", scheduler="Automatic", steps=20.0, cfg_scale=7.0, width=64.0, height=64.0, seed=-1.0,
        n_iter=1.0, batch_size=1.0, CLIP_stop_at_last_layers=2.0, emphasis="No norm"))  # sliders send floats
    request.validate()
    assert (request.clip_skip, request.emphasis, request.model, request.vae) == (2, "No norm", "tiny", None)
    assert all(type(getattr(request, name)) is int for name in ("steps", "width", "height", "seed", "clip_skip"))


def test_every_tab_without_values_asks_for_the_engines_defaults() -> None:
    """One mapping with the engine's defaults: a tab that sends nothing gets exactly the request defaults."""
    from app.engine import Img2ImgRequest, InpaintRequest, Txt2ImgRequest
    from app.ui.generate_tab import request_from_ui

    picture, mask = Image.new("RGB", (64, 64)), Image.new("L", (64, 64))
    assert request_from_ui("txt2img", {}) == Txt2ImgRequest()
    assert request_from_ui("img2img", {"init_image": picture}) == Img2ImgRequest(init_image=picture)
    assert request_from_ui("inpaint", {"init_image": picture, "mask": mask}) == InpaintRequest(init_image=picture,
                                                                                                mask=mask)
    assert request_from_ui("inpaint", {"init_image": picture}) == InpaintRequest(init_image=picture)  # validate() asks


def test_an_a1111_infotext_fills_every_field_byte_for_byte() -> None:
    text = (f"{A1111_PROMPT}\nNegative prompt: {A1111_NEGATIVE}\n"
            "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 512x768, "
            "Model: tiny, Clip skip: 2, Emphasis: No norm, Version: v1.10.1")
    fields = infotext_fields(text)
    assert (fields["prompt"], fields["negative_prompt"]) == (A1111_PROMPT, A1111_NEGATIVE)
    assert (fields["CLIP_stop_at_last_layers"], fields["emphasis"], fields["width"], fields["height"]) == (2, "No norm",
                                                                                                          512, 768)
    plain = infotext_fields("a cat\nSteps: 4, Sampler: Euler, Seed: 1, Size: 64x64")
    assert (plain["CLIP_stop_at_last_layers"], plain["emphasis"], plain["styles"], plain["tiling"]) == (
        1, "Original", [], False)  # not written means A1111's defaults


@pytest.fixture
def ui_tabs(ti_engine):
    """The real txt2img and inpaint tabs, built in a Blocks that is never launched."""
    import gradio as gr

    from app.ui.generate_tab import quick_settings
    from app.ui.inpaint_tab import build_inpaint_tab
    from app.ui.txt2img_tab import build_txt2img_tab

    with gr.Blocks():
        quick = quick_settings()
        txt2img, inpaint = build_txt2img_tab(ti_engine, quick), build_inpaint_tab(ti_engine, quick)
    return txt2img, inpaint


def test_send_to_keeps_the_quick_settings_it_cannot_use(ti_engine, ui_tabs) -> None:
    from app.ui.send_to import KEEP, target_values

    txt2img, inpaint = ui_tabs
    text = ("a cat\nSteps: 4, Sampler: Euler, Seed: 1, Size: 64x64, Model: tiny-sd1, Clip skip: 2, Emphasis: Sideways, "
            "Masked content: fill, Inpaint area: Only masked, Mask blur: 9")
    values = dict(zip(txt2img.fields(), target_values(ti_engine, text, txt2img)))
    assert (values["sd_model_checkpoint"], values["CLIP_stop_at_last_layers"], values["emphasis"]) == ("tiny-sd1", 2,
                                                                                                        KEEP)
    assert (values["styles"], values["tiling"], values["enable_hr"]) == ([], False, False)  # prompts already styled
    assert values["hr_upscaler"] is KEEP  # not in the text: left as it is
    missing = dict(zip(txt2img.fields(), target_values(ti_engine, text.replace("tiny-sd1", "elsewhere"), txt2img)))
    assert missing["sd_model_checkpoint"] is KEEP  # a checkpoint this machine lacks keeps the current pick
    painted = dict(zip(inpaint.fields(), target_values(ti_engine, text, inpaint)))
    # A1111 numbers become the index radios' labels; the picture and mask are not in an infotext
    assert (painted["inpainting_fill"], painted["inpaint_full_res"], painted["mask_blur"]) == ("fill", "Only masked", 9)
    assert painted["init_image"] is KEEP and painted["mask"] is KEEP


# ----- hires fix ---------------------------------------------------------------------------------

HIRES_INFOTEXT = ("a red circle\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 3, "
                  "Size: 64x64, Model: tiny-sd1, Denoising strength: 0.5, Hires upscale: 2, Hires steps: 4, "
                  "Hires upscaler: Lanczos, Version: x")


def test_hires_slider_values_become_request_fields() -> None:
    from app.engine.hires import hires_size
    from app.ui.generate_tab import request_from_ui

    request = request_from_ui("txt2img", dict(
        width=64.0, height=64.0, steps=4.0, enable_hr=True, hr_upscaler="Lanczos", hr_second_pass_steps=4.0,
        denoising_strength=0.5, hr_scale=1.5, hr_resize_x=0.0, hr_resize_y=96.0, hr_checkpoint_name="Use same checkpoint",
        hr_sampler_name="Euler", hr_prompt="a sharp circle", hr_negative_prompt="", hr_scheduler="Karras"))
    request.validate()
    assert (request.enable_hr, request.hr_upscaler, request.hr_second_pass_steps, request.denoising_strength,
            request.hr_scale, request.hr_resize_x, request.hr_resize_y) == (True, "Lanczos", 4, 0.5, 1.5, 0, 96)
    assert (request.hr_checkpoint, request.hr_sampler, request.hr_schedule_type, request.hr_prompt) == (
        "Use same checkpoint", "Euler", "Karras", "a sharp circle")
    assert all(type(getattr(request, name)) is int for name in ("hr_second_pass_steps", "hr_resize_x", "hr_resize_y"))
    assert hires_size(request) == (96, 96)
    off = request_from_ui("txt2img", dict(enable_hr=False, hr_upscaler="Lanczos", hr_scale=3.0))
    assert (off.enable_hr, off.hr_upscaler, off.hr_scale) == (False, "Latent", 2.0)  # hires fields count only when on


def test_hires_size_line_shows_the_final_size_or_nothing() -> None:
    from app.ui.hires_controls import hires_size_text

    assert hires_size_text(512.0, 512.0, 2.0, 0.0, 0.0) == "from **512x512** to **1024x1024**"
    assert hires_size_text(64, 64, 2, 0, 0) == "from **64x64** to **128x128**"
    assert hires_size_text(512, 768, 2, 1024, 0) == "from **512x768** to **1024x1536**"  # one side: aspect kept
    assert hires_size_text(512, 512, 2, 640, 384) == "from **512x512** to **640x384**"
    assert hires_size_text(512, 512, 1.3, 0, 0) == "from **512x512** to **664x664**"  # rounded down to 8
    for bad in ((None, 512, 2, 0, 0), (512, 512, None, 0, 0), (0, 512, 2, 0, 64), (512, 512, float("nan"), 0, 0),
                (512, 512, -1, 0, 0)):
        assert hires_size_text(*bad) == ""


def test_hires_values_come_back_from_an_engine_infotext(ti_engine, ui_tabs) -> None:
    from app.ui.send_to import KEEP, target_values

    fields = infotext_fields(HIRES_INFOTEXT)
    assert {name: fields[name] for name in ("enable_hr", "hr_upscaler", "hr_second_pass_steps", "denoising_strength",
                                            "hr_scale", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name",
                                            "hr_sampler_name", "hr_scheduler")} == dict(
        enable_hr=True, hr_upscaler="Lanczos", hr_second_pass_steps=4, denoising_strength=0.5, hr_scale=2.0,
        hr_resize_x=0, hr_resize_y=0, hr_checkpoint_name="Use same checkpoint", hr_sampler_name="Use same sampler",
        hr_scheduler="Use same scheduler")
    resized = infotext_fields(HIRES_INFOTEXT.replace("Hires upscale: 2", "Hires resize: 640x0").replace(
        ", Version: x", ', Hires checkpoint: other, Hires sampler: DPM++ 2M Karras, Hires prompt: "a, b"'))
    assert (resized["hr_resize_x"], resized["hr_checkpoint_name"], resized["hr_prompt"]) == (640, "other", "a, b")
    assert (resized["hr_sampler_name"], resized["hr_scheduler"]) == ("DPM++ 2M", "Karras")  # old fused name split
    txt2img, _ = ui_tabs
    shown = dict(zip(txt2img.fields(), target_values(ti_engine, HIRES_INFOTEXT.replace("Lanczos", "R-ESRGAN 4x+"),
                                                      txt2img)))
    assert shown["enable_hr"] is True and shown["hr_upscaler"] is KEEP  # an upscaler this app lacks
    assert shown["hr_second_pass_steps"] == 4 and shown["hr_sampler_name"] == "Use same sampler"
    plain = infotext_fields("a cat\nSteps: 4, Sampler: Euler, Seed: 1, Size: 64x64")
    assert plain["enable_hr"] is False


def test_a_generation_round_trips_through_its_infotext(ti_engine) -> None:
    from app.ui.generate_tab import request_from_ui

    asked = request_from_ui("txt2img", dict(
        prompt="a red circle", sd_model_checkpoint="tiny-sd1", steps=2, width=64, height=64, seed=1,
        sampler_name="DPM++ 2M", scheduler="Exponential", CLIP_stop_at_last_layers=2, tiling=True, enable_hr=True,
        hr_upscaler="Lanczos", hr_second_pass_steps=3, denoising_strength=0.6, hr_scale=1.5, hr_sampler_name="Euler",
        hr_scheduler="Karras", hr_prompt="sharp"))
    result = ti_engine.submit(asked.with_changes(save=False)).wait(timeout=120)
    assert result.images[0].size == (96, 96)
    back = request_from_ui("txt2img", infotext_fields(result.infotexts[0]))
    assert back == asked  # every field the tab sent comes back from the saved text


def test_sending_to_txt2img_fills_the_hires_controls(ti_engine, ui_tabs) -> None:
    from app.ui.send_to import target_inputs, target_values

    txt2img, inpaint = ui_tabs
    values = target_values(ti_engine, HIRES_INFOTEXT, txt2img)
    assert len(values) == len(target_inputs(txt2img)) == 18 + 12
    shown = dict(zip(txt2img.fields(), values))
    assert shown["sd_model_checkpoint"] == "tiny-sd1"
    assert [shown[name] for name in ("enable_hr", "hr_upscaler", "hr_second_pass_steps", "denoising_strength",
                                     "hr_scale")] == [True, "Lanczos", 4, 0.5, 2.0]
    assert "enable_hr" not in inpaint.fields()


# ----- styles and tiling -------------------------------------------------------------------------

STYLES_CSV = '''name,prompt,negative_prompt
cinematic,"cinematic still of {prompt}, (film grain:1.2)","cartoon, drawing"
quality,"masterpiece, best quality","lowres, (worst quality:1.4)"
'''


@pytest.fixture
def styles(tmp_path):
    from app.engine.styles import StyleLibrary

    path = tmp_path / "styles.csv"
    path.write_text(STYLES_CSV, encoding="utf-8")
    return StyleLibrary(path)


def test_apply_writes_the_styles_into_both_prompts_and_clears_the_selection(styles) -> None:
    from app.ui.styles_picker import NOTHING_SELECTED, apply_styles

    assert apply_styles(styles, ["cinematic", "quality"], "a red fox", "blurry") == (
        "cinematic still of a red fox, (film grain:1.2), masterpiece, best quality",
        "blurry, cartoon, drawing, lowres, (worst quality:1.4)", [], "")
    assert apply_styles(styles, "quality", None, None) == ("masterpiece, best quality", "lowres, (worst quality:1.4)",
                                                           [], "")  # one name from an API client, empty boxes
    assert apply_styles(styles, [], "a fox", "x") == ("a fox", "x", [], NOTHING_SELECTED)
    prompt, negative, selection, note = apply_styles(styles, ["quality", "gone"], "a fox", "x")
    assert (prompt, negative, selection) == ("a fox", "x", ["quality", "gone"])  # nothing changes
    assert note.startswith("⚠ No style called 'gone'") and "cinematic" in note


def test_save_adds_or_replaces_a_style_and_says_so(styles) -> None:
    from app.ui.styles_picker import save_style, style_choices

    assert save_style(styles, "  mine ", "a <b> cat", "dog") == (True, "Saved style **mine**")
    assert style_choices(styles) == (["cinematic", "quality", "mine"], "")
    assert [(s.prompt, s.negative_prompt) for s in styles.styles() if s.name == "mine"] == [("a <b> cat", "dog")]
    saved, note = save_style(styles, "quality", "best", "")
    assert saved and note == "Saved style **quality** (replacing the old one)"
    assert style_choices(styles)[0] == ["cinematic", "mine", "quality"]
    for name, prompt, negative, reason in (("", "a", "b", "Type a name"), (None, "a", "b", "Type a name"),
                                           ("empty", " ", None, "Nothing to save")):
        saved, note = save_style(styles, name, prompt, negative)
        assert not saved and note.startswith("⚠ ") and reason in note
    assert style_choices(styles)[0] == ["cinematic", "mine", "quality"]


def test_a_malformed_styles_file_is_a_note_not_a_crash(styles) -> None:
    from app.ui.styles_picker import apply_styles, refreshed, save_style, style_choices

    styles.path.write_text("just some text\nnot, a, styles file\n", encoding="utf-8")
    names, note = style_choices(styles)
    assert names == [] and note.startswith("⚠ ") and "not an A1111 styles file" in note
    assert "not an A1111 styles file" in apply_styles(styles, ["quality"], "a", "")[3]
    saved, note = save_style(styles, "new", "a", "")
    assert not saved and "not an A1111 styles file" in note
    assert styles.path.read_text(encoding="utf-8").startswith("just some text")  # left as it was
    assert style_choices(type(styles)(styles.path.with_name("missing.csv"))) == ([], "")
    dropdown = refreshed(["a", "b"], ["b", "gone"])
    assert dropdown.value == ["b"] and [value for _, value in dropdown.choices] == ["a", "b"]


def test_styles_and_tiling_reach_the_request() -> None:
    from app.ui.generate_tab import request_from_ui

    request = request_from_ui("txt2img", dict(prompt="a circle", styles=["quality", "cinematic"], tiling=True))
    request.validate()
    assert (request.styles, request.tiling) == (("quality", "cinematic"), True)
    picture = Image.new("RGB", (64, 64))
    assert request_from_ui("img2img", dict(init_image=picture, styles=None, tiling=None)).styles == ()
    plain = request_from_ui("txt2img", {})  # styles and tiling default to none and off
    assert (plain.styles, plain.tiling) == ((), False)
    assert request_from_ui("txt2img", dict(styles="quality")).styles == ("quality",)  # one name from a client


def test_tiling_and_styles_come_back_from_an_infotext() -> None:
    text = ("a tiled floor, masterpiece\nNegative prompt: lowres\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, "
            "Size: 512x512, Model: tiny, Tiling: True, Version: v1.10.1")
    fields = infotext_fields(text)
    assert fields["prompt"] == "a tiled floor, masterpiece" and fields["styles"] == []  # already in the prompt
    assert fields["tiling"] is True
    assert infotext_fields(text.replace("Tiling: True, ", ""))["tiling"] is False


def test_with_logins_a_person_is_one_owner_however_many_tabs() -> None:
    from types import SimpleNamespace

    from app.ui.generate_tab import owner_of, user_of

    tab_one, tab_two = SimpleNamespace(session_hash="h1", username="amy"), SimpleNamespace(session_hash="h2", username="amy")
    assert owner_of(tab_one) == owner_of(tab_two) == "user:amy" and user_of(tab_one) == "amy"
    anonymous = SimpleNamespace(session_hash="h3", username=None)
    assert owner_of(anonymous) == "session:h3" and user_of(anonymous) is None  # without logins: per browser session
    assert owner_of(None) == "api"
