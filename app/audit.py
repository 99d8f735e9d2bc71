"""The audit log: who queued, cancelled, skipped or trained what, and when, in ``outputs/audit.log``.

One line per event: ``<ISO time> <LEVEL> <event> who=<owner> job=<job id> <what>``. ``what`` names the
kind of task and its model or LoRA, never a prompt; nothing here ever sees a password. The engine writes
the job events; logins and login throttling write to the same logger (``lora_studio.audit``) in their own
words, on the same one-line format.

Once ``setup_audit_log`` has run, the audit logger no longer propagates to the console: the engine already
logs its own line there for each job (queued, cancelled, failed), so the console would show each twice.
Before it runs (scripts, tests) audit records propagate as any other log record.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from logging.handlers import RotatingFileHandler
from pathlib import Path

AUDIT_LOGGER = "lora_studio.audit"
AUDIT_FILE = "audit.log"
MAX_BYTES = 5 * 1024 * 1024  # per file; with BACKUP_COUNT old files, at most 30 MB of audit on disk
BACKUP_COUNT = 5

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN = re.compile(r"[^\s\"'=]+")


class AuditFormatter(logging.Formatter):
    """ISO local time with its zone offset, the level and the message, always on one line: a control
    character (a newline in a user or LoRA name) is escaped, so no one can write a forged line."""

    def format(self, record: logging.LogRecord) -> str:
        when = _dt.datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds")
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:  # the error, not a traceback
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        return f"{when} {record.levelname} {one_line(text)}"


class AuditFileHandler(RotatingFileHandler):
    """The handler ``setup_audit_log`` adds (its own class, so that a second set-up replaces it)."""


def audit_logger() -> logging.Logger:
    return logging.getLogger(AUDIT_LOGGER)


def setup_audit_log(outputs_dir: Path, max_bytes: int = MAX_BYTES,
                    backup_count: int = BACKUP_COUNT) -> RotatingFileHandler:
    """Write the audit logger to ``outputs_dir/audit.log``, rotated at ``max_bytes`` with ``backup_count``
    old files kept (audit.log.1 ...). app/cli.py calls it once at start-up; a second call replaces the first."""
    outputs_dir.mkdir(parents=True, exist_ok=True)
    close_audit_log()
    handler = AuditFileHandler(outputs_dir / AUDIT_FILE, maxBytes=max_bytes, backupCount=backup_count,
                               encoding="utf-8")
    handler.setFormatter(AuditFormatter())
    logger = audit_logger()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # whatever the console's level: the audit keeps every event
    logger.propagate = False
    return handler


def audit_files(outputs_dir: Path, backup_count: int = BACKUP_COUNT) -> tuple[Path, ...]:
    """The audit log and its rotated copies, resolved: the web server serves outputs/ (the gallery's
    images) and must refuse these."""
    base = (outputs_dir / AUDIT_FILE).resolve()
    return (base, *(base.with_name(f"{AUDIT_FILE}.{i}") for i in range(1, backup_count + 1)))


def close_audit_log() -> None:
    """Close the audit file and let audit records propagate again (for tests and a clean shutdown)."""
    logger = audit_logger()
    for handler in [h for h in logger.handlers if isinstance(h, AuditFileHandler)]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def audit(event: str, who: str, job_id: str | None = None, what: str = "", level: int = logging.INFO) -> None:
    """Record one event. ``what`` must not hold a prompt or a password: a task kind, a model or LoRA name."""
    line = f"{event} who={token(who)} job={token(job_id or '-')}"
    audit_logger().log(level, "%s", f"{line} {what}" if what else line)


def token(value: str) -> str:
    """``value`` as one token of the line: as it is when plain, else JSON-quoted (a name with a space)."""
    return value if _PLAIN.fullmatch(value) else json.dumps(value, ensure_ascii=False)


def one_line(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
