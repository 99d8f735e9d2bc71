"""Faults lose nothing: kill -9 while a PNG is written or while a LoRA trains, and a full disk while
an image is saved. The kills are real SIGKILLs of child processes."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from app.engine import outputs
from app.engine.jobs import JobFailed
from app.engine.requests import Txt2ImgRequest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

ROOT = Path(__file__).resolve().parent.parent
CHILD_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT),
             "OMP_NUM_THREADS": "1"}  # every child the same: the training runs are compared bit for bit
PARAMETERS = "a red circle\nSteps: 2, Sampler: Euler, Seed: 0"
NUMBERED_PNG = re.compile(r"^\d{5}-\d+\.png$")


def _start(code: str, *args: object, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=CHILD_ENV,
                                stdout=out, stderr=subprocess.STDOUT)


def _wait_for(path: Path, child: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until ``path`` exists; fails with the child's output if it ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            child.wait()
            pytest.fail(f"{path.name} never appeared; the child said:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL


# ----- kill -9 while a PNG is written -------------------------------------------------------------

# The child loads app/engine/outputs.py by its path (not the app.engine package, which imports torch)
# and saves through its save_image. Modes: "mid-write" pauses once half a megabyte of the PNG is in
# the temporary file; "before-rename" pauses with the file complete but not renamed; "loop" saves
# without pause and is killed at whatever point it reached.
PNG_CHILD = r"""
import importlib.util, os, sys, time
from pathlib import Path
import numpy as np
from PIL import Image

source, folder, ready, mode, parameters = sys.argv[1:6]
folder, ready = Path(folder), Path(ready)
spec = importlib.util.spec_from_file_location("outputs_under_test", source)
outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(outputs)
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (768, 768, 3), dtype=np.uint8))

def pause():
    ready.write_text("paused")
    time.sleep(600)

class PausedHandle:
    def __init__(self, handle):
        self.handle, self.written = handle, 0
    def write(self, data):
        count = self.handle.write(data)
        self.written += count
        if self.written > 2**19:
            self.handle.flush()
            pause()
        return count
    def __getattr__(self, name):
        return getattr(self.handle, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)

outputs.save_image(image, folder, 0, parameters)  # one complete image first
if mode == "mid-write":
    real_fdopen = os.fdopen
    os.fdopen = lambda fd, *args, **kwargs: PausedHandle(real_fdopen(fd, *args, **kwargs))
elif mode == "before-rename":
    os.replace = lambda *args: pause()
seed = 1
while True:
    outputs.save_image(image, folder, seed, parameters)
    if seed == 2:
        ready.write_text("saving in a loop")
    seed += 1
"""


def _complete_pngs(outputs_dir: Path) -> tuple[list[Path], list[Path]]:
    """(the PNGs, all complete and readable with their parameters; the temporary files left)."""
    files = [p for p in outputs_dir.rglob("*") if p.is_file()]
    temporary = [p for p in files if p.name.startswith(outputs.TEMP_PREFIX)]
    pngs = sorted(set(files) - set(temporary))
    for png in pngs:
        assert NUMBERED_PNG.match(png.name), f"unexpected file {png.name}"
        with Image.open(png) as image:
            image.load()  # a truncated PNG raises here
            assert image.size == (768, 768) and image.info["parameters"] == PARAMETERS
    for temp in temporary:  # hidden, and not a *.png any reader or glob would take for an image
        assert temp.suffix == outputs.TEMP_SUFFIX and not temp.match("*.png")
    return pngs, temporary


@pytest.mark.parametrize("mode", ["mid-write", "before-rename", "loop"])
def test_kill_during_a_png_write_leaves_only_complete_pngs(tmp_path: Path, mode: str) -> None:
    outputs_dir = tmp_path / "outputs"
    folder = outputs.output_folder(outputs_dir, "txt2img")
    ready, log = tmp_path / "ready", tmp_path / "child.log"
    child = _start(PNG_CHILD, Path(outputs.__file__), folder, ready, mode, PARAMETERS, log=log)
    _wait_for(ready, child, log, timeout=120)
    if mode == "loop":
        time.sleep(0.05 + 0.3 * (time.time() % 1))  # somewhere in a later save
    _kill(child)
    pngs, temporary = _complete_pngs(outputs_dir)
    if mode == "loop":
        assert len(pngs) >= 3
    else:  # killed inside the second save: the first image only, and the unfinished one under a temp name
        assert [p.name for p in pngs] == ["00000-0.png"] and len(temporary) == 1
        assert temporary[0].stat().st_size > (2**19 if mode == "mid-write" else 0)
    # what the app reads: numbering and image globs see the complete images only; saving goes on
    assert outputs.next_image_number(folder) == len(pngs)
    assert sorted(folder.glob("*.png")) == pngs
    after = outputs.save_image(Image.new("RGB", (768, 768)), folder, 9, PARAMETERS)
    assert after.name == f"{len(pngs):05d}-9.png" and _complete_pngs(outputs_dir)[0] == [*pngs, after]


# ----- kill -9 while a LoRA trains, then resume ---------------------------------------------------

# ``python -m app.training`` with one change: it sleeps after reporting step ``pause_at``, so the run
# cannot finish before the parent's kill (which comes as soon as the step-3 checkpoint is written).
TRAIN_CHILD = r"""
import sys, time
from app.training import trainer
from app.training.__main__ import main

