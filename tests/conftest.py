"""Shared fixtures. Every test runs offline: a socket guard fails any attempt to reach the network."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


class NetworkAccessError(RuntimeError):
    pass


_LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "0.0.0.0"}


@pytest.fixture(autouse=True)
def socket_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection to a non-loopback address: a test must never download anything."""
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host in _LOCAL_HOSTS or host.startswith("127.")):
            return real_connect(self, address)
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        raise NetworkAccessError(f"test tried to reach the network: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    real_getaddrinfo = socket.getaddrinfo

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host is None or (isinstance(host, str) and (host in _LOCAL_HOSTS or host.startswith("127."))):
            return real_getaddrinfo(host, *args, **kwargs)
        raise NetworkAccessError(f"test tried to resolve {host!r}")

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
