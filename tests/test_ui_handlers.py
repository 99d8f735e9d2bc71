"""UI helpers that turn browser values into engine inputs (no browser needed)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from app.ui.inpaint_tab import mask_from_editor
from app.ui.png_info_tab import fields_from_infotext, read_png_info


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
    values = fields_from_infotext(read)
    assert values == ["tiny", "Automatic", "a cat, sitting", "dog", "DPM++ 2M", "Karras", 12, 5.5, 96, 64, 99, 1, 1, 1,
                      "Original", [], False]
    assert read_png_info(Image.new("RGB", (4, 4)))[0] == "This image carries no generation parameters."


def test_sending_nothing_is_a_readable_error() -> None:
    import gradio as gr

    with pytest.raises(gr.Error):
        fields_from_infotext("")


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
    from app.engine import Txt2ImgRequest
    from app.ui.generate_tab import request_fields

    fields = request_fields("tiny", "Automatic", "a (red:1.3) circle", "", "Euler a", "Automatic", 20.0, 7.0, 64.0,
                            64.0, -1.0, 1.0, 1.0, 2.0, "No norm")
    assert fields["clip_skip"] == 2 and isinstance(fields["clip_skip"], int) and fields["emphasis"] == "No norm"
    request = Txt2ImgRequest(**fields)
    request.validate()
    assert (request.clip_skip, request.emphasis) == (2, "No norm")


def test_an_a1111_infotext_fills_every_field_byte_for_byte() -> None:
    text = (f"{A1111_PROMPT}\nNegative prompt: {A1111_NEGATIVE}\n"
            "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 512x768, "
            "Model: tiny, Clip skip: 2, Emphasis: No norm, Version: v1.10.1")
    values = fields_from_infotext(text)
    assert values == ["tiny", "Automatic", A1111_PROMPT, A1111_NEGATIVE, "Euler a", "Automatic", 20, 7.0, 512, 768, 5,
                      1, 1, 2, "No norm", [], False]
    plain = fields_from_infotext("a cat\nSteps: 4, Sampler: Euler, Seed: 1, Size: 64x64")
    assert plain[-4:] == [1, "Original", [], False]  # not written means A1111's defaults


def test_send_to_keeps_the_quick_settings_it_cannot_use(ti_engine) -> None:
    from app.ui.send_to import settings_values

    values = settings_values(ti_engine, "a cat\nSteps: 4, Sampler: Euler, Seed: 1, Size: 64x64, Model: tiny-sd1, "
                                        "Clip skip: 2, Emphasis: Sideways")
    assert values[0] == "tiny-sd1" and values[13] == 2 and isinstance(values[14], dict)  # gr.update(): unchanged
    assert values[15:] == [[], False]  # the infotext's prompt is already styled: no style is selected again


def test_token_counter_shows_tokens_over_the_chunk_target(ti_engine) -> None:
    from app.ui.token_counter import token_counter_html

    assert ">3/75<" in token_counter_html(ti_engine, "a red circle", "tiny-sd1", 20, "Original")
    assert ">0/75<" in token_counter_html(ti_engine, "", None, 20, "Original")
    long_prompt = ", ".join(["red circle"] * 30)  # 89 tokens
    html = token_counter_html(ti_engine, long_prompt, "tiny-sd1", 20, "Original")
    assert re.search(r">\d+/150<", html) and "75-token chunks" in html
    unknown = token_counter_html(ti_engine, "a red circle", "no-such-model", 20, "Original")
    assert ">?/75<" in unknown and "ls-token-counter-error" in unknown and "no-such-model" in unknown


def test_embeddings_insert_comma_separated_once() -> None:
    from app.ui.embedding_picker import with_embedding

    assert with_embedding("", "EasyNegative") == "EasyNegative"
    assert with_embedding(None, "EasyNegative") == "EasyNegative"
    assert with_embedding("(worst quality:1.4)  ", "EasyNegative") == "(worst quality:1.4), EasyNegative"
    assert with_embedding("lowres,", "EasyNegative") == "lowres, EasyNegative"
    assert with_embedding("lowres, EasyNegative", "EasyNegative") == "lowres, EasyNegative"
    assert with_embedding("lowres, NotEasyNegative", "EasyNegative") == "lowres, NotEasyNegative, EasyNegative"


def test_embedding_table_lists_usable_and_skipped_files_and_rows_insert(ti_engine) -> None:
    from app.ui.embedding_picker import HEADERS, embedding_table, insert_embedding

    table, note = embedding_table(ti_engine, "tiny-sd1")
    assert list(table.columns) == HEADERS and note == ""
    rows = {row[0]: row for row in table.values.tolist()}
    good, skipped = rows["good-emb"], rows["sd1-emb"]
    assert good[1:3] == [2, "a 32-wide text encoder"] and len(good[3]) > 0 and good[4] == "ok"
    assert skipped[1:3] == [2, "SD 1.x"] and skipped[4] != "ok" and "768" in skipped[4]

    assert insert_embedding(good, "Negative prompt", "a cat", "lowres") == ("a cat", "lowres, good-emb", "")
    assert insert_embedding(good, "Prompt", "a cat", "") == ("a cat, good-emb", "", "")
    prompt, negative, message = insert_embedding(skipped, "Negative prompt", "a cat", "lowres")
    assert (prompt, negative) == ("a cat", "lowres") and message == f"⚠ Skipped: {skipped[4]}"


def test_embedding_table_says_when_there_is_nothing_to_list(ti_engine) -> None:
    from app.ui.embedding_picker import EMPTY_NOTE, embedding_table

    for path in (ti_engine.config.models_dir / "embeddings").iterdir():
        path.unlink()
    table, note = embedding_table(ti_engine, "tiny-sd1")
    assert table.empty and list(table.columns)[0] == "Name" and note == EMPTY_NOTE
    table, note = embedding_table(ti_engine, "no-such-model")
    assert table.empty and "no-such-model" in note


# ----- hires fix ---------------------------------------------------------------------------------

HIRES_INFOTEXT = ("a red circle\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 3, "
                  "Size: 64x64, Model: tiny-sd1, Denoising strength: 0.5, Hires upscale: 2, Hires steps: 4, "
                  "Hires upscaler: Lanczos, Version: x")


def test_hires_fields_turn_slider_floats_into_request_fields() -> None:
    from app.engine import Txt2ImgRequest
    from app.engine.hires import hires_size
    from app.ui.hires_controls import hires_fields

    fields = hires_fields(True, "Lanczos", 4.0, 0.5, 1.5, 0.0, 96.0, "Use same checkpoint", "Euler",
                          "a sharp circle", "")
    assert fields == dict(enable_hr=True, hr_upscaler="Lanczos", hr_second_pass_steps=4, denoising_strength=0.5,
                          hr_scale=1.5, hr_resize_x=0, hr_resize_y=96, hr_checkpoint="Use same checkpoint",
                          hr_sampler="Euler", hr_prompt="a sharp circle", hr_negative_prompt="")
    assert [type(fields[k]) for k in ("hr_second_pass_steps", "hr_resize_x", "hr_resize_y")] == [int, int, int]
    assert type(fields["hr_scale"]) is float and type(fields["denoising_strength"]) is float
    request = Txt2ImgRequest(width=64, height=64, steps=4, **fields)
    request.validate()
    assert hires_size(request) == (96, 96)


def test_hires_fields_default_to_the_requests_defaults() -> None:
    from app.engine import Txt2ImgRequest
    from app.ui.hires_controls import hires_fields

    fields = hires_fields(None, None, None, None, None, None, None, None, None, None, None)
    plain = Txt2ImgRequest()
    assert fields == {name: getattr(plain, name) for name in fields}
    assert fields["enable_hr"] is False and fields["hr_upscaler"] == "Latent"
    assert (fields["hr_sampler"], fields["hr_checkpoint"]) == ("Use same sampler", "Use same checkpoint")


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


def test_hires_values_come_back_from_an_engine_infotext() -> None:
    from app.ui.hires_controls import hires_values_from_infotext

    values = hires_values_from_infotext(HIRES_INFOTEXT)
    assert values == [True, "Lanczos", 4, 0.5, 2.0, 0, 0, "Use same checkpoint", "Use same sampler", "", ""]
    resized = hires_values_from_infotext(HIRES_INFOTEXT.replace("Hires upscale: 2", "Hires resize: 640x0").replace(
        ", Version: x", ', Hires checkpoint: other, Hires sampler: DPM++ 2M Karras, Hires prompt: "a, b"'))
    assert resized[:8] == [True, "Lanczos", 4, 0.5, 2.0, 640, 0, "other"]
    assert resized[8:] == ["DPM++ 2M", "a, b", ""]
    assert isinstance(hires_values_from_infotext(HIRES_INFOTEXT.replace("Lanczos", "R-ESRGAN 4x+"))[1], dict)
    missing = hires_values_from_infotext(HIRES_INFOTEXT.replace("Hires upscale: 2", "Hires checkpoint: gone"),
                                         checkpoints=["tiny-sd1"])
    assert isinstance(missing[7], dict)  # gr.update(): a checkpoint this machine lacks keeps the current pick
    plain = hires_values_from_infotext("a cat\nSteps: 4, Sampler: Euler, Seed: 1, Size: 64x64")
    assert plain[0] is False and len(plain) == 11 and all(isinstance(v, dict) for v in plain[1:])


def test_hires_values_from_a_real_generation_round_trip(ti_engine) -> None:
    from app.engine import Txt2ImgRequest
    from app.ui.hires_controls import hires_fields, hires_values_from_infotext

    fields = hires_fields(True, "Lanczos", 3.0, 0.6, 1.5, 0.0, 0.0, "Use same checkpoint", "Euler", "sharp", "")
    result = ti_engine.submit(Txt2ImgRequest(prompt="a red circle", model="tiny-sd1", steps=2, width=64, height=64,
                                             seed=1, save=False, **fields)).wait(timeout=120)
    assert result.images[0].size == (96, 96)
    values = hires_values_from_infotext(result.infotexts[0])
    assert values == [True, "Lanczos", 3, 0.6, 1.5, 0, 0, "Use same checkpoint", "Euler", "sharp", ""]
    assert hires_fields(*values) == fields


def test_sending_to_txt2img_fills_the_hires_controls(ti_engine) -> None:
    from app.ui.send_to import target_values

    class Tab:  # only what target_values reads of a GenerateTab
        hires = object()

    values = target_values(ti_engine, HIRES_INFOTEXT, Tab())  # type: ignore[arg-type]
    assert len(values) == 17 + 11 and values[0] == "tiny-sd1" and values[17:22] == [True, "Lanczos", 4, 0.5, 2.0]
    Tab.hires = None
    assert len(target_values(ti_engine, HIRES_INFOTEXT, Tab())) == 17  # type: ignore[arg-type]


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
    from app.engine import Img2ImgRequest, Txt2ImgRequest
    from app.ui.generate_tab import SettingsControls, request_fields

    shared = ("tiny", "Automatic", "a circle", "", "Euler a", "Automatic", 20.0, 7.0, 64.0, 64.0, -1.0, 1.0, 1.0, 1.0,
              "Original")
    fields = request_fields(*shared, ["quality", "cinematic"], True)
    assert fields["styles"] == ("quality", "cinematic") and fields["tiling"] is True
    request = Txt2ImgRequest(**fields)
    request.validate()
    assert (request.styles, request.tiling) == (("quality", "cinematic"), True)
    assert Img2ImgRequest(**request_fields(*shared, None, None)).styles == ()
    plain = request_fields(*shared)  # styles and tiling default to none and off
    assert (plain["styles"], plain["tiling"]) == ((), False)
    assert request_fields(*shared, "quality", False)["styles"] == ("quality",)
    assert [SettingsControls.position(name) for name in ("clip_skip", "emphasis", "styles", "tiling")] == [13, 14, 15,
                                                                                                          16]


def test_tiling_and_styles_come_back_from_an_infotext() -> None:
    text = ("a tiled floor, masterpiece\nNegative prompt: lowres\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, "
            "Size: 512x512, Model: tiny, Tiling: True, Version: v1.10.1")
    values = fields_from_infotext(text)
    assert values[2] == "a tiled floor, masterpiece" and values[15] == []  # styles: already in the prompt
    assert values[16] is True
    assert fields_from_infotext(text.replace("Tiling: True, ", ""))[16] is False
