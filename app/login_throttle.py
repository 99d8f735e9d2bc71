"""Login throttling: after a few failed logins from one client address, that address waits before its
next try, twice as long after each further failure.

One ``LoginThrottle`` per server counts the failures of the UI's login form (``ThrottledLogin``, around
Gradio's ``POST /login``) and of the REST API's HTTP Basic (``app.api.PasswordFirst`` and the routes'
own check), so guesses through either count together. The address is the TCP peer
(``scope["client"]``): X-Forwarded-For is not read, since any client can send one. While an address
must wait it gets 429 with ``Retry-After`` and its password is not checked.

Logins are logged to ``lora_studio.audit`` with the user name and the address, never the password:
failures and UI logins every time, an API client's first success (it sends its password with every
request), each back-off as a warning.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

AUDIT = logging.getLogger("lora_studio.audit")
UNKNOWN_ADDRESS = "unknown"
MAX_TRACKED = 4096  # addresses or (user, address) pairs kept before the oldest are dropped
LOGGED_NAME_CHARS = 64


class Throttled(Exception):
    """A login attempt from an address that must still wait ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(throttled_message(wait))
        self.wait = wait


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)  # times of the failures within the window
    level: int = 0  # back-offs imposed since the address was last forgiven
    blocked_until: float = 0.0


class LoginThrottle:
    """Failed logins per client address, and the wait they impose.

    ``max_failures`` failures within ``window_s`` start a wait of ``first_wait_s``; each failure after
    it doubles the wait, up to ``max_wait_s``. An address that stays away ``window_s`` past its wait, or
    logs in, starts afresh. ``clock`` is injectable so tests need no sleeps. Thread-safe: the API's
    route dependencies run in a thread pool.
    """

    def __init__(self, max_failures: int = 5, window_s: float = 60.0, first_wait_s: float = 2.0,
                 max_wait_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s = max_failures, window_s
        self.first_wait_s, self.max_wait_s = first_wait_s, max_wait_s
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._known: OrderedDict[tuple[str, str, str], None] = OrderedDict()  # (channel, user, address) logged in
        self._lock = threading.Lock()

    def wait_left(self, address: str) -> float:
        """Seconds ``address`` must still wait before its next attempt; 0 when it may try."""
        with self._lock:
            now = self.clock()
            record = self._current(address, now)
            return max(0.0, record.blocked_until - now) if record else 0.0

    def check(self, address: str) -> None:
        """Raise ``Throttled`` while ``address`` must wait."""
        wait = self.wait_left(address)
        if wait > 0:
            raise Throttled(wait)

    def failed(self, address: str, user: str, channel: str) -> float:
        """Count a failed login of ``user`` from ``address``; the wait it imposes (0 under the limit)."""
        with self._lock:
            now = self.clock()
            record = self._current(address, now) or self._records.setdefault(address, _Record())
            record.failures.append(now)
            wait = 0.0
            if record.level or len(record.failures) >= self.max_failures:
                record.level += 1
                wait = min(self.first_wait_s * 2 ** (record.level - 1), self.max_wait_s)
                record.blocked_until = now + wait
            self._trim(now)
        AUDIT.info("%s login failed for user %r from %s", channel, _shown(user), address)
        if wait:
            AUDIT.warning("%s logins from %s throttled after %d recent failures, next attempt in %.0f s",
                          channel, address, len(record.failures), wait)
        return wait

    def succeeded(self, address: str, user: str, channel: str, every_time: bool = True) -> None:
        """Forget the failures of ``address`` and log the login; with ``every_time`` False, only the first
        one of this user from this address (or the first after a failure) is logged."""
        with self._lock:
            had_failures = self._records.pop(address, None) is not None
            key = (channel, user, address)
            news = every_time or had_failures or key not in self._known
            self._known[key] = None
            self._known.move_to_end(key)
            while len(self._known) > MAX_TRACKED:
                self._known.popitem(last=False)
        if news:
            AUDIT.info("%s login of user %r from %s", channel, _shown(user), address)

    def _current(self, address: str, now: float) -> _Record | None:
        """The record of ``address`` with old failures dropped, or None once nothing of it counts."""
        record = self._records.get(address)
        if record is None:
            return None
        if record.level and now >= record.blocked_until + self.window_s:
            record.level, record.blocked_until = 0, 0.0
            record.failures.clear()
        while record.failures and record.failures[0] <= now - self.window_s:
            record.failures.popleft()
        if not record.failures and not record.level:
            del self._records[address]
            return None
        return record

    def _trim(self, now: float) -> None:
        """Bound the memory many addresses could take: drop what no longer counts, then the oldest."""
        if len(self._records) <= MAX_TRACKED:
            return
        for address in list(self._records):
            self._current(address, now)
        while len(self._records) > MAX_TRACKED:
            del self._records[next(iter(self._records))]


def _shown(name: str) -> str:
    return name[:LOGGED_NAME_CHARS]


def throttled_message(wait: float) -> str:
    return (f"Too many failed logins from your address: wait {retry_after(wait)} s before trying again. "
            "Ask the operator for the password if you have lost it.")


def retry_after(wait: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))


