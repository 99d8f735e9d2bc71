"""https with --tls-certfile/--tls-keyfile: the launched app (with --auth) answers over TLS only, and a
person logs in over https in Debian's Chromium. One app for the module: it takes a while to start."""

from __future__ import annotations

import datetime
import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app.bootstrap import CHROMIUM
from app_server import RunningApp, start_app

USER, PASSWORD = "alice", "wonderland"


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost and its key: with the cryptography package
    where it is installed, else with the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        write_with_cryptography(cert, key)
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("no way to make a test certificate: neither the cryptography package nor openssl is installed")
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


def write_with_cryptography(cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2)).add_extension(names, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def test_serve_hands_the_files_to_uvicorn_and_prints_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    from types import SimpleNamespace

    import app.server
    from app.serving import ServeOptions

    ran: dict = {}
    monkeypatch.setattr(app.server, "build_app", lambda *args: "the app")
    monkeypatch.setattr(app.server.uvicorn, "run", lambda asgi, **kwargs: ran.update(kwargs, app=asgi))
    options = ServeOptions(host="0.0.0.0", port=8443, tls_certfile=tmp_path / "c.pem", tls_keyfile=tmp_path / "k.pem")
    app.server.serve(SimpleNamespace(), None, options, None)  # type: ignore[arg-type]
    assert ran["app"] == "the app" and ran["port"] == 8443
    assert ran["ssl_certfile"] == str(tmp_path / "c.pem") and ran["ssl_keyfile"] == str(tmp_path / "k.pem")
    assert "Running on local URL:  https://127.0.0.1:8443" in capsys.readouterr().out
    ran.clear()
    app.server.serve(SimpleNamespace(), None, ServeOptions(port=8080), None)  # type: ignore[arg-type]
    assert ran["port"] == 8080 and "ssl_certfile" not in ran and "ssl_keyfile" not in ran
    assert "Running on local URL:  http://127.0.0.1:8080" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tls_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningApp, Path]]:
    work = tmp_path_factory.mktemp("tls-app")
    cert, key = make_certificate(work)
    running = start_app(work, "--auth", f"{USER}:{PASSWORD}", "--tls-certfile", str(cert), "--tls-keyfile", str(key))
    yield running, cert
    running.stop()


def test_the_app_answers_over_tls_only(tls_app: tuple[RunningApp, Path]) -> None:
    running, cert = tls_app
    assert running.url.startswith("https://127.0.0.1:")
    assert f"Running on local URL:  {running.url}" in running.log()
    page = requests.get(running.url + "/", verify=str(cert), timeout=30)  # -> /login, Gradio's login form
    assert page.status_code == 200 and page.url == running.url + "/login"
    assert '"auth_required":true' in page.text.replace(" ", "")
    api = requests.get(running.url + "/sdapi/v1/options", auth=(USER, PASSWORD), verify=str(cert), timeout=30)
    assert api.status_code == 200 and "sd_model_checkpoint" in api.json()
    with pytest.raises(requests.ConnectionError):  # uvicorn drops a connection that starts without a TLS handshake
        requests.get(running.url.replace("https://", "http://") + "/login", timeout=30)


@pytest.mark.slow
def test_a_person_logs_in_over_https_in_chromium(tls_app: tuple[RunningApp, Path]) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (run_tests.py installs it with apt-get on Debian as root)")
    running, _ = tls_app
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(running.url)
            assert page.url == running.url + "/login"
            login = page.get_by_role("button", name=re.compile("login", re.I))
            for _ in range(6):  # the sixth wrong password within a minute is throttled: the form says so
                page.get_by_label(re.compile("username", re.I)).fill(USER)  # a failure empties both fields
                page.get_by_label(re.compile("password", re.I)).fill("wrong")
                with page.expect_response(lambda answer: answer.url.endswith("/login") and answer.request.method == "POST"):
                    login.click()
            note = page.locator("#ls-login-wait")
            note.wait_for(timeout=10_000)
            assert "wait" in note.inner_text().lower()
            page.wait_for_timeout(int(1000 * 2.5))  # the first wait is 2 s
            page.get_by_label(re.compile("username", re.I)).fill(USER)  # the form empties both after a failure
            page.get_by_label(re.compile("password", re.I)).fill(PASSWORD)
            login.click()
            page.wait_for_selector("#txt2img_generate", timeout=60_000)
            assert page.url == running.url + "/"
            cookies = {cookie["name"]: cookie for cookie in context.cookies()}
            secure = [cookie for name, cookie in cookies.items() if name.startswith("access-token-")
                      and "unsecure" not in name]
            assert secure and secure[0]["secure"]  # Gradio's secure login cookie is kept over https
        finally:
            browser.close()


def test_a_foreign_origin_with_a_login_gets_no_cors_over_https(tls_app: tuple[RunningApp, Path]) -> None:
    """Over https the browser keeps Gradio's SameSite=None login cookie, so it would ride along on a
    cross-site request: such a request must still get no Access-Control-Allow-Origin."""
    running, cert = tls_app
    session = requests.Session()  # (verify= per request: an environment CA bundle would override session.verify)
    login = session.post(running.url + "/login", data={"username": USER, "password": PASSWORD}, verify=str(cert),
                         timeout=30)
    assert login.status_code == 200 and session.cookies
    evil = {"Origin": "https://evil.example"}
    config = session.get(running.url + "/config", headers=evil, verify=str(cert), timeout=30)
    assert config.status_code == 200  # logged in: the page's config is served...
    preflight = session.options(running.url + "/gradio_api/queue/join", verify=str(cert), timeout=30, headers={
        **evil, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    for answer in (config, preflight):  # ...but to no other site
        assert not any(name.lower().startswith("access-control-") for name in answer.headers), answer.headers
    own = session.get(running.url + "/config", headers={"Origin": running.url}, verify=str(cert), timeout=30)
    assert own.status_code == 200
