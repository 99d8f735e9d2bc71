"""Who may use the REST API: HTTP Basic of the --auth users (a browser login alone is not enough),
--no-api, and --listen refusing an open API unless --insecure-open-api."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
    queued = protected.log().count("queued for")
    refused = requests.post(protected.url + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1}, timeout=30)
    assert refused.status_code == 401
    assert protected.log().count("queued for") == queued  # the engine logs every job it queues: none was


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


def _wait_until(condition, what: str, timeout: float = 120.0):
    """Poll ``condition`` until it is truthy (a generous deadline only against a hang, not a speed check)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)
    return value


def _saved_prompts(app: RunningApp, skip: set[Path] = frozenset()) -> list[str]:
    """The prompts of the txt2img images saved (not in ``skip``), in the order the worker saved them: the one
    worker thread saves each job's images at its end, one after another, in each user's own folder
    (outputs/<user>/txt2img-images/...), so their modification times give the order."""
    from app.engine.outputs import read_parameters

    numbered = [p for p in app.outputs_dir.glob("*/txt2img-images/*/*.png")
                if re.match(r"\d{5,}-", p.name) and p not in skip]
    numbered.sort(key=lambda p: p.stat().st_mtime_ns)
    return [(read_parameters(p) or "").split("\n")[0] for p in numbered]


def test_an_api_bot_does_not_starve_a_browser_user(protected: RunningApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """API jobs share the UI's one worker, served by owner in turn: a bot's burst of requests (owner
    ``api:alice``) does not hold up a person's single job in the browser (owner ``user:bob``: with logins a person is one owner)."""
    from gradio_client import Client

    bots = 5
    # Without the client's heartbeat: its stream stays open after the test and holds the app's stop for 5 s.
    monkeypatch.setattr(Client, "_stream_heartbeat", staticmethod(lambda *args: None))
    browser = Client(protected.url, auth=("bob", "builder"), verbose=False, download_files=False)  # a Gradio login
    before = set(protected.outputs_dir.glob("*/txt2img-images/*/*.png"))
    bot_lines = protected.log().count("queued for api:alice")

    def bot(i: int) -> requests.Response:  # separate requests are separate jobs (n_iter would make one job)
        body = {"prompt": f"bot {i}", "steps": 6, "width": 64, "height": 64, "seed": i, "save_images": True,
                "send_images": False}
        return requests.post(protected.url + "/sdapi/v1/txt2img", json=body, auth=("alice", "wonderland"), timeout=300)

    with ThreadPoolExecutor(bots) as pool:
        answers = [pool.submit(bot, i) for i in range(bots)]
        # The engine logs each job it queues, with its owner: then all of the bot's jobs are in the worker's queue.
        _wait_until(lambda: protected.log().count("queued for api:alice") - bot_lines == bots, "the bot's jobs")
        job = browser.submit("tiny-random-sd1", "Automatic", "browser", "", "Euler a", "Automatic", 6, 7, 64, 64, 1,
                             1, 1, 1, "Original", [], False, api_name="/txt2img")
        # The UI streams the job's events from the first, sent once it is in the worker's queue ("Waiting: N jobs
        # ahead"): when it arrives the job was queued, and the bot's jobs done by now are at least those done then.
        _wait_until(lambda: job.outputs() or job.done(), "the browser's job to be queued")
        done_when_queued = sum(prompt != "browser" for prompt in _saved_prompts(protected, before))
        result = job.result(timeout=300)
        assert [answer.result().status_code for answer in answers] == [200] * bots
    order = _saved_prompts(protected, before)  # every job's image, in the order the jobs ended
    assert sorted(order) == sorted(["browser", *(f"bot {i}" for i in range(bots))])
    assert result[3].startswith("browser\n")  # the parameters of the browser's image
    assert bots - done_when_queued >= 3, f"the bot's jobs were nearly all done before the browser's was queued: {order}"
    # When the browser's job U was queued, the worker ran (at most) one bot job R and held the bot's others. The
    # queue takes the oldest job of the owner first in line and sends that owner to the back: the bot was first in
    # line (U's owner was added behind it), so after R it runs one more bot job, then U. So at most two bot jobs
    # end between U's queueing and U's end, and the UI told the person so; plain FIFO would run all the bot's
    # queued jobs (here >= 3, with R) first.
    assert order.index("browser") - done_when_queued <= 2, order
    ahead = re.search(r"Waiting: (\d+) jobs? ahead", str(job.outputs()[0]))
    assert ahead and int(ahead.group(1)) <= 2, job.outputs()[0]
