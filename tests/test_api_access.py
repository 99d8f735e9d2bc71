"""Who may use the REST API: HTTP Basic of the --auth users (a browser login alone is not enough),
--no-api, and --listen refusing an open API unless --insecure-open-api."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from app_server import ROOT, RunningApp, start_app

USERS = "alice:wonderland,bob:builder"
ROUTES = ("/sdapi/v1/options", "/sdapi/v1/sd-models", "/sdapi/v1/progress")


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory):
    running = start_app(tmp_path_factory.mktemp("api-auth"), "--auth", USERS)
    yield running
    running.stop()


def test_api_calls_need_the_password_of_a_user(protected: RunningApp) -> None:
    for route in ROUTES:
        missing = requests.get(protected.url + route, timeout=30)
        wrong = requests.get(protected.url + route, auth=("alice", "builder"), timeout=30)
        stranger = requests.get(protected.url + route, auth=("mallory", "wonderland"), timeout=30)
        right = requests.get(protected.url + route, auth=("bob", "builder"), timeout=30)
        assert (missing.status_code, wrong.status_code, stranger.status_code, right.status_code) == (401, 401, 401, 200)
        assert missing.headers.get("WWW-Authenticate") == "Basic"
        assert "password" in missing.json()["detail"]
    refused = requests.post(protected.url + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1}, timeout=30)
    assert refused.status_code == 401
    assert "queued for" not in protected.log()  # the engine logs every job it queues: none was


def test_a_browser_login_alone_does_not_open_the_api(protected: RunningApp) -> None:
    session = requests.Session()
    login = session.post(protected.url + "/login", data={"username": "alice", "password": "wonderland"}, timeout=30)
    assert login.status_code == 200 and session.cookies  # the UI's login cookie
    assert session.get(protected.url + "/config", timeout=30).status_code == 200  # the UI is open to it
    assert session.get(protected.url + "/sdapi/v1/options", timeout=30).status_code == 401


def test_no_api_serves_the_ui_only(tmp_path) -> None:
    running = start_app(tmp_path, "--no-api")
    try:
        assert requests.get(running.url + "/sdapi/v1/options", timeout=30).status_code == 404
        assert requests.get(running.url + "/docs", timeout=30).status_code == 404
        assert requests.get(running.url + "/", timeout=30).status_code == 200
    finally:
        running.stop()


def test_listen_refuses_an_open_api_and_says_why(tmp_path) -> None:
    command = [sys.executable, str(ROOT / "launch.py"), "--listen", "--models-dir", str(tmp_path / "models"),
               "--outputs-dir", str(tmp_path / "outputs"), "--port", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert "--insecure-open-api" in done.stderr and "--auth" in done.stderr and "--no-api" in done.stderr


def test_basic_auth_reads_utf8_and_refuses_malformed_headers() -> None:
    import base64

    from app.api.context import basic_auth_user

    users = {"zoë": "pässwörd", "bob": "builder"}

    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode("utf-8")).decode()

    assert basic_auth_user(header("zoë:pässwörd"), users) == "zoë"
    assert basic_auth_user(header("bob:builder"), users) == "bob"
    for bad in (header("bob:wrong"), header("bob"), header("nobody:builder"), "Basic !!!", "Bearer x", "", None):
        assert basic_auth_user(bad, users) is None, bad


def test_no_body_is_read_before_the_password(protected: RunningApp) -> None:
    """A caller without a password gets 401 at once, even for a body over the upload limit."""
    big = b"x" * (60 * 1024 * 1024)
    refused = requests.post(protected.url + "/sdapi/v1/txt2img", data=big, timeout=60,
                            headers={"Content-Type": "application/json"})
    assert refused.status_code == 401
