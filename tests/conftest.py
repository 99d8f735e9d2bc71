"""Shared fixtures. Every test runs offline: a socket guard fails any attempt to reach the network."""

from __future__ import annotations

import fcntl
import os
import socket

import pytest

import app  # noqa: F401  (first: it makes torchvision importable before diffusers imports it)

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


@pytest.fixture(scope="module")
def ray_to_itself():
    """Hold the machine's Ray for a module: the suite's two workers (pytest-xdist) must not run two Ray
    modules at once, since a Ray started on this machine, even inside a network namespace (``/tmp/ray`` is
    shared), is what another module's ``ray.init()`` would find and join."""
    with open("/tmp/lora-studio-tests-ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# run_tests.py runs the suite on two pytest-xdist workers, a file at a time each, handed out in collection
# order: the longest files go first, so that the two workers end together rather than one running a long
# file alone at the end. Longest first by their seconds on 2 cores (one worker, 2026-12-06); the two Ray
# modules stand apart, since they wait for each other (``ray_to_itself``).
LONGEST_FIRST = (
    "test_browser.py", "test_speed.py", "test_training_job.py", "test_cluster.py", "test_training.py",
    "test_prompt_conditioning.py", "test_demo_shapes.py", "test_hires.py", "test_per_person_files.py",
    "test_api_access.py", "test_cluster_nodes.py", "test_app_api.py", "test_api_generate.py", "test_web_guard.py",
    "test_interrupt_results.py", "test_request_batching.py", "test_tls.py", "test_face_restore.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


# ----- tiny models ---------------------------------------------------------------------------
from pathlib import Path  # noqa: E402

TINY_MODELS = {
    "tiny-sd1": dict(family="sd1"),
    "tiny-sd2-v": dict(family="sd2", prediction_type="v_prediction"),
    "tiny-sdxl": dict(family="sdxl"),
    "tiny-sd1-inpainting": dict(family="sd1", inpainting=True),
}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ folder with a tiny diffusers folder of each architecture."""
    from app.engine.tiny import build_tiny_pipeline

    root = tmp_path_factory.mktemp("models")
    for sub in ("Stable-diffusion", "Lora", "VAE"):
        (root / sub).mkdir()
    for name, kwargs in TINY_MODELS.items():
        build_tiny_pipeline(**kwargs).save_pretrained(root / "Stable-diffusion" / name)
    return root


@pytest.fixture
def outputs_dir(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def engine(models_dir: Path, outputs_dir: Path):
    from app.engine import Engine, EngineConfig

    eng = Engine(EngineConfig(models_dir=models_dir, outputs_dir=outputs_dir, default_model="tiny-sd1",
                              device="cpu", preview_every=1, max_resident_models=2))
    yield eng
    eng.shutdown()
