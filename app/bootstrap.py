"""Set up the project's virtual environment the way A1111's launcher does, then re-run inside it.

Standard library only: this runs under whatever ``python3`` the user has, before anything is
installed. The first run creates ``.venv``, installs torch first (``torch==2.13.0`` unless
``LORA_STUDIO_TORCH`` says otherwise: a plain ``torch`` would pull several GB of CUDA packages on
a CPU machine), then the torchvision made for that torch, then the project. Later runs compare a stamp and start at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
DEFAULT_TORCH = "torch==2.13.0"
CHROMIUM = Path("/usr/bin/chromium")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _stamp_text(extras: str) -> str:
    torch_spec = os.environ.get("LORA_STUDIO_TORCH", DEFAULT_TORCH)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{digest} {torch_spec} [{extras}]\n"


def _run(*args: str) -> None:
    print("[bootstrap]", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def _torchvision_for(python: Path) -> list[str]:
    """The torchvision release made for the installed torch, with that torch pinned so pip keeps it
    (spandrel needs torchvision; left to itself pip would take the newest one and a newer torch with it).
    torch 2.N pairs with torchvision 0.(N+15)."""
    found = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    release = found.split("+")[0]
    major, minor = (int(part) for part in release.split(".")[:2])
    if major != 2:
        return ["torchvision"]
    return [f"torch=={release}", f"torchvision==0.{minor + 15}.*"]


def ensure_environment(extras: str = "") -> None:
    """Create/refresh .venv when needed, then re-execute this script with its interpreter."""
    if in_project_venv():
        return
    stamp = VENV / f".lora-studio-installed{('-' + extras) if extras else ''}"
    wanted = _stamp_text(extras)
    python = venv_python()
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        if not python.exists():
            _run(sys.executable, "-m", "venv", str(VENV))
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        torch_spec = os.environ.get("LORA_STUDIO_TORCH", DEFAULT_TORCH)
        if subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0:
            _run(*pip, torch_spec)
        if subprocess.run([str(python), "-c", "import importlib.util as u; exit(u.find_spec('torchvision') is None)"],
                          capture_output=True).returncode != 0:
            _run(*pip, *_torchvision_for(python))
        target = f"{ROOT}[{extras}]" if extras else str(ROOT)
        _run(*pip, "-e", target)
        stamp.write_text(wanted)
    os.execv(str(python), [str(python), *sys.argv])


def ensure_chromium() -> bool:
    """The browser tests drive Debian's Chromium. Install it with apt-get where we may (root on
    Debian); elsewhere those tests skip and say why. Returns whether it is there."""
    if CHROMIUM.exists():
        return True
    if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        print("[bootstrap] /usr/bin/chromium is missing; the browser tests will be skipped", flush=True)
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        print("[bootstrap]", " ".join(command), flush=True)
        if subprocess.run(command, env=env, check=False).returncode != 0:
            break
    return CHROMIUM.exists()
