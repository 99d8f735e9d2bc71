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

API_OWNER_PREFIX = "api"
UNAUTHORIZED_MESSAGE = "Sign in with a user and password of --auth (HTTP Basic)."


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


@dataclass
class ApiContext:
    engine: Engine
    options: OptionsStore
    credentials: tuple[tuple[str, str], ...] = ()
    cmd_flags: dict = field(default_factory=dict)  # launch.py's flags, for /cmd-flags

    @property
    def users(self) -> dict[str, str]:
        return dict(self.credentials)

    @property
    def owner(self) -> Callable[..., str]:
        """A FastAPI dependency: the caller's owner name for the worker ("api:<user>", or "api"
        without logins). With logins, a missing or wrong password is a 401 and nothing runs."""
        users = self.users

        def dependency(request: Request) -> str:
            if not users:
                return API_OWNER_PREFIX
            user = basic_auth_user(request.headers.get("authorization"), users)
            if user is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED_MESSAGE,
                                    headers={"WWW-Authenticate": "Basic"})
            return f"{API_OWNER_PREFIX}:{user}"

        return dependency
