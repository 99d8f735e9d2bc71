"""What every route needs: the engine, the API's options, and who is calling."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from app.api.options import OptionsStore
from app.engine import Engine

API_OWNER_PREFIX = "api"
_basic = HTTPBasic(auto_error=False, description="The --auth / --auth-file users (HTTP Basic, as A1111's --api-auth)")


@dataclass
class ApiContext:
    engine: Engine
    options: OptionsStore
    credentials: tuple[tuple[str, str], ...] = ()
    cmd_flags: dict = field(default_factory=dict)  # launch.py's flags, for /cmd-flags

    @property
    def owner(self) -> Callable[..., str]:
        """A FastAPI dependency: the caller's owner name for the worker ("api:<user>", or "api"
        without logins). With logins, a missing or wrong password is a 401 and nothing runs."""
        users = dict(self.credentials)

        def dependency(given: HTTPBasicCredentials | None = Depends(_basic)) -> str:
            if not users:
                return API_OWNER_PREFIX
            expected = users.get(given.username) if given is not None else None
            if given is None or expected is None or not secrets.compare_digest(
                    given.password.encode("utf-8"), expected.encode("utf-8")):
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Sign in with a user and password of --auth "
                                    "(HTTP Basic).", headers={"WWW-Authenticate": "Basic"})
            return f"{API_OWNER_PREFIX}:{given.username}"

        return dependency
