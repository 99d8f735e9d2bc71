"""launch.py's options and the config they produce."""

from __future__ import annotations

from pathlib import Path

from app.cli import build_parser, engine_config_from_args
from app.engine.placeholder import PLACEHOLDER_NAME


def test_help_explains_every_flag() -> None:
    help_text = build_parser().format_help()
    for flag in ("--listen", "--port", "--models-dir", "--outputs-dir", "--model", "--device", "--dtype",
                 "--attention", "--allow-pickle"):
        assert flag in help_text
    assert "127.0.0.1" in help_text and "xformers" in help_text


def test_defaults_write_the_labelled_placeholder_model(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--models-dir", str(tmp_path / "models"), "--outputs-dir", str(tmp_path / "out")])
    config = engine_config_from_args(args)
    assert config.default_model == PLACEHOLDER_NAME
    folder = tmp_path / "models" / "Stable-diffusion" / PLACEHOLDER_NAME
    assert (folder / "model_index.json").is_file() and (folder / "unet").is_dir()
    assert "random weights" in (folder / "lora_studio.json").read_text()
    assert not any(p.name.startswith(".writing-") for p in folder.parent.iterdir())  # no half-written copy
    assert str(config.resolved_device()) == "cpu" and config.attention == "sdpa" and not config.allow_pickle


def test_model_path_outside_models_dir_is_registered(tmp_path: Path) -> None:
    model = tmp_path / "elsewhere" / "my-model.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"x")
    args = build_parser().parse_args(["--models-dir", str(tmp_path / "models"), "--model", str(model),
                                      "--device", "cpu", "--dtype", "bf16"])
    config = engine_config_from_args(args)
    assert config.default_model == "my-model.safetensors" and config.extra_checkpoints == (model.resolve(),)
    assert str(config.resolved_dtype()) == "torch.bfloat16"