pause_at, real_train = int(sys.argv[1]), trainer.train

def train(config, **kwargs):
    report = kwargs["on_progress"]

    def on_progress(progress):
        report(progress)
        if progress.step == pause_at:
            time.sleep(600)

    return real_train(config, **{**kwargs, "on_progress": on_progress})

trainer.train = train
sys.exit(main(sys.argv[2:]))
"""
CLI = "import sys; from app.training.__main__ import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def tiny_training(tmp_path: Path) -> list[str]:
    """test_training.py's tiny setup: a tiny SD 1.x model and a kohya folder of four shapes; its flags."""
    from shape_data import draw

    from app.engine.tiny import build_tiny_pipeline

    build_tiny_pipeline("sd1", seed=0).save_pretrained(tmp_path / "models" / "Stable-diffusion" / "tiny")
    folder = tmp_path / "data" / "3_shapes"
    folder.mkdir(parents=True)
    for index, (colour, shape) in enumerate([("red", "circle"), ("blue", "square"), ("green", "circle"),
                                             ("red", "square")]):
        draw(folder / f"{index}.png", colour, shape, (64 + 16 * (index % 2), 64))
        (folder / f"{index}.txt").write_text(f"a {colour} {shape}, flat, simple")
    return ["--base-model", "tiny", "--dataset", str(tmp_path / "data"), "--models-dir", str(tmp_path / "models"),
            "--rank", "4", "--alpha", "2", "--resolution", "64", "--bucket-step", "8", "--max-steps", "6",
            "--learning-rate", "1e-3", "--flip", "--seed", "7", "--checkpoint-every", "3", "--device", "cpu"]


def _losses(run_dir: Path) -> list[float]:
    return json.loads((run_dir / "checkpoints" / "step-000006" / "progress.json").read_text())["losses"]


def test_kill_during_training_then_resume_gives_the_losses_of_an_uninterrupted_run(
        tmp_path: Path, tiny_training: list[str]) -> None:
    """SIGKILL right after the step-3 checkpoint; the restart with --resume does steps 4-6 again and
    must match a run that was never killed exactly: same CPU arithmetic in the same order on one
    thread, since the checkpoint holds the adapter weights, optimizer and LR states, both RNG states
    and the position in the data (the in-process resume test of test_training.py asserts equality too)."""
    from safetensors import safe_open

    flags, models = tiny_training, tmp_path / "models"
    crashed_out, reference_out = tmp_path / "outputs", tmp_path / "reference-outputs"
    run_dir = crashed_out / "training" / "crashed"
    reference = _start(CLI, *flags, "--outputs-dir", reference_out, "--output-name", "reference",
                       log=tmp_path / "reference.log")
    crashing = _start(TRAIN_CHILD, 5, *flags, "--outputs-dir", crashed_out, "--output-name", "crashed",
                      log=tmp_path / "crashed.log")
    _wait_for(run_dir / "checkpoints" / "step-000003" / "progress.json", crashing, tmp_path / "crashed.log", 300)
    _kill(crashing)
    assert not (run_dir / "checkpoints" / "step-000006").exists()
    assert not (models / "Lora" / "crashed.safetensors").exists()
    assert not list(run_dir.rglob(".partial-*")), "a finished checkpoint leaves no temporary file"

    # the restart, in this process (torch already loaded here) on one thread like the children
    import torch

    from app.training.__main__ import build_parser, config_from_args
    from app.training.trainer import train

    args = build_parser().parse_args([*flags, "--outputs-dir", str(crashed_out), "--output-name", "crashed",
                                      "--resume", str(run_dir)])
    steps: list[int] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = train(config_from_args(args), on_progress=lambda progress: steps.append(progress.step))
    finally:
        torch.set_num_threads(threads)
    assert steps == [4, 5, 6] and resumed.steps == 6, "resumed from the step-3 checkpoint"
    assert reference.wait(300) == 0, (tmp_path / "reference.log").read_text()[-3000:]

    expected = _losses(reference_out / "training" / "reference")
    assert len(resumed.losses) == 6 and resumed.losses[:3] == expected[:3] and resumed.losses[3:] == expected[3:]
    files = [str(models / "Lora" / f"{name}.safetensors") for name in ("reference", "crashed")]
    with safe_open(files[0], "pt") as first, safe_open(files[1], "pt") as second:
        assert first.keys() == second.keys()
        assert all(first.get_tensor(k).equal(second.get_tensor(k)) for k in first.keys())


