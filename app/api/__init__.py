"""A1111's REST API (``/sdapi/v1``) on the engine: the third front end, beside the UI and scripts.

Routes and pydantic models only: every route turns JSON into an engine request (or a question to the
registry) and answers in A1111's shapes; none calls a pipeline or touches the worker directly.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from app.api import generate, info
from app.api.context import ApiContext
from app.api.errors import install_error_handlers

PREFIX = "/sdapi/v1"


def add_api(app: FastAPI, context: ApiContext) -> None:
    """Serve the API on ``app`` under /sdapi/v1 (before the UI is mounted at /)."""
    router = APIRouter(prefix=PREFIX)
    router.include_router(generate.router(context))
    router.include_router(info.router(context))
    app.include_router(router)
    install_error_handlers(app)
