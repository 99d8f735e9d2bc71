"""A1111's REST API (``/sdapi/v1``) on the engine: the third front end, beside the UI and scripts.

Routes and pydantic models only: every route turns JSON into an engine request (or a question to the
registry) and answers in A1111's shapes; none calls a pipeline or touches the worker directly.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import generate, info
from app.api.context import UNAUTHORIZED_MESSAGE, ApiContext, api_login
from app.api.errors import error_body, install_error_handlers
from app.login_throttle import LoginThrottle, Throttled, client_address, throttled_response

PREFIX = "/sdapi/v1"
DEFAULT_MAX_BODY_MB = 50


def add_api(app: FastAPI, context: ApiContext) -> None:
    """Serve the API on ``app`` under /sdapi/v1 (before the UI is mounted at /)."""
    router = APIRouter(prefix=PREFIX)
    router.include_router(generate.router(context))
    router.include_router(info.router(context))
    app.include_router(router)
    install_error_handlers(app)
    max_mb = int(context.cmd_flags.get("max_upload_mb", DEFAULT_MAX_BODY_MB))
    app.add_middleware(BodySizeLimit, prefix=PREFIX, max_bytes=max_mb * 1024 * 1024)  # type: ignore[arg-type]
    if context.credentials:  # added last, so it runs first: no body is read for a caller without a password
        app.add_middleware(PasswordFirst, prefix=PREFIX, users=context.users,  # type: ignore[arg-type]
                           throttle=context.throttle)


class PasswordFirst:
    """ASGI middleware: with logins, a request under ``prefix`` without a valid HTTP Basic header gets
    401 before its body is read (the routes check again and name the owner), and one from an address
    throttled after failed logins gets 429 (``app.login_throttle``)."""

    def __init__(self, app: ASGIApp, prefix: str, users: dict[str, str], throttle: LoginThrottle) -> None:
        self.app, self.prefix, self.users, self.throttle = app, prefix, users, throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            try:
                user = api_login(header, self.users, client_address(scope), self.throttle)
            except Throttled as refused:
                await throttled_response(refused.wait, error_body("TooManyLogins", str(refused)))(scope, receive, send)
                return
            if user is None:
                await JSONResponse({"detail": UNAUTHORIZED_MESSAGE}, 401,
                                   headers={"WWW-Authenticate": "Basic"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes the limit."""


class BodySizeLimit:
    """ASGI middleware: a body over ``max_bytes`` on a path under ``prefix`` gets 413 with a readable
    message, from its Content-Length before anything is read, or as soon as a streamed body passes it."""

    def __init__(self, app: ASGIApp, prefix: str, max_bytes: int) -> None:
        self.app, self.prefix, self.max_bytes = app, prefix, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:  # the app's answer to the broken body (FastAPI makes it a 400) is replaced
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if over and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        limit_mb = self.max_bytes // (1024 * 1024)
        body = json.dumps(error_body("PayloadTooLarge", f"The request body is over the {limit_mb} MB limit "
                                     "(--max-upload-mb); send smaller images.")).encode("utf-8")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
