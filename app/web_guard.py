"""What a browser may do with the one web server: ASGI middleware in front of the UI, Gradio's API and
the REST API.

``WebGuard`` refuses a Host the server is not reachable as (DNS rebinding: a page on an attacker's name
that resolves to this machine would otherwise talk to it as "its own" server, login or not), refuses a
state-changing request or websocket handshake whose Origin is another site (CSRF), keeps Gradio's CORS
headers away from any Origin but the server's own, and adds protective headers to every response.
``LoginRedirect`` sends a browser without a UI login from ``/`` to ``/login``.

Requests without an Origin header (curl, gradio_client, A1111 clients) are not from a browser page and
pass the Origin rule; the Host rule applies to everyone.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# Gradio's page needs inline scripts (its config is an inline <script>, as is app.ui's HEAD), inline
# styles, eval (without it Chromium blocks gr.HTML's template compiler and pixi.js, so the inpaint
# editor never draws), blob:/data: images and workers, and fetch/SSE to itself. 'self' in connect-src
# also matches ws:/wss: to the same host and port; nothing may be fetched from, or posted to, elsewhere.
UI_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data: blob:; media-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
          "worker-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
# FastAPI's /docs page loads Swagger UI from cdn.jsdelivr.net and its icon from fastapi.tiangolo.com;
# this lets it work wherever that CDN is reachable (offline /docs is blank either way).
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
DOCS_PATH = "/docs"
PROTECTIVE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_HOST_RE = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)(?:%[\w.~%-]+)?\]|(?P<name>[^\s\[\]:/?#@\\%]+))(?::(?P<port>\d{1,5}))?")


def parse_host(text: str | None) -> tuple[str, int | None] | None:
    """A Host header (``name``, ``name:port``, ``[v6]:port``) as (normalized name, port), None if malformed.

    Names are lower-case without a trailing dot; IP addresses are in their canonical form, an IPv6
    zone (``%eth0``) dropped, so ``[0:0::1]`` and ``[::1]`` are one host.
    """
    match = _HOST_RE.fullmatch(text.strip()) if text else None
    if match is None:
        return None
    name = normalize_name(match["v6"] or match["name"])
    if not name or (match["v6"] and ":" not in name):  # a bracketed literal that is no IPv6 address
        return None
    return name, int(match["port"]) if match["port"] else None


def normalize_name(name: str) -> str:
    """A host name or address as it is compared: lower-case, no trailing dot, IPs canonical, zone dropped."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name.split("%", 1)[0]))
    except ValueError:
        return name


def allowed_host_entry(text: str) -> str:
    """One ``--allowed-hosts`` entry (a name, an address, optionally with a port) as a name; ValueError if bad."""
    text = text.strip()
    parsed = (normalize_name(text), None) if text.count(":") > 1 and not text.startswith("[") else parse_host(text)
    if parsed is None or not parsed[0]:
        raise ValueError(f"--allowed-hosts: {text!r} is not a host name or address")
    return parsed[0]


def machine_names() -> set[str]:
    """This machine's names and interface addresses, read locally: no DNS query is sent.

    The FQDN comes from /etc/hosts (what the resolver's "files" source would say), the addresses from
    the interfaces themselves (psutil, which accelerate already needs).
    """
    hostname = socket.gethostname()
    names = {hostname, *_hosts_file_names(hostname)}
    try:
        import psutil
    except ImportError:  # pragma: no cover - accelerate depends on psutil
        return {normalize_name(name) for name in names}
    for addresses in psutil.net_if_addrs().values():
        names.update(a.address for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6))
    return {normalize_name(name) for name in names if name}


def _hosts_file_names(hostname: str, hosts_file: Path = Path("/etc/hosts")) -> set[str]:
    """The names /etc/hosts lists on the lines that name ``hostname`` (there the FQDN sits beside it)."""
    try:
        lines = hosts_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return set()
    names: set[str] = set()
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if hostname.lower() in (field.lower() for field in fields[1:]):
            names.update(fields[1:])
    return names


def allowed_hosts(listen_host: str, extra: Iterable[str] = (),
                  local_names: Callable[[], set[str]] = machine_names) -> frozenset[str]:
    """The Host names the server answers: loopback, the listen address (every name and address of this
    machine when it binds all interfaces), and the operator's ``--allowed-hosts``."""
    hosts = {normalize_name(name) for name in LOOPBACK_NAMES}
    if listen_host in WILDCARD_BINDS:
        hosts |= {"0.0.0.0", "::"} | {normalize_name(name) for name in local_names()}
    else:
        hosts.add(normalize_name(listen_host))
    hosts |= {allowed_host_entry(name) for name in extra}
    return frozenset(hosts)


def same_origin(origin: str, host_header: str | None) -> bool:
    """Whether ``origin`` is the page the server itself served: its host and port equal the Host header's.

    Host and port, not just "an allowed host": another program on this machine (a dev server on
    localhost:3000) is another origin and must not post here. The scheme is not compared, because behind
    a TLS proxy the browser's https:// origin reaches this plain-HTTP server; a Host without a port takes
    the default port of the Origin's scheme.
    """
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.path not in ("", "/"):
        return False
    host = parse_host(host_header)
    if host is None:
        return False
    default = DEFAULT_PORTS[parts.scheme]
    return normalize_name(parts.hostname) == host[0] and (origin_port or default) == (host[1] or default)


