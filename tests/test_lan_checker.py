"""The third-party checker of local image-generation setups (``ligsp``, PyPI local-image-gen-security)
against the launched app with ``--listen --auth`` over https, on loopback and from a second computer.

The "computers" are two network namespaces this test makes, joined by a veth pair with addresses of
its own (10.213.77.1 and .2): every probe stays inside them. The server's namespace is the first;
the checker runs there against 127.0.0.1 (its own addresses are the server's), and in the second
against 10.213.77.1. The self-signed certificate is trusted through ``SSL_CERT_FILE``, as a team
installs its certificate. Needs root and ``ip``; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.engine.placeholder import ensure_placeholder_model
from app_server import ROOT, free_port

SERVER_ADDRESS, CLIENT_ADDRESS = "10.213.77.1", "10.213.77.2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[tuple[str, str]]:
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and the ip command to make network namespaces")
    if shutil.which("ligsp", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the checker is not installed (the test extra local-image-gen-security)")
    tag = uuid.uuid4().hex[:6]
    server, client = f"ls-srv-{tag}", f"ls-cli-{tag}"
    veth_server, veth_client = f"lsv{tag}a", f"lsv{tag}b"
    try:
        ip("netns", "add", server)
        ip("netns", "add", client)
        ip("link", "add", veth_server, "type", "veth", "peer", "name", veth_client)
        ip("link", "set", veth_server, "netns", server)
        ip("link", "set", veth_client, "netns", client)
        for namespace, device, address in ((server, veth_server, SERVER_ADDRESS), (client, veth_client, CLIENT_ADDRESS)):
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", device)
            ip("-n", namespace, "link", "set", device, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        for namespace in (server, client):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        pytest.skip(f"cannot make network namespaces here: {exc.stderr.decode(errors='replace').strip()}")
    yield server, client
    for namespace in (server, client):  # the veth pair goes with them
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@pytest.fixture(scope="module")
def lan_app(namespaces: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Path]]:
    """``launch.py --listen --auth ... --tls-*`` in the server's namespace: (port, certificate, models)."""
    server, _ = namespaces
    work = tmp_path_factory.mktemp("lan-app")
    cert, key = work / "cert.pem", work / "key.pem"
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=lora-studio-test",
                    "-addext", f"subjectAltName=IP:{SERVER_ADDRESS},IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    models, outputs = work / "models", work / "outputs"
    port = free_port()
    log_path = work / "app.log"
    command = ["ip", "netns", "exec", server, sys.executable, str(ROOT / "launch.py"), "--listen",
               "--auth", "alice:checker-pw", "--tls-certfile", str(cert), "--tls-keyfile", str(key),
               "--model", ensure_placeholder_model(models), "--models-dir", str(models), "--outputs-dir", str(outputs),
               "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while "Running on local URL" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        time.sleep(1)  # uvicorn prints before it accepts
        yield port, cert, models
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def check(namespace: str, url: str, cert: Path, *extra: str) -> dict:
    """The checker's JSON report for ``url``, run inside ``namespace``."""
    ligsp = str(Path(sys.executable).parent / "ligsp")
    done = subprocess.run(["ip", "netns", "exec", namespace, ligsp, "check", url, *extra, "--json", "-"],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "SSL_CERT_FILE": str(cert)})
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"the checker gave no JSON report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


def verdicts(report: dict) -> dict[str, str]:
    """Requirement id -> status ("pass", "warn", "fail", "unknown") over every target of a report."""
    return {result["id"]: result["status"] for target in report["targets"] for result in target["results"]}


@pytest.mark.slow
def test_the_checker_finds_nothing_from_this_computer_or_another(namespaces: tuple[str, str],
                                                                 lan_app: tuple[int, Path, Path]) -> None:
    server, client = namespaces
    port, cert, models = lan_app
    local = verdicts(check(server, f"https://127.0.0.1:{port}", cert, "--models", str(models)))
    remote = verdicts(check(client, f"https://{SERVER_ADDRESS}:{port}", cert))
    for where, found in (("on this computer", local), ("from another computer", remote)):
        assert found, f"the checker reported no checks {where}"
        bad = {check_id: status for check_id, status in found.items() if status in ("fail", "warn")}
        assert not bad, f"the checker objects {where}: {bad}"
    # what the issue named: rebinding, headers and CORS on loopback; login, CORS and https from the LAN
    assert {local[key] for key in ("WEB-1", "WEB-2", "WEB-3", "MOD-1")} == {"pass"}
    assert {remote[key] for key in ("NET-2", "WEB-1", "WEB-2", "WEB-3", "BE-1")} == {"pass"}
