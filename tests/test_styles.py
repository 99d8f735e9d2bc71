"""A1111's styles.csv: reading, applying ({prompt} or appended), saving, and through the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine import Engine, EngineConfig, Txt2ImgRequest
from app.engine.infotext import parse_infotext
from app.engine.styles import Style, StyleLibrary, merge_prompt

A1111_FILE = '''name,prompt,negative_prompt
cinematic,"cinematic still of {prompt}, (film grain:1.2)","cartoon, drawing"
quality,"masterpiece, best quality","lowres, (worst quality:1.4)"
'''


def test_styles_apply_as_a1111_does(tmp_path: Path) -> None:
    assert merge_prompt("cinematic still of {prompt}, grain", "a fox") == "cinematic still of a fox, grain"
    assert merge_prompt("masterpiece", "a fox ") == "a fox, masterpiece"
    assert merge_prompt("masterpiece", "") == "masterpiece"
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    library = StyleLibrary(path)
    assert [s.name for s in library.styles()] == ["cinematic", "quality"]
    prompt, negative = library.apply(["cinematic", "quality"], "a red fox", "blurry")
    assert prompt == "cinematic still of a red fox, (film grain:1.2), masterpiece, best quality"
    assert negative == "blurry, cartoon, drawing, lowres, (worst quality:1.4)"
    with pytest.raises(ValueError, match="No style called 'nope'.*cinematic"):
        library.apply(["nope"], "x", "")


def test_saving_keeps_the_file_a1111_readable(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    library = StyleLibrary(path)
    library.save(Style("mine", 'a "quoted", {prompt}', "ugly"))
    library.save(Style("quality", "best quality", ""))  # replaces, keeps the others
    assert [(s.name, s.prompt) for s in library.styles()] == [
        ("cinematic", "cinematic still of {prompt}, (film grain:1.2)"), ("mine", 'a "quoted", {prompt}'),
        ("quality", "best quality")]
    assert path.read_text(encoding="utf-8").splitlines()[0] == "name,prompt,negative_prompt"
    assert not list(tmp_path.glob(".styles-*"))
    assert StyleLibrary(tmp_path / "missing.csv").styles() == []
    (tmp_path / "bad.csv").write_text("just text\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not an A1111 styles file"):
        StyleLibrary(tmp_path / "bad.csv").styles()


def test_the_engine_applies_styles_and_writes_the_styled_prompt(models_dir: Path, tmp_path: Path) -> None:
    engine = Engine(EngineConfig(models_dir=models_dir, outputs_dir=tmp_path, default_model="tiny-sd1", device="cpu"))
    engine.styles = StyleLibrary(tmp_path / "styles.csv")  # not the shared models folder's
    (tmp_path / "styles.csv").write_text(A1111_FILE, encoding="utf-8")
    try:
        result = engine.generate(Txt2ImgRequest(prompt="a red circle", styles=("quality",), width=64, height=64,
                                                steps=2, seed=1, save=False))
        params = parse_infotext(result.infotexts[0])
        assert params["Prompt"] == "a red circle, masterpiece, best quality"
        assert params["Negative prompt"] == "lowres, (worst quality:1.4)"
        with pytest.raises(ValueError, match="No style"):
            engine.submit(Txt2ImgRequest(prompt="x", styles=("missing",), width=64, height=64, steps=2))
    finally:
        engine.shutdown()
