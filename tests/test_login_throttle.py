"""Login throttling (app.login_throttle): the counting with a fake clock, then the real app built by
app.server.build_app, for the UI's POST /login and the REST API's HTTP Basic."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from starlette.datastructures import Headers
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from app.login_throttle import LoginThrottle, Throttled, client_address

AUDIT = "lora_studio.audit"
USER, PASSWORD = "alice", "wonderland"
PORT = 7860
PEER_HEADER = "x-test-peer"  # read by the test shim below, never by the app


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, times: int, address: str = "10.0.0.1") -> list[float]:
    return [throttle.failed(address, "mallory", "UI") for _ in range(times)]


# ----- the counting ----------------------------------------------------------------------------

def test_five_failures_within_a_minute_make_the_address_wait() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    assert fail(throttle, 4) == [0, 0, 0, 0]
    assert throttle.wait_left("10.0.0.1") == 0
    throttle.check("10.0.0.1")  # may still try
    assert throttle.failed("10.0.0.1", "mallory", "UI") == 2.0
    assert throttle.wait_left("10.0.0.1") == 2.0
    with pytest.raises(Throttled) as refused:
        throttle.check("10.0.0.1")
    assert refused.value.wait == 2.0 and "wait 2 s" in str(refused.value)
    clock.now += 1.5
    assert throttle.wait_left("10.0.0.1") == pytest.approx(0.5)
    clock.now += 0.5
    assert throttle.wait_left("10.0.0.1") == 0


def test_the_wait_doubles_with_each_further_failure_up_to_the_cap() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, max_wait_s=30)
    waits = []
    for wait in fail(throttle, 5):
        clock.now += wait
    for _ in range(6):
        waits.append(throttle.failed("10.0.0.1", "mallory", "UI"))
        assert throttle.wait_left("10.0.0.1") == waits[-1]
        clock.now += waits[-1]  # the address waits as told, then guesses again
    assert waits == [4, 8, 16, 30, 30, 30]


def test_a_wait_longer_than_the_window_still_grows() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, first_wait_s=50)
    assert fail(throttle, 5)[-1] == 50
    clock.now += 50
    assert throttle.failed("10.0.0.1", "mallory", "UI") == 100  # the failures of the minute are gone, the level is not
    clock.now += 100 + 60  # stays away a minute past its wait: forgiven
    assert fail(throttle, 4) == [0, 0, 0, 0]


def test_a_success_resets_the_count() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail(throttle, 5)
    clock.now += 2
    throttle.succeeded("10.0.0.1", USER, "UI")
    assert throttle.wait_left("10.0.0.1") == 0
    assert fail(throttle, 4) == [0, 0, 0, 0]  # four more may fail before a wait again
    assert throttle.failed("10.0.0.1", "mallory", "UI") == 2.0


def test_other_addresses_are_not_affected() -> None:
    throttle = LoginThrottle(clock=Clock())
    fail(throttle, 7, "10.0.0.1")
    assert throttle.wait_left("10.0.0.1") > 0
    assert throttle.wait_left("10.0.0.2") == 0
    assert throttle.failed("10.0.0.2", "bob", "API") == 0


def test_failures_older_than_the_minute_are_forgotten() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail(throttle, 4)
    clock.now += 61
    assert fail(throttle, 4) == [0, 0, 0, 0]  # the first four are out of the window
    clock.now += 30
    assert throttle.failed("10.0.0.1", "mallory", "UI") == 2.0  # five within the last minute
    clock.now += 2 + 61
    assert throttle.wait_left("10.0.0.1") == 0 and throttle.failed("10.0.0.1", "mallory", "UI") == 0


def test_logins_are_logged_with_name_and_address_never_the_password(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LoginThrottle(clock=Clock())
    with caplog.at_level(logging.INFO, logger=AUDIT):
        fail(throttle, 5)
        throttle.succeeded("10.0.0.2", USER, "UI")
        for _ in range(3):  # an API client sends its password with every request: logged once
            throttle.succeeded("10.0.0.3", USER, "API", every_time=False)
    records = [r for r in caplog.records if r.name == AUDIT]
    failed = [r for r in records if "failed" in r.getMessage()]
    assert len(failed) == 5 and all(r.levelno == logging.INFO for r in failed)
    assert "UI login failed for user 'mallory' from 10.0.0.1" == failed[0].getMessage()
    throttled = [r for r in records if r.levelno == logging.WARNING]
    assert len(throttled) == 1 and "10.0.0.1 throttled" in throttled[0].getMessage()
    assert "next attempt in 2 s" in throttled[0].getMessage()
    logins = [r.getMessage() for r in records if "login of user" in r.getMessage()]
    assert logins == ["UI login of user 'alice' from 10.0.0.2", "API login of user 'alice' from 10.0.0.3"]


def test_the_client_address_is_the_tcp_peer() -> None:
    assert client_address({"client": ("192.168.1.7", 5000), "headers": [(b"x-forwarded-for", b"1.2.3.4")]}) == "192.168.1.7"
    assert client_address({"client": None}) == "unknown"


def test_the_routes_own_check_counts_and_throttles() -> None:
    """ApiContext.owner on its own (the app puts PasswordFirst before it, which counts the same way)."""
    from app.api.context import ApiContext

    clock = Clock()
    context = ApiContext(engine=None, options=None, credentials=((USER, PASSWORD),),  # type: ignore[arg-type]
                         throttle=LoginThrottle(clock=clock))
    api = FastAPI()

    @api.get("/who")
    def who(owner: str = Depends(context.owner)) -> str:
        return owner

    client = TestClient(api)
    assert client.get("/who").status_code == 401  # no credentials: not a guess, not counted
    assert [client.get("/who", auth=("mallory", "x")).status_code for _ in range(5)] == [401] * 5
    refused = client.get("/who", auth=(USER, PASSWORD))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
    assert "Too many failed logins" in refused.json()["detail"]
    clock.now += 2
    assert client.get("/who", auth=(USER, PASSWORD)).json() == f"api:{USER}"


# ----- the real app ------------------------------------------------------------------------------------

def peer_from_header(app: ASGIApp) -> ASGIApp:
    """Give each request the TCP peer named by the test's x-test-peer header, as if it came from there."""
    async def shim(scope: Scope, receive: Receive, send: Send) -> None:
        peer = Headers(scope=scope).get(PEER_HEADER) if scope["type"] in ("http", "websocket") else None
        await app({**scope, "client": (peer, 50000)} if peer else scope, receive, send)

    return shim


