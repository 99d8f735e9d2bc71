"""Turn job events into what a person reads: a progress line with step, total and ETA."""

from __future__ import annotations

import html

from app.engine.jobs import JobEvent


def progress_html(event: JobEvent) -> str:
    """A small HTML progress bar for one event."""
    if event.phase == "queued":
        ahead = event.position or 0
        text = "Waiting: next in line" if ahead == 0 else f"Waiting: {ahead} job{'s' if ahead != 1 else ''} ahead"
        return _bar(0.0, text)
    if event.phase == "loading":
        return _bar(0.0, html.escape(event.message or "Loading model"))
    if event.phase == "sampling" and event.total_steps:
        batches = event.batch_count or 1
        index = event.batch_index or 0
        fraction = (index + (event.step or 0) / event.total_steps) / batches
        what = html.escape(event.message) if event.message else "Step"  # e.g. "Upscaling" tiles
        parts = [f"{what} {event.step}/{event.total_steps}"]
        if batches > 1:
            parts.append(f"{'picture' if event.message else 'batch'} {index + 1}/{batches}")
        if event.eta_seconds is not None:
            parts.append(f"ETA {format_seconds(event.eta_seconds)}")
        return _bar(fraction, " · ".join(parts))
    if event.phase == "training" and event.total_steps:
        parts = [f"Step {event.step}/{event.total_steps}"]
        if event.loss is not None:
            parts.append(f"loss {event.loss:.4f}")
        if event.message:
            parts.append(html.escape(event.message))
        if event.eta_seconds is not None:
            parts.append(f"ETA {format_seconds(event.eta_seconds)}")
        return _bar((event.step or 0) / event.total_steps, " · ".join(parts))
    if event.phase in ("decoding", "saving"):
        return _bar(1.0, html.escape(event.message) if event.message else event.phase.capitalize() + "…")
    if event.phase == "done":
        worker = event.result.info.get("worker") if event.result is not None else None
        return _bar(1.0, f"Done on worker {html.escape(worker)}" if worker else "Done")  # a cluster's replica
    if event.phase == "cancelled":
        return _bar(0.0, "Interrupted")
    return _bar(0.0, html.escape(event.message or event.phase))


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _bar(fraction: float, text: str) -> str:
    percent = max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div class="ls-progress"><div class="ls-progress-fill" style="width:{percent:.1f}%"></div>'
        f'<span class="ls-progress-text">{text}</span></div>'
    )