# The trainer's caches and its checkpoint's progress.json go through write_atomically: killed while
# writing, it leaves no file under the real name (a truncated cache or progress.json would be read
# on the restart and break it).
ATOMIC_CHILD = r"""
import sys, time
from pathlib import Path
from app.training.files import write_atomically

target, ready = Path(sys.argv[1]), Path(sys.argv[2])

def write(temp):
    with open(temp, "wb") as out:
        out.write(b"half a file")
        out.flush()
        ready.write_text("paused")
        time.sleep(600)

write_atomically(target, write)
"""


def test_kill_during_a_cache_or_progress_write_leaves_no_file_under_its_name(tmp_path: Path) -> None:
    from app.training.files import TEMP_PREFIX, write_atomically

    target, ready, log = tmp_path / "progress.json", tmp_path / "ready", tmp_path / "child.log"
    target.write_text('{"step": 3}')  # an older complete file stays as it was
    child = _start(ATOMIC_CHILD, target, ready, log=log)
    _wait_for(ready, child, log, timeout=60)
    _kill(child)
    assert target.read_text() == '{"step": 3}'
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 4 and left[0].startswith(TEMP_PREFIX) and left[1:] == ["child.log", "progress.json", "ready"]
    write_atomically(target, lambda temp: temp.write_text('{"step": 6}'))
    assert target.read_text() == '{"step": 6}'


# ----- a full disk while saving ---------------------------------------------------------------------


class _FullDiskFile:
    """A file whose disk fills after its first 100 bytes."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, data) -> int:
        self.handle.write(bytes(data)[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self.handle, name)

    def __enter__(self) -> _FullDiskFile:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


class _FullDiskOs:
    """``os`` as app/engine/outputs.py sees it, with the disk full for the next file it writes."""

    def __init__(self) -> None:
        self.fail_next = True

    def fdopen(self, fd: int, *args, **kwargs):
        handle = os.fdopen(fd, *args, **kwargs)
        if not self.fail_next:
            return handle
        self.fail_next = False
        return _FullDiskFile(handle)

    def __getattr__(self, name: str):
        return getattr(os, name)


def test_a_full_disk_fails_the_job_clearly_keeps_no_partial_file_and_the_worker_goes_on(
        engine, outputs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "os", _FullDiskOs())
    request = Txt2ImgRequest(prompt="a red circle", steps=2, width=64, height=64, seed=5)
    with pytest.raises(JobFailed) as failed:
        engine.submit(request).wait(300)
    message = str(failed.value)
    assert message.startswith("The disk is full") and "free some space" in message
    assert "Errno" not in message and str(outputs_dir) not in message  # readable; no server path
    assert [p for p in outputs_dir.rglob("*") if p.is_file()] == [], "no partial PNG, no temporary file"
    result = engine.submit(request).wait(300)  # the worker lives on and the next job saves normally
    assert engine.worker.alive and len(result.paths) == 1 and result.paths[0].name == "00000-5.png"
    with Image.open(result.paths[0]) as image:
        image.load()
        assert "Seed: 5" in image.info["parameters"]