class WebGuard:
    """ASGI middleware over the whole server: Host and Origin rules, no foreign CORS, protective headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], docs_path: str | None = DOCS_PATH) -> None:
        self.app = app
        self.allowed_hosts = frozenset(normalize_name(name) for name in allowed_hosts)
        self.docs_path = docs_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = parse_host(headers.get("host"))
        if host is None or host[0] not in self.allowed_hosts:
            await self._refuse(scope, send, "Unknown Host header: this server does not answer to that name. "
                                            "Open it by its address, or start it with --allowed-hosts NAME.")
            return
        origin = headers.get("origin")
        foreign = origin is not None and not same_origin(origin, headers.get("host"))
        if foreign and (scope["type"] == "websocket" or scope["method"] in STATE_CHANGING):
            await self._refuse(scope, send, "Cross-origin request refused: only pages of this server may change it.")
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        docs = self.docs_path is not None and (scope["path"] + "/").startswith(self.docs_path + "/")
        csp = DOCS_CSP if docs else UI_CSP

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                response_headers = MutableHeaders(scope=message)
                if foreign:  # Gradio reflects some origins with credentials: none but our own may read answers
                    for name in {key for key in response_headers.keys() if key.startswith("access-control-")}:
                        del response_headers[name]
                for name, value in (*PROTECTIVE_HEADERS.items(), ("Content-Security-Policy", csp)):
                    if name not in response_headers:
                        response_headers[name] = value
            await send(message)

        await self.app(scope, receive, guarded_send)

    async def _refuse(self, scope: Scope, send: Send, text: str) -> None:
        """403 before any handler runs; a websocket is denied before it is accepted."""
        body = text.encode("utf-8")
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                   *((name.lower().encode(), value.encode()) for name, value in PROTECTIVE_HEADERS.items())]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # a close before the accept is an HTTP 403 from the server
            await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})


# Gradio's login form shows only "Incorrect credentials" (a 400); a throttled login (429, app.login_throttle)
# would otherwise change nothing on the page. The login page has no app HEAD yet, so this is added to it here.
LOGIN_PAGE_SCRIPT = b"""<script>
(() => {
  const plainFetch = window.fetch;
  window.fetch = async (...args) => {
    const response = await plainFetch(...args);
    const target = args[0] instanceof Request ? args[0].url : String(args[0]);
    if (response.status === 429 && /\\/login\\/?$/.test(new URL(target, location.href).pathname)) {
      const body = await response.clone().json().catch(() => ({}));
      let note = document.getElementById("ls-login-wait");
      if (!note) {
        note = document.createElement("p");
        note.id = "ls-login-wait";
        note.style.cssText = "color: #dc2626; text-align: center; margin: 1em;";
        (document.querySelector("form") || document.querySelector("h2")?.parentElement || document.body).appendChild(note);
      }
      note.textContent = body.detail || "Too many failed logins from this address: wait a moment, then try again.";
    }
    return response;
  };
})();
</script>"""


class LoginRedirect:
    """ASGI middleware for the UI with logins: without a login, ``/`` redirects to ``/login``, which shows
    Gradio's login page (Gradio itself draws it at ``/``); with one, ``/login`` redirects back to ``/``.

    After a login Gradio's page reloads itself, so the ``/login`` -> ``/`` redirect is what lands the
    browser on the UI. Only GET/HEAD of those two paths are touched; the API keeps its 401s.
    """

    LOGIN_PATHS = ("/login", "/login/")

    def __init__(self, app: ASGIApp, logged_in: Callable[[Scope], bool]) -> None:
        self.app, self.logged_in = app, logged_in

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or \
                scope["path"] not in ("/", *self.LOGIN_PATHS):
            await self.app(scope, receive, send)
            return
        logged_in = self.logged_in(scope)
        root = scope.get("root_path", "").rstrip("/")
        if scope["path"] == "/" and not logged_in:
            await RedirectResponse(root + "/login", 303)(scope, receive, send)
        elif scope["path"] in self.LOGIN_PATHS and logged_in:
            await RedirectResponse(root + "/", 303)(scope, receive, send)
        elif scope["path"] in self.LOGIN_PATHS:  # Gradio's page at / without a session is its login form
            await self.app({**scope, "path": "/", "raw_path": b"/", "query_string": b""}, receive,
                           _with_script(send, LOGIN_PAGE_SCRIPT))
        else:
            await self.app(scope, receive, send)


def _with_script(send: Send, script: bytes) -> Send:
    """``send`` for an HTML answer with ``script`` put before ``</body>`` (the body is gathered first, as
    its length changes); anything else passes as it is."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def send_with_script(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            if not Headers(raw=message.get("headers", [])).get("content-type", "").startswith("text/html"):
                await send(message)
                return
            start = message
            return
        if start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        body = body.replace(b"</body>", script + b"</body>", 1) if b"</body>" in body else body + script
        headers = MutableHeaders(raw=list(start.get("headers", [])))
        headers["content-length"] = str(len(body))
        await send({**start, "headers": headers.raw})
        await send({"type": "http.response.body", "body": body})

    return send_with_script
