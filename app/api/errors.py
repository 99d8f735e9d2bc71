"""Errors in A1111's shape: 4xx with ``{"error", "detail", "body", "errors"}`` and a readable detail.

A bad request never reaches the worker as a 500: ValueError (the engine's "bad input") becomes 422,
a full queue (the engine's QueueFull, a ValueError) 429, an unknown route keeps FastAPI's 404, schema
errors keep FastAPI's 422 ``{"detail": [...]}``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.engine.jobs import QueueFull

log = logging.getLogger(__name__)


class ApiError(ValueError):
    """A refusal with a status and a message for the caller (a ValueError, so that work on the engine's
    worker that raises one fails its job with the same message)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def error_body(kind: str, message: str) -> dict:
    return {"error": kind, "detail": message, "body": "", "errors": message}


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        log.warning("API %s %s refused (%d): %s", request.method, request.url.path, exc.status_code, exc.message)
        return JSONResponse(error_body(type(exc).__name__, exc.message), status_code=exc.status_code)

    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        log.warning("API %s %s refused: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body("ValueError", str(exc)), status_code=422)

    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        log.warning("API %s %s refused (429): %s", request.method, request.url.path, exc)
        return JSONResponse(error_body("QueueFull", str(exc)), status_code=429)

    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(QueueFull, queue_full)  # type: ignore[arg-type]
    app.add_exception_handler(ValueError, value_error)  # type: ignore[arg-type]