@pytest.fixture(scope="module")
def real_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Clock]]:
    """app.server.build_app with a login and the API on the placeholder model; its throttle's clock is the test's."""
    from app_server import build_app_in_process

    clock = Clock()
    app, engine = build_app_in_process(tmp_path_factory.mktemp("throttled"), ((USER, PASSWORD),), PORT,
                                       throttle=LoginThrottle(clock=clock))
    try:
        with TestClient(peer_from_header(app), base_url=f"http://127.0.0.1:{PORT}", follow_redirects=False) as client:
            yield client, clock
    finally:
        engine.shutdown()


def login(client: TestClient, peer: str, password: str, user: str = USER):
    client.cookies.clear()
    return client.post("/login", data={"username": user, "password": password}, headers={PEER_HEADER: peer})


def test_the_ui_login_is_throttled_after_five_failures(real_app: tuple[TestClient, Clock],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    client, clock = real_app
    with caplog.at_level(logging.INFO, logger=AUDIT):
        assert [login(client, "10.1.0.1", "guess").status_code for _ in range(4)] == [400] * 4  # Gradio's "wrong"
        multipart = client.post("/login", files={"username": (None, "mallory"), "password": (None, "guess")},
                                headers={PEER_HEADER: "10.1.0.1"})  # as Gradio's login page sends it
        assert multipart.status_code == 400
        refused = login(client, "10.1.0.1", PASSWORD)  # the 6th attempt: not even a right password is looked at
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
        assert "Too many failed logins" in refused.json()["detail"] and not refused.cookies
        assert login(client, "10.1.0.2", PASSWORD).status_code == 200  # another address logs in
        clock.now += 2
        welcome = login(client, "10.1.0.1", PASSWORD)
        assert welcome.status_code == 200 and welcome.cookies
        assert login(client, "10.1.0.1", "guess").status_code == 400  # the count started again
    log = caplog.text
    assert "UI login failed for user 'alice' from 10.1.0.1" in log and "for user 'mallory' from 10.1.0.1" in log
    assert "UI logins from 10.1.0.1 throttled" in log and "UI login of user 'alice' from 10.1.0.1" in log
    assert "guess" not in log and PASSWORD not in log


def test_the_api_basic_auth_is_throttled_after_five_failures(real_app: tuple[TestClient, Clock]) -> None:
    client, clock = real_app
    client.cookies.clear()
    peer = {PEER_HEADER: "10.2.0.1"}
    for _ in range(8):  # no credentials at all: nothing is guessed, nothing counted
        assert client.get("/sdapi/v1/options", headers=peer).status_code == 401
    wrong = [client.get("/sdapi/v1/options", auth=(USER, "guess"), headers=peer).status_code for _ in range(5)]
    assert wrong == [401] * 5
    for request in (lambda: client.get("/sdapi/v1/options", auth=(USER, PASSWORD), headers=peer),
                    lambda: client.post("/sdapi/v1/txt2img", json={"prompt": "x"}, auth=(USER, PASSWORD), headers=peer),
                    lambda: client.get("/sdapi/v1/options", auth=(USER, PASSWORD),
                                       headers={**peer, "x-forwarded-for": "10.2.0.99"})):  # not trusted
        refused = request()
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
        assert refused.json()["error"] == "TooManyLogins" and "wait 2 s" in refused.json()["detail"]
    assert client.get("/sdapi/v1/options", auth=(USER, PASSWORD), headers={PEER_HEADER: "10.2.0.2"}).status_code == 200
    clock.now += 2
    assert client.get("/sdapi/v1/options", auth=(USER, PASSWORD), headers=peer).status_code == 200
    assert client.get("/sdapi/v1/options", auth=(USER, "guess"), headers=peer).status_code == 401  # reset


def test_api_and_ui_failures_count_together(real_app: tuple[TestClient, Clock]) -> None:
    client, clock = real_app
    peer = {PEER_HEADER: "10.3.0.1"}
    for _ in range(3):
        assert client.get("/sdapi/v1/options", auth=(USER, "guess"), headers=peer).status_code == 401
    assert [login(client, "10.3.0.1", "guess").status_code for _ in range(2)] == [400, 400]
    assert login(client, "10.3.0.1", PASSWORD).status_code == 429
    assert client.get("/sdapi/v1/options", auth=(USER, PASSWORD), headers=peer).status_code == 429
    clock.now += 2
    assert login(client, "10.3.0.1", PASSWORD).status_code == 200
    client.cookies.clear()


def test_parallel_ui_guesses_are_counted_one_by_one() -> None:
    """A burst of simultaneous POST /login from one address cannot all pass before the first failure counts."""
    import asyncio

    from app.login_throttle import ThrottledLogin

    throttle = LoginThrottle(clock=Clock())
    answered: list[int] = []

    async def gradio_login(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.sleep(0.01)  # the password check takes a while
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def one_attempt(app: ThrottledLogin) -> None:
        async def receive() -> dict:
            return {"type": "http.request", "body": b"username=mallory&password=guess", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])

        scope = {"type": "http", "method": "POST", "path": "/login", "client": ("10.4.0.1", 1), "headers": [
            (b"content-type", b"application/x-www-form-urlencoded")], "query_string": b""}
        await app(scope, receive, send)

    async def burst() -> None:
        app = ThrottledLogin(gradio_login, throttle)
        await asyncio.gather(*(one_attempt(app) for _ in range(20)))

    asyncio.run(burst())
    assert sorted(answered) == [400] * 5 + [429] * 15

