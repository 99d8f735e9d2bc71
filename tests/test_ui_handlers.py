"""UI helpers that turn browser values into engine inputs (no browser needed)."""

from __future__ import annotations

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
    assert values == ["tiny", "Automatic", "a cat, sitting", "dog", "DPM++ 2M", "Karras", 12, 5.5, 96, 64, 99, 1, 1]
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
