"""Per-person files when logins are on: ASGI middleware around Gradio's file routes.

With logins each user's pictures are saved under ``outputs/<user>/`` (``app.engine.outputs``). Gradio serves
files by path (``/gradio_api/file=<path>``, ``/gradio_api/file/<path>``) to anyone logged in; ``FileAccess``
narrows that:

- a file under another user's folder, ``outputs/<other>/...``, is refused (403);
- a file in Gradio's cache (``outputs/.gradio-cache``: uploads, and the copies Gradio makes of results and
  previews to show them) is served only to the users the server handed its path to. The middleware reads
  the answers on their way out: the paths ``POST /gradio_api/upload`` returns, and the ``path`` of every
  file object in Gradio's JSON answers and event streams (``/gradio_api/queue/data``, ``/run``, ``/call``,
  ``/config``), and records them for the logged-in user of that request;
- a file object sent as an input (``queue/join``, ``run``, ``call``) must name a file its sender may
  fetch, or a handler would read another person's upload for them;
- everything else under ``outputs/`` (training runs, anything saved before logins) is served as before.

Paths are compared resolved (symlinks followed, as Gradio does) and user folders by their NFC, case-folded
names, so another spelling of a folder on a case-insensitive disk is still that folder. What a user was
handed lives in this middleware instance, for the life of the server.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FILE_ROUTE = re.compile(r"^(?:/gradio_api)?/file(?:=|/)(?P<path>.*)$", re.DOTALL)
UPLOAD_ROUTES = ("/gradio_api/upload", "/gradio_api/upload/")
READ_ROUTES = ("/gradio_api/", "/config")  # answers that may hand out file paths
NOT_YOURS = "This file belongs to another user: each person can open only their own pictures and uploads."
NOT_SIGNED_IN = "Sign in to open files."
NOT_A_PATH = "Not a file path this server can look at."
PRUNE_AT = 50_000  # handed-out paths kept before those whose files are gone are dropped

UserOf = Callable[[Scope], str | None]


def gradio_user(ui: Any) -> UserOf:
    """The logged-in user of a request to the mounted Gradio app ``ui`` (a ``gradio.routes.App``), as Gradio
    itself finds it: the ``access-token-<id>`` cookie, else the ``-unsecure-`` one, looked up in ``ui.tokens``."""
    def user_of(scope: Scope) -> str | None:
        cookies = Request(scope).cookies
        token = cookies.get(f"access-token-{ui.cookie_id}") or cookies.get(f"access-token-unsecure-{ui.cookie_id}")
        return ui.tokens.get(token) if token else None

    return user_of


def folder_key(name: str) -> str:
    """How a folder name is compared: NFC and case-folded (macOS and Windows open either spelling)."""
    return unicodedata.normalize("NFC", name).casefold()


def resolved(text: str) -> Path | None:
    """``text`` as the absolute path Gradio opens (relative to the server's working folder), symlinks
    followed; None when it is no path (a NUL byte, a symlink loop)."""
    try:
        return Path(os.path.abspath(text)).resolve()
    except (OSError, ValueError, RuntimeError):
        return None


class FileRules:
    """Who may fetch which file under outputs/ and the cache; what each user was handed from the cache."""

    def __init__(self, outputs_dir: Path, cache_dir: Path, folders: Mapping[str, str]) -> None:
        self.outputs = Path(outputs_dir).resolve()
        self.cache = Path(cache_dir).resolve()
        self.folders = {user: folder_key(folder) for user, folder in folders.items()}
        self.owners = {key: user for user, key in self.folders.items()}  # folder key -> user
        self.handed: dict[str, set[str]] = {}  # resolved cache path -> users given it
        self.prune_at = PRUNE_AT

    def refusal(self, user: str | None, text: str) -> str | None:
        """Why ``user`` (None: not logged in) may not fetch the file ``text``, or None when these rules allow
        it (Gradio's own rules still apply)."""
        path = resolved(text)
        if path is None:
            return NOT_A_PATH
        if path.is_relative_to(self.cache):
            if user is not None and user in self.handed.get(str(path), ()):
                return None
            return NOT_SIGNED_IN if user is None else NOT_YOURS
        if not path.is_relative_to(self.outputs) or path == self.outputs:
            return None
        owner = self.owners.get(folder_key(path.relative_to(self.outputs).parts[0]))
        if owner is None or owner == user:
            return None
        return NOT_SIGNED_IN if user is None else NOT_YOURS

    def hand(self, user: str, text: str) -> None:
        """Record that the server gave ``user`` the path ``text`` (kept only for files in the cache)."""
        path = resolved(text)
        if path is not None and path.is_relative_to(self.cache) and path != self.cache:
            self.handed.setdefault(str(path), set()).add(user)
            if len(self.handed) > self.prune_at:  # Gradio empties its cache of old files: forget those
                self.handed = {kept: users for kept, users in self.handed.items() if os.path.exists(kept)}
                self.prune_at = max(PRUNE_AT, 2 * len(self.handed))


def file_paths(value: Any) -> Iterator[str]:
    """The ``path`` of every file object (a dict with a text ``path``: Gradio's FileData) in decoded JSON."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            yield value["path"]
        for item in value.values():
            yield from file_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from file_paths(item)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return None


class FileAccess:
    """ASGI middleware (only with logins): the rules of ``FileRules`` on Gradio's file routes, and the
    recording of the paths Gradio hands to each user."""

    def __init__(self, app: ASGIApp, rules: FileRules, user_of: UserOf) -> None:
        self.app, self.rules, self.user_of = app, rules, user_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        user = self.user_of(scope)
        wanted = FILE_ROUTE.match(path)
        if wanted is not None:
            refusal = self.rules.refusal(user, wanted["path"])
            if refusal is not None:
                await PlainTextResponse(refusal, 403)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if user is None or not path.startswith(READ_ROUTES):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and is_json(Headers(scope=scope).get("content-type")):
            body = await read_body(receive)
            refusal = next((r for p in file_paths(parse_json(body)) if (r := self.rules.refusal(user, p))), None)
            if refusal is not None:
                await PlainTextResponse(refusal, 403)(scope, receive, send)
                return
            receive = replay(body, receive)
        # Gradio compresses some answers (brotli, by file extension): these must stay readable here.
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]}
        await self.app(scope, receive, self._recording_send(send, user, path in UPLOAD_ROUTES))

    def _recording_send(self, send: Send, user: str, upload: bool) -> Send:
        """``send`` that records the file paths of a JSON answer or an event stream for ``user`` before the
        client gets them (so its next request for one finds it recorded). JSON answers are held until whole."""
        kind: str | None = None
        held: list[Message] = []
        pending = bytearray()

        def hand(value: Any) -> None:
            paths = [p for p in value if isinstance(p, str)] if upload and isinstance(value, list) else file_paths(value)
            for text in paths:
                self.rules.hand(user, text)

        async def recording_send(message: Message) -> None:
            nonlocal kind
            if message["type"] == "http.response.start":
                headers = Headers(raw=message.get("headers", []))
                if headers.get("content-encoding") is None:
                    kind = answer_kind(headers.get("content-type"))
                if kind == "json":
                    held.append(message)
                    return
            elif message["type"] == "http.response.body" and kind == "json":
                held.append(message)
                pending.extend(message.get("body", b""))
                if message.get("more_body"):
                    return
                hand(parse_json(bytes(pending)))
                for kept in held:
                    await send(kept)
                return
            elif message["type"] == "http.response.body" and kind == "events":
                pending.extend(message.get("body", b""))
                *lines, rest = bytes(pending).split(b"\n")
                pending[:] = rest
                for line in lines:
                    if line.startswith(b"data:"):
                        hand(parse_json(line[5:]))
            await send(message)

        return recording_send


def route_path(scope: Scope) -> str:
    """The request's path below the server's root path."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


def answer_kind(content_type: str | None) -> str | None:
    """"json", "events" (server-sent events) or None for an answer that hands out no paths."""
    media = (content_type or "").split(";")[0].strip().lower()
    return "json" if media == "application/json" else "events" if media == "text/event-stream" else None


async def read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body.extend(message.get("body", b""))
        if not message.get("more_body"):
            return bytes(body)


def replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives the body read already, then whatever comes next (a disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


