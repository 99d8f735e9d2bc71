"""Generation routes (filled in below)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.context import ApiContext


def router(context: ApiContext) -> APIRouter:
    return APIRouter(tags=["generation"])
