"""The browser guards (app.web_guard): Host and Origin rules, no foreign CORS, protective headers, the
login redirect; on a small ASGI app, on the real app built by app.server.build_app, and in Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio.route_utils import CustomCORSMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from app.cli import build_parser, serve_options_from_args
from app.web_guard import (DOCS_CSP, UI_CSP, LoginRedirect, WebGuard, allowed_host_entry, allowed_hosts,
                           machine_names, parse_host, same_origin)

PORT = 7860
ALLOWED = allowed_hosts("127.0.0.1", ["studio.lan"])
EVIL = "http://evil.example"
PROTECTIVE = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer",
              "cross-origin-opener-policy": "same-origin"}


# ----- the rules as functions ---------------------------------------------------------------------

def test_host_headers_are_parsed_strictly() -> None:
    assert parse_host("localhost:7860") == ("localhost", 7860)
    assert parse_host("LOCALHOST.") == ("localhost", None)
    assert parse_host("[::1]:7860") == ("::1", 7860) == parse_host("[0:0::1]:7860")
    assert parse_host("[fe80::1%25eth0]:80") == ("fe80::1", 80)  # a link-local zone is not part of the host
    for bad in (None, "", "evil@localhost", "a b", "[abc]", "[::1]x", ":80", "localhost/x", "127.0.0.1:"):
        assert parse_host(bad) is None, bad


def test_same_origin_is_the_host_and_port_of_the_host_header() -> None:
    assert same_origin("http://localhost:7860", "localhost:7860")
    assert same_origin("http://[::1]:7860", "[::1]:7860")
    assert same_origin("https://studio.lan", "studio.lan")  # behind a TLS proxy: default ports on both sides
    assert same_origin("http://Studio.LAN:80", "studio.lan")
    assert not same_origin("http://localhost:3000", "localhost:7860")  # another program on this machine
    assert not same_origin("http://127.0.0.1:7860", "localhost:7860")
    assert not same_origin(EVIL, "localhost:7860")
    for bad in ("null", "file://", "http://evil.example@localhost:7860", "http://localhost:7860/x", "http://localhost:x"):
        assert not same_origin(bad, "localhost:7860"), bad


def test_allowed_hosts_follow_the_listen_address() -> None:
    local = allowed_hosts("127.0.0.1")
    assert local == {"localhost", "127.0.0.1", "::1"}
    lan = allowed_hosts("0.0.0.0", ["Studio.LAN:7860", "[fd00::5]", "fe80::9"],
                        local_names=lambda: {"box", "box.home.arpa", "192.168.1.20", "fe80::2%eth0"})
    assert {"box", "box.home.arpa", "192.168.1.20", "fe80::2", "studio.lan", "fd00::5", "fe80::9", "localhost"} <= lan
    assert "evil.example" not in lan
    assert "192.168.1.20" in allowed_hosts("192.168.1.20")
    with pytest.raises(ValueError, match="allowed-hosts"):
        allowed_host_entry("evil.example/path")


def test_this_machines_names_are_read_without_dns() -> None:
    import socket

    names = machine_names()  # the socket guard fails any lookup of a name that is not loopback
    assert socket.gethostname().lower() in names and "127.0.0.1" in names


def test_allowed_hosts_flag_becomes_serve_options() -> None:
    options = serve_options_from_args(build_parser().parse_args(["--allowed-hosts", "studio.lan, Render.Farm:8080,,"]))
    assert options.allowed_hosts == ("studio.lan", "render.farm")
    assert serve_options_from_args(build_parser().parse_args([])).allowed_hosts == ()
    assert "--allowed-hosts" in build_parser().format_help()
    with pytest.raises(ValueError):
        serve_options_from_args(build_parser().parse_args(["--allowed-hosts", "a b"]))


# ----- the middleware on a small app ----------------------------------------------------------------

def small_app() -> Starlette:
    """Routes for every method and a websocket, behind Gradio's own CORS middleware (which reflects any
    Origin, with credentials, when the Host is not a localhost name)."""

    async def answer(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.method} ok")

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    inner = Starlette(routes=[Route("/", answer, methods=methods), Route("/docs", answer), WebSocketRoute("/ws", socket)])
    inner.add_middleware(CustomCORSMiddleware)  # type: ignore[arg-type]
    inner.add_middleware(WebGuard, allowed_hosts=ALLOWED)  # type: ignore[arg-type]
    return inner


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(small_app(), base_url=f"http://127.0.0.1:{PORT}") as test_client:
        yield test_client


@pytest.mark.parametrize("host", ["localhost", f"127.0.0.1:{PORT}", f"[::1]:{PORT}", "studio.lan:8080", "LOCALHOST."])
def test_known_hosts_pass(client: TestClient, host: str) -> None:
    response = client.get("/", headers={"host": host})
    assert response.status_code == 200 and response.text == "GET ok"
    with client.websocket_connect("/ws", headers={"host": host}) as websocket:
        assert websocket.receive_text() == "hello"


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{PORT}", "localhost.evil.example", "[::2]", "evil@localhost", ""])
def test_other_hosts_get_403_for_http_and_websocket(client: TestClient, host: str) -> None:
    for method in ("GET", "POST", "OPTIONS"):
        response = client.request(method, "/", headers={"host": host})
        assert response.status_code == 403 and "Host" in response.text
        assert response.headers["content-type"].startswith("text/plain")
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/ws", headers={"host": host}):
            pass
    assert denied.value.status_code == 403


def test_foreign_origins_may_not_change_anything(client: TestClient) -> None:
    own = {"host": f"localhost:{PORT}", "origin": f"http://localhost:{PORT}"}
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for origin in (EVIL, "http://localhost:3000", f"http://127.0.0.1:{PORT}", "null"):
            refused = client.request(method, "/", headers={"host": f"localhost:{PORT}", "origin": origin})
            assert refused.status_code == 403 and "Cross-origin" in refused.text, (method, origin)
        assert client.request(method, "/", headers=own).status_code == 200
        assert client.request(method, "/", headers={"host": f"localhost:{PORT}"}).status_code == 200  # curl, API clients
    assert client.get("/", headers={"origin": EVIL}).status_code == 200  # reading is not changing; CORS keeps it unread
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/ws", headers={"host": f"127.0.0.1:{PORT}", "origin": EVIL}):
            pass
    assert denied.value.status_code == 403 and b"Cross-origin" in denied.value.content
    with client.websocket_connect("/ws", headers={"host": f"127.0.0.1:{PORT}", "origin": f"http://127.0.0.1:{PORT}"}) as websocket:
        assert websocket.receive_text() == "hello"


def test_no_cors_header_reaches_a_foreign_origin(client: TestClient) -> None:
    lan = {"host": "studio.lan:7860"}  # Gradio reflects any Origin for a Host that is not localhost
    response = client.get("/", headers={**lan, "origin": EVIL})
    assert response.status_code == 200 and not cors_headers(response)
    preflight = client.options("/", headers={**lan, "origin": EVIL, "access-control-request-method": "POST",
                                             "access-control-request-headers": "content-type"})
    assert not cors_headers(preflight)
    own = client.get("/", headers={**lan, "origin": "http://studio.lan:7860"})
    assert own.headers.get("access-control-allow-origin") in (None, "http://studio.lan:7860")


def test_every_response_carries_the_protective_headers(client: TestClient) -> None:
    for response in (client.get("/"), client.post("/"), client.get("/missing"),
                     client.get("/", headers={"host": "evil.example"}), client.post("/", headers={"origin": EVIL})):
        for name, value in PROTECTIVE.items():
            assert response.headers.get(name) == value, (response.request.url, name)
    page = client.get("/")
    assert page.headers["content-security-policy"] == UI_CSP and "frame-ancestors 'none'" in UI_CSP
    assert client.get("/docs").headers["content-security-policy"] == DOCS_CSP
    assert client.get("/docsearch").headers["content-security-policy"] == UI_CSP


def test_a_websocket_is_closed_unaccepted_where_the_server_cannot_send_a_403_body() -> None:
    import asyncio

    sent: list[dict] = []

    async def never_called(scope, receive, send) -> None:
        raise AssertionError("the app ran")

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    scope = {"type": "websocket", "path": "/ws", "headers": [(b"host", b"evil.example")], "extensions": {}}
    asyncio.run(WebGuard(never_called, allowed_hosts=ALLOWED)(scope, receive, send))
    assert [m["type"] for m in sent] == ["websocket.close"] and sent[0]["code"] == 1008


def test_the_login_redirect_sends_browsers_without_a_login_to_the_login_page() -> None:
    seen: list[str] = []

    async def page(request: Request) -> PlainTextResponse:
        seen.append(request.url.path)
        return PlainTextResponse("page")

    inner = Starlette(routes=[Route("/", page, methods=["GET", "HEAD", "POST"]), Route("/login", page, methods=["POST"]),
                              Route("/api", page)])
    app = LoginRedirect(inner, logged_in=lambda scope: b"session=ok" in dict(scope["headers"]).get(b"cookie", b""))
    client = TestClient(app, base_url="http://localhost", follow_redirects=False)
    assert client.get("/").status_code == 303 and client.get("/").headers["location"] == "/login"
    assert client.head("/").status_code == 303
    assert client.get("/login").status_code == 200 and seen[-1] == "/"  # the page at / draws the login form
    assert client.post("/login").status_code == 200 and seen[-1] == "/login"
    assert client.get("/api").status_code == 200
    client.cookies.set("session", "ok")
    assert client.get("/").status_code == 200
    assert client.get("/login").status_code == 303 and client.get("/login").headers["location"] == "/"


def cors_headers(response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-allow")}


# ----- the real app, built in this process ------------------------------------------------------------

USER, PASSWORD = "alice", "wonderland"


@pytest.fixture(scope="module")
def real_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    """app.server.build_app with a login, the API and --allowed-hosts studio.lan, on the placeholder model."""
    from app_server import build_app_in_process

    work = tmp_path_factory.mktemp("guarded")
    app, engine = build_app_in_process(work, ((USER, PASSWORD),), PORT, allowed_hosts=("studio.lan",))
    try:
        with TestClient(app, base_url=f"http://127.0.0.1:{PORT}", follow_redirects=False) as test_client:
            yield test_client, work / "outputs"
    finally:
        engine.shutdown()


def test_real_app_refuses_unknown_hosts_everywhere(real_app: tuple[TestClient, Path]) -> None:
    client, _ = real_app
    for path in ("/", "/login", "/config", "/gradio_api/info", "/sdapi/v1/options", "/docs", "/openapi.json"):
        assert client.get(path, headers={"host": "evil.example"}).status_code == 403, path
    assert client.post("/login", data={"username": USER, "password": PASSWORD},
                       headers={"host": "evil.example"}).status_code == 403
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/gradio_api/queue/join", headers={"host": "evil.example"}):
            pass
    assert denied.value.status_code == 403
    for host in ("localhost", f"127.0.0.1:{PORT}", f"[::1]:{PORT}", "studio.lan"):
        assert client.get("/login", headers={"host": host}).status_code == 200, host


def test_real_app_redirects_to_login_and_keeps_api_401(real_app: tuple[TestClient, Path]) -> None:
    client, _ = real_app
    client.cookies.clear()
    root = client.get("/")
    assert root.status_code in (302, 303, 307) and root.headers["location"] == "/login"
    login_page = client.get("/login")
    assert login_page.status_code == 200 and '"auth_required":true' in login_page.text.replace(" ", "")
    assert client.get("/sdapi/v1/options").status_code == 401
    assert client.get("/sdapi/v1/options", auth=(USER, PASSWORD)).status_code == 200
    foreign = client.post("/login", data={"username": USER, "password": PASSWORD}, headers={"origin": EVIL})
    assert foreign.status_code == 403 and not client.cookies
    login = client.post("/login", data={"username": USER, "password": PASSWORD},
                        headers={"origin": f"http://127.0.0.1:{PORT}"})
    assert login.status_code == 200 and client.cookies
    page = client.get("/")
    assert page.status_code == 200 and "txt2img" in page.text and '"auth_required":true' not in page.text.replace(" ", "")
    assert client.get("/login").headers["location"] == "/"  # where Gradio's reload after a login lands
    client.cookies.clear()


def test_real_app_gives_foreign_origins_no_cors(real_app: tuple[TestClient, Path]) -> None:
    client, _ = real_app
    for host in (f"127.0.0.1:{PORT}", "studio.lan"):
        config = client.get("/config", headers={"host": host, "origin": EVIL, "cookie": "x=1"})
        assert not cors_headers(config), host
        preflight = client.options("/gradio_api/queue/join", headers={
            "host": host, "origin": EVIL, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type"})
        assert not cors_headers(preflight), host
        join = client.post("/gradio_api/queue/join", json={}, headers={"host": host, "origin": EVIL})
        assert join.status_code == 403


def test_real_app_headers_on_page_api_and_files(real_app: tuple[TestClient, Path]) -> None:
    from PIL import Image

    client, outputs = real_app
    picture = outputs / "guard-check.png"
    picture.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(picture)
    client.cookies.clear()
    assert client.post("/login", data={"username": USER, "password": PASSWORD}).status_code == 200
    page = client.get("/")
    api = client.get("/sdapi/v1/options", auth=(USER, PASSWORD))
    file = client.get(f"/gradio_api/file={picture.resolve()}")
    docs = client.get("/docs")
    assert (page.status_code, api.status_code, file.status_code, docs.status_code) == (200, 200, 200, 200)
    assert file.content.startswith(b"\x89PNG")
    for response in (page, api, file, docs, client.get("/sdapi/v1/options")):
        for name, value in PROTECTIVE.items():
            assert response.headers.get(name) == value, (response.request.url, name)
    assert page.headers["content-security-policy"] == UI_CSP == file.headers["content-security-policy"]
    assert docs.headers["content-security-policy"] == DOCS_CSP
    client.cookies.clear()


# ----- Chromium: the UI works under the CSP -------------------------------------------------------------

CSP_WATCH = """window.__csp_violations = [];
document.addEventListener('securitypolicyviolation', (e) => window.__csp_violations.push(
  `${e.effectiveDirective} blocked ${e.blockedURI || e.sample} (${e.sourceFile}:${e.lineNumber})`));"""


@pytest.mark.slow
def test_the_ui_logs_in_and_works_under_the_csp_in_chromium(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    from app.bootstrap import CHROMIUM
    from app_server import start_app

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    running = start_app(tmp_path, "--auth", f"{USER}:{PASSWORD}")
    problems: list[str] = []
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                 args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.add_init_script(CSP_WATCH)
            page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(running.url)
            assert page.url == running.url + "/login"
            page.get_by_label(re.compile("username", re.I)).fill(USER)
            page.get_by_label(re.compile("password", re.I)).fill(PASSWORD)
            page.get_by_role("button", name=re.compile("login", re.I)).click()
            page.wait_for_selector("#txt2img_generate", timeout=60_000)
            assert page.url == running.url + "/"
            page.fill("#txt2img_prompt textarea", "a red circle")
            page.locator("#txt2img_prompt textarea").press("Control+Enter")  # the page script of app/ui HEAD
            page.wait_for_selector("#txt2img_gallery img", timeout=60_000)
            for tab in ("img2img", "Inpaint", "PNG Info", "Train LoRA", "txt2img"):
                page.get_by_role("tab", name=tab).click()
                if tab == "Inpaint":  # the image editor runs pixi.js, which needs 'unsafe-eval'
                    page.locator("#inpaint_editor canvas").first.wait_for(state="attached", timeout=20_000)
                page.wait_for_timeout(1000)
            problems += page.evaluate("window.__csp_violations")
            browser.close()
    finally:
        running.stop()
    assert not problems, problems
