"""What every route needs: the engine, the API's options, and who is calling."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fastapi import HTTPException, Request, status

from app.api.options import OptionsStore
from app.engine import Engine
from app.login_throttle import LoginThrottle, Throttled, client_address, retry_after

API_OWNER_PREFIX = "api"
UNAUTHORIZED_MESSAGE = "Sign in with a user and password of --auth (HTTP Basic)."


def api_owner(user: str | None) -> str:
    """The worker's owner name of an API caller: ``api:<user>`` with logins, ``api`` without."""
    return API_OWNER_PREFIX if user is None else f"{API_OWNER_PREFIX}:{user}"


def api_user(owner: str) -> str | None:
    """The logged-in user of an ``api_owner`` name (whose outputs/ folder gets the pictures), None without logins."""
    prefix, sep, user = owner.partition(":")
    return user if prefix == API_OWNER_PREFIX and sep else None


def basic_auth_user(header: str | None, users: Mapping[str, str]) -> str | None:
    """The user named by a valid HTTP Basic ``Authorization`` header (UTF-8, as browsers and requests
    send it), or None. Every user is compared, in constant time, so timing tells no names."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    found = None
    for user, secret in users.items():
        same_name = secrets.compare_digest(name.encode("utf-8"), user.encode("utf-8"))
        same_password = secrets.compare_digest(password.encode("utf-8"), secret.encode("utf-8"))
        if same_name & same_password & bool(sep):
            found = user
    return found


def basic_auth_name(header: str | None) -> str | None:
    """The user name an HTTP Basic header offers (for the log), or None when it is no Basic header."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, ValueError):
        return "?"


def api_login(header: str | None, users: Mapping[str, str], address: str, throttle: LoginThrottle) -> str | None:
    """The user of a valid HTTP Basic header from ``address``, else None; ``Throttled`` while the address
    must wait, before the password is looked at. A wrong password counts as a failed login; a request
    without Basic credentials guesses nothing and is not counted."""
    throttle.check(address)
    user = basic_auth_user(header, users)
    if user is not None:
        throttle.succeeded(address, user, "API", every_time=False)  # clients send it with every request
        return user
    offered = basic_auth_name(header)
    if offered is not None:
        throttle.failed(address, offered, "API")
    return None


@dataclass
class ApiContext:
    engine: Engine
    options: OptionsStore
    credentials: tuple[tuple[str, str], ...] = ()
    cmd_flags: dict = field(default_factory=dict)  # launch.py's flags, for /cmd-flags
    throttle: LoginThrottle = field(default_factory=LoginThrottle)  # shared with the UI's login (app.server)

    @property
    def users(self) -> dict[str, str]:
        return dict(self.credentials)

    @property
    def owner(self) -> Callable[..., str]:
        """A FastAPI dependency: the caller's owner name for the worker ("api:<user>", or "api"
        without logins). With logins, a missing or wrong password is a 401 and nothing runs, and an
        address throttled after failed logins gets 429."""
        users, throttle = self.users, self.throttle

        def dependency(request: Request) -> str:
            if not users:
                return api_owner(None)
            try:
                user = api_login(request.headers.get("authorization"), users, client_address(request.scope), throttle)
            except Throttled as refused:
                raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(refused),
                                    headers={"Retry-After": retry_after(refused.wait)}) from None
            if user is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED_MESSAGE,
                                    headers={"WWW-Authenticate": "Basic"})
            return api_owner(user)

        return dependency
