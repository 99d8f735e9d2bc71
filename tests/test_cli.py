"""launch.py's options and the config they produce."""

from __future__ import annotations

from pathlib import Path

import logging

import pytest

from app.cli import build_parser, engine_config_from_args, serve_options_from_args
from app.engine.placeholder import PLACEHOLDER_NAME
from app.serving import CredentialsError, launch_kwargs, warn_if_open


def test_help_explains_every_flag() -> None:
    help_text = build_parser().format_help()
    for flag in ("--listen", "--port", "--models-dir", "--outputs-dir", "--model", "--device", "--dtype",
                 "--attention", "--allow-pickle", "--auth", "--auth-file", "--share", "--max-upload-mb", "--lora-cache-mb",
                 "--max-loras"):
        assert flag in help_text
    assert "127.0.0.1" in help_text and "xformers" in help_text and "Needs internet" in help_text


def test_the_app_opens_on_the_bundled_demo_model(tmp_path: Path, monkeypatch) -> None:
    bundled = tmp_path / "repo" / "models" / "Stable-diffusion" / "demo-shapes"
    bundled.mkdir(parents=True)
    (bundled / "model_index.json").write_text("{}")
    monkeypatch.setattr("app.demo.BUNDLED_PATH", bundled)
    args = build_parser().parse_args(["--models-dir", str(tmp_path / "a1111-models")])
    config = engine_config_from_args(args)  # another models folder: the bundled model is offered beside it
    assert config.default_model == "demo-shapes" and config.extra_checkpoints == (bundled,)
    assert not (tmp_path / "a1111-models" / "Stable-diffusion" / PLACEHOLDER_NAME).exists()
    args = build_parser().parse_args(["--models-dir", str(tmp_path / "repo" / "models")])
    config = engine_config_from_args(args)
    assert config.default_model == "demo-shapes" and config.extra_checkpoints == ()


def test_without_the_demo_model_the_labelled_placeholder_is_written(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("app.demo.BUNDLED_PATH", tmp_path / "not-built")
    args = build_parser().parse_args(["--models-dir", str(tmp_path / "models"), "--outputs-dir", str(tmp_path / "out")])
    config = engine_config_from_args(args)
    assert config.default_model == PLACEHOLDER_NAME
    folder = tmp_path / "models" / "Stable-diffusion" / PLACEHOLDER_NAME
    assert (folder / "model_index.json").is_file() and (folder / "unet").is_dir()
    assert "random weights" in (folder / "lora_studio.json").read_text()
    assert (tmp_path / "models" / "Lora").is_dir() and (tmp_path / "models" / "VAE").is_dir()
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


def test_network_flags_become_serve_options(tmp_path: Path) -> None:
    auth_file = tmp_path / "users.txt"
    auth_file.write_text("# the team\ncarol:pa:ss\n\ndave:x\n")
    args = build_parser().parse_args(["--listen", "--port", "9000", "--auth", "alice:one, bob:two",
                                      "--auth-file", str(auth_file), "--max-upload-mb", "5"])
    options = serve_options_from_args(args)
    assert options.host == "0.0.0.0" and options.port == 9000 and not options.share
    assert options.credentials == (("alice", "one"), ("bob", "two"), ("carol", "pa:ss"), ("dave", "x"))
    kwargs = launch_kwargs(options, tmp_path / "outputs", tmp_path / "models")
    assert kwargs["auth"] == list(options.credentials) and kwargs["max_file_size"] == "5mb"
    assert kwargs["allowed_paths"] == [str((tmp_path / "outputs").resolve())]
    assert kwargs["blocked_paths"] == [str((tmp_path / "models").resolve())]
    assert warn_if_open(options) is None
    local = serve_options_from_args(build_parser().parse_args([]))
    assert local.host == "127.0.0.1" and local.credentials == () and launch_kwargs(local, tmp_path, tmp_path)["auth"] is None


@pytest.mark.parametrize("value", ["alice", ":pw", "bob:", " , "])
def test_malformed_credentials_are_refused(value: str) -> None:
    with pytest.raises(CredentialsError, match="user:password"):
        serve_options_from_args(build_parser().parse_args(["--auth", value]))


def test_missing_auth_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="Cannot read the auth file"):
        serve_options_from_args(build_parser().parse_args(["--auth-file", str(tmp_path / "none.txt")]))


def test_listen_without_auth_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        message = warn_if_open(serve_options_from_args(build_parser().parse_args(["--listen"])))
    assert message is not None and "--listen without --auth" in message and message in caplog.text
    shared = warn_if_open(serve_options_from_args(build_parser().parse_args(["--share"])))
    assert shared is not None and "public link" in shared