def client_address(scope: Scope) -> str:
    """The TCP peer's address (a unix socket has none)."""
    client = scope.get("client")
    return str(client[0]) if client else UNKNOWN_ADDRESS


def throttled_response(wait: float, body: Mapping[str, object]) -> JSONResponse:
    """429 with ``Retry-After`` and a JSON body."""
    return JSONResponse(dict(body), 429, headers={"Retry-After": retry_after(wait)})


class ThrottledLogin:
    """ASGI middleware around the UI's login form: ``POST /login`` from an address that must wait gets
    429 before Gradio reads it; otherwise Gradio's answer tells the outcome (200 and a cookie for a
    login, 400 for wrong credentials) and is counted.

    Attempts from one address run one at a time, so a burst of parallel guesses cannot all pass the
    check before the first failure is counted.
    """

    PATHS = ("/login", "/login/")
    FAILED = (400, 401)  # Gradio answers wrong credentials with 400 "Incorrect credentials."
    MAX_FORM_BYTES = 64 * 1024  # read back for the user name in the log; a login form is far smaller

    def __init__(self, app: ASGIApp, throttle: LoginThrottle) -> None:
        self.app, self.throttle = app, throttle
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.PATHS:
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        async with self._turn(address):
            wait = self.throttle.wait_left(address)
            if wait > 0:
                await throttled_response(wait, {"detail": throttled_message(wait)})(scope, receive, send)
                return
            body = bytearray()
            status = 0

            async def teeing_receive() -> Message:
                message = await receive()
                if message["type"] == "http.request" and len(body) <= self.MAX_FORM_BYTES:
                    body.extend(message.get("body", b""))
                return message

            async def watching_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, teeing_receive, watching_send)
            if status == 200:
                self.throttle.succeeded(address, await _form_user(scope, bytes(body)), "UI")
            elif status in self.FAILED:
                self.throttle.failed(address, await _form_user(scope, bytes(body)), "UI")

    @asynccontextmanager
    async def _turn(self, address: str) -> AsyncIterator[None]:
        lock, users = self._turns.get(address, (asyncio.Lock(), 0))
        self._turns[address] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[address]
            if users == 1:
                del self._turns[address]
            else:
                self._turns[address] = (lock, users - 1)


async def _form_user(scope: Scope, body: bytes) -> str:
    """The ``username`` field of a login form (urlencoded or multipart), or "?" when it cannot be read."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form: FormData = await Request(scope, replay).form()
    except (HTTPException, MultiPartException, ValueError, KeyError):
        return "?"
    name = form.get("username")
    return name.strip() if isinstance(name, str) else "?"
