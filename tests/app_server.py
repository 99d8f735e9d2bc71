"""Start the real app (``launch.py``) in a subprocess for API and browser tests, and stop it."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from app.engine.placeholder import ensure_placeholder_model

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@dataclass
class RunningApp:
    url: str
    models_dir: Path
    outputs_dir: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def dump_threads(self) -> None:
        """Make the app print every thread's stack to its log (faulthandler on SIGABRT), then stop it."""
        import signal

        if self.process.poll() is None:
            busy = self.cpu_seconds()
            time.sleep(3)
            busy = self.cpu_seconds() - busy
            with open(self.log_path, "a") as log:
                log.write(f"\n[test] app used {busy:.2f} CPU s in the last 3 s\n")
            self.process.send_signal(signal.SIGABRT)
            time.sleep(2)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(workdir: Path, *args: str, timeout: float = 180.0) -> RunningApp:
    """``launch.py --models-dir workdir/models --outputs-dir workdir/outputs *args`` on a free port.

    With no ``--model`` it serves the placeholder model (64x64, few steps, written first), so the
    tests do not depend on the bundled demo model's pictures. With ``--tls-certfile`` its URL is https,
    and that certificate is trusted while waiting for it.
    """
    models, outputs = workdir / "models", workdir / "outputs"
    if "--model" not in args:
        args = ("--model", ensure_placeholder_model(models), *args)
    port = free_port()
    log_path = workdir / f"app-{port}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
           "PYTHONFAULTHANDLER": "1",  # a hung app dumps its threads on SIGABRT
           "OMP_NUM_THREADS": "1"}  # the test process, the app and Chromium share 2 cores: no spinning pools
    command = [sys.executable, str(ROOT / "launch.py"), "--models-dir", str(models), "--outputs-dir", str(outputs),
               "--port", str(port), "--device", "cpu", *args]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    tls = ssl.create_default_context(cafile=args[args.index("--tls-certfile") + 1]) if "--tls-certfile" in args else None
    app = RunningApp(f"{'https' if tls else 'http'}://127.0.0.1:{port}", models, outputs, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{app.log()}")
        try:
            with urllib.request.urlopen(app.url + "/", timeout=5, context=tls) as response:
                if response.status == 200:
                    return app
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    app.stop()
    raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{app.log()}")


def build_app_in_process(work: Path, credentials: tuple[tuple[str, str], ...], port: int, **options: object):
    """``app.server.build_app`` in this process, on the placeholder model in ``work``, with the API and
    ``credentials`` as logins; ``options`` go to ServeOptions (and ``throttle`` to the API context).
    Returns (ASGI app, engine): shut the engine down when done."""
    from app.api.context import ApiContext
    from app.api.options import OPTIONS_FILE, OptionsStore, default_options
    from app.cli import training_service
    from app.engine import Engine, EngineConfig
    from app.server import build_app
    from app.serving import ServeOptions

    model = ensure_placeholder_model(work / "models")
    engine = Engine(EngineConfig(models_dir=work / "models", outputs_dir=work / "outputs", default_model=model,
                                 device="cpu"))
    extra = {"throttle": options.pop("throttle")} if "throttle" in options else {}
    api = ApiContext(engine, OptionsStore(work / "outputs" / OPTIONS_FILE, default_options(model)), credentials, {},
                     **extra)
    serve_options = ServeOptions(port=port, credentials=credentials, **options)  # type: ignore[arg-type]
    return build_app(engine, training_service(engine), serve_options, api), engine
