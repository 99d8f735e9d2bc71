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
                 "--max-loras", "--dataset-roots"):
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
    assert "--listen without TLS" in (warn_if_open(options) or "")  # logins, but sent in the clear
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


def test_queue_limit_flags_reach_the_engine_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    help_text = " ".join(build_parser().format_help().split())
    assert "--max-queue-per-user" in help_text and "--max-queue " in help_text and "in memory" in help_text
    base = ["--models-dir", str(tmp_path / "models")]
    config = engine_config_from_args(build_parser().parse_args(base))
    assert config.max_queue_per_user == 20 and config.max_queue == 200
    config = engine_config_from_args(build_parser().parse_args([*base, "--max-queue-per-user", "3",
                                                                "--max-queue", "50"]))
    assert config.max_queue_per_user == 3 and config.max_queue == 50
    for bad in (["--max-queue", "0"], ["--max-queue-per-user", "many"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
    assert "must be at least 1" in capsys.readouterr().err


def test_the_app_writes_its_audit_log_under_the_outputs_dir(tmp_path: Path, monkeypatch) -> None:
    import app.cli as cli
    import app.server
    from app.audit import AUDIT_FILE, audit, close_audit_log

    for name in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):  # main points Gradio's cache into outputs/
        monkeypatch.setenv(name, "unused")
    served = []
    monkeypatch.setattr(app.server, "serve", lambda engine, training, options, api: served.append((engine, options)))
    monkeypatch.setattr(cli, "training_service", lambda *args: None)
    outputs = tmp_path / "out"
    try:
        cli.main(["--models-dir", str(tmp_path / "models"), "--outputs-dir", str(outputs), "--no-api"])
        audit("queued", "local", "job-1", "txt2img model=x")
        assert served and " queued who=local job=job-1 txt2img model=x" in (outputs / AUDIT_FILE).read_text()
    finally:
        close_audit_log()
        for engine, _ in served:
            engine.shutdown()
    from gradio.utils import is_allowed_file

    kwargs = launch_kwargs(served[0][1], outputs, tmp_path / "models")  # the gallery's images are served, the audit not
    for name, allowed in ((AUDIT_FILE, False), (f"{AUDIT_FILE}.5", False), ("txt2img-images/x/00001-1.png", True)):
        assert is_allowed_file((outputs / name).resolve(), kwargs["blocked_paths"], kwargs["allowed_paths"], [])[0] \
            is allowed, name


# ----- TLS ------------------------------------------------------------------------------------------

def test_tls_flags_become_serve_options(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from test_tls import make_certificate

    cert, key = make_certificate(tmp_path)
    help_text = build_parser().format_help()
    assert "--tls-certfile" in help_text and "--tls-keyfile" in help_text
    options = serve_options_from_args(build_parser().parse_args(
        ["--listen", "--auth", "alice:one", "--tls-certfile", str(cert), "--tls-keyfile", str(key)]))
    assert options.tls and options.tls_certfile == cert.resolve() and options.tls_keyfile == key.resolve()
    assert warn_if_open(options) is None
    plain = serve_options_from_args(build_parser().parse_args(["--listen", "--auth", "alice:one"]))
    assert not plain.tls and plain.tls_certfile is None
    with caplog.at_level(logging.WARNING):
        message = warn_if_open(plain)
    assert message is not None and "passwords and images travel unencrypted" in message and message in caplog.text
    assert "--tls-certfile FILE --tls-keyfile FILE" in message
    assert warn_if_open(serve_options_from_args(build_parser().parse_args(["--auth", "alice:one"]))) is None  # this machine only


@pytest.mark.parametrize("given, missing", [("--tls-certfile", "--tls-keyfile"), ("--tls-keyfile", "--tls-certfile")])
def test_tls_needs_both_files(tmp_path: Path, capsys: pytest.CaptureFixture, given: str, missing: str) -> None:
    from app.cli import main

    (tmp_path / "file.pem").write_text("x")
    with pytest.raises(SystemExit) as exited:
        main([given, str(tmp_path / "file.pem")])
    assert exited.value.code == 2
    assert f"{given} needs {missing} too" in capsys.readouterr().err


def test_unusable_tls_files_are_clear_errors(tmp_path: Path) -> None:
    from test_tls import make_certificate

    from app.serving import TlsError

    cert, key = make_certificate(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = make_certificate(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")

    def options(*flags: str):
        return serve_options_from_args(build_parser().parse_args(list(flags)))

    with pytest.raises(TlsError, match=r"--tls-keyfile: cannot read .*none\.pem: No such file"):
        options("--tls-certfile", str(cert), "--tls-keyfile", str(tmp_path / "none.pem"))
    with pytest.raises(TlsError, match="--tls-certfile: cannot read"):
        options("--tls-certfile", str(tmp_path), "--tls-keyfile", str(key))  # a folder
    with pytest.raises(TlsError, match="the key does not belong to the certificate"):
        options("--tls-certfile", str(other_cert), "--tls-keyfile", str(key))
    with pytest.raises(TlsError, match="not a PEM certificate"):
        options("--tls-certfile", str(garbage), "--tls-keyfile", str(key))
    with pytest.raises(TlsError, match="--share cannot carry"):
        options("--share", "--tls-certfile", str(cert), "--tls-keyfile", str(key))
