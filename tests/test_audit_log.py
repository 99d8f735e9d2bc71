"""The audit log (outputs/audit.log): one line per job event, with owner and job id, never a prompt."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path

import pytest

from app.audit import AUDIT_FILE, AUDIT_LOGGER, audit, close_audit_log, setup_audit_log
from app.engine import Engine, EngineConfig, Txt2ImgRequest
from app.engine.jobs import JobCancelled, JobContext, JobResult, QueueFull

WAIT = 30.0
SECRET_PROMPT = "a very private prompt about my neighbour"
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d (INFO|WARNING) (\S+) who=(\S+) job=(\S+)(?: (.*))?$")


@pytest.fixture
def outputs(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "outputs"
    setup_audit_log(folder)
    yield folder
    close_audit_log()


@pytest.fixture
def engine(tmp_path: Path, outputs: Path) -> Iterator[Engine]:
    eng = Engine(EngineConfig(models_dir=tmp_path / "models", outputs_dir=outputs, default_model="tiny-sd1",
                              device="cpu", max_queue_per_user=3))
    yield eng
    eng.shutdown()


def events(outputs: Path) -> list[tuple[str, str, str, str, str]]:
    """(level, event, who, job, what) of each line; every line must have the audit format."""
    for handler in logging.getLogger(AUDIT_LOGGER).handlers:
        handler.flush()
    lines = (outputs / AUDIT_FILE).read_text(encoding="utf-8").splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    return [(m.group(1), m.group(2), m.group(3), m.group(4), m.group(5) or "") for m in parsed if m]


def test_queue_cancel_finish_and_refusal_are_logged_without_the_prompt(engine: Engine, outputs: Path) -> None:
    gate = threading.Event()
    started = threading.Event()

    def work(ctx: JobContext) -> JobResult:
        started.set()
        gate.wait(WAIT)
        return JobResult()

    training = engine.submit_work(work, "train LoRA my-style", "session:alice")  # holds the worker
    assert started.wait(WAIT)
    picture = engine.submit(Txt2ImgRequest(prompt=SECRET_PROMPT), "api:bob")  # waits behind it
    assert engine.cancel(picture.id, "api:bob")
    with pytest.raises(JobCancelled):
        picture.wait(WAIT)
    assert engine.skip("session:alice")
    engine.submit_work(work, "evaluate LoRA my-style", "session:alice")
    engine.submit_work(work, "extras: one picture", "session:alice")
    with pytest.raises(QueueFull):
        engine.submit(Txt2ImgRequest(prompt=SECRET_PROMPT), "session:alice")
    gate.set()
    training.wait(WAIT)
    failing = engine.submit_work(lambda ctx: 1 / 0, "extras: one picture", "api:bob")
    with pytest.raises(Exception, match="ZeroDivisionError"):
        failing.wait(WAIT)
    engine.shutdown()  # joins the worker thread: the lines it writes after a job ends are in the file

    seen = events(outputs)
    rows = [(event, who, job) for _, event, who, job, _ in seen]
    assert ("queued", "session:alice", training.id) in rows and ("finished", "session:alice", training.id) in rows
    assert ("queued", "api:bob", picture.id) in rows
    assert ("cancel", "api:bob", picture.id) in rows and ("cancelled", "api:bob", picture.id) in rows
    assert ("skip", "session:alice", training.id) in rows
    assert ("failed", "api:bob", failing.id) in rows
    what = {(event, job): text for _, event, _, job, text in seen}
    assert what[("queued", training.id)] == "train LoRA my-style"  # who trained what LoRA
    assert what[("queued", picture.id)] == "txt2img model=tiny-sd1"  # the task kind and model, not the prompt
    assert re.fullmatch(r"\d+\.\d s", what[("finished", training.id)])  # how long it ran
    assert re.fullmatch(r"\d+\.\d s \(ZeroDivisionError\)", what[("failed", failing.id)])
    refused = [row for row in seen if row[1] == "refused"]
    assert refused == [("WARNING", "refused", "session:alice", "-", "txt2img model=tiny-sd1: queue full (3 per user)")]
    text = (outputs / AUDIT_FILE).read_text(encoding="utf-8")
    assert SECRET_PROMPT not in text and "neighbour" not in text


def test_the_file_rotates_and_the_console_does_not_repeat_it(tmp_path: Path, outputs: Path) -> None:
    logger = logging.getLogger(AUDIT_LOGGER)
    handlers = [h for h in logger.handlers if isinstance(h, RotatingFileHandler)]
    assert len(handlers) == 1
    assert handlers[0].maxBytes == 5 * 1024 * 1024 and handlers[0].backupCount == 5
    assert Path(handlers[0].baseFilename) == (outputs / AUDIT_FILE).resolve()
    assert not logger.propagate  # the engine logs its own console line for each job
    small = tmp_path / "small"
    setup_audit_log(small, max_bytes=300, backup_count=2)  # a second set-up replaces the first
    assert len([h for h in logger.handlers if isinstance(h, RotatingFileHandler)]) == 1
    for i in range(20):
        audit("queued", "api:bot", f"job-{i:012d}", "txt2img model=tiny-sd1")
    assert (small / AUDIT_FILE).is_file() and (small / f"{AUDIT_FILE}.1").is_file()
    assert (small / f"{AUDIT_FILE}.2").is_file() and not (small / f"{AUDIT_FILE}.3").exists()


def test_a_name_cannot_forge_a_line(outputs: Path) -> None:
    audit("queued", "api:eve\n2024-01-01T00:00:00+00:00 INFO queued who=api:admin", "job-1", "train LoRA x\ny")
    logging.getLogger(AUDIT_LOGGER).info("login failed for %s", "mallory\r\nfake")  # another module's own words
    lines = (outputs / AUDIT_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert 'who="api:eve\\n2024' in lines[0] and lines[0].endswith("train LoRA x\\x0ay")
    assert lines[1].endswith("INFO login failed for mallory\\x0d\\x0afake")
