"""What a replica streams to the UI process: plain dicts of builtins and PNG bytes, so the two sides
share no pickled classes beyond the request, and pictures cross the network losslessly."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from app.engine.jobs import JobEvent

# The kinds of streamed item: who runs the job, one progress event, finished pictures, the job's end.
WORKER, EVENT, IMAGES, END = "worker", "event", "images", "end"
_EVENT_FIELDS = ("phase", "step", "total_steps", "batch_index", "batch_count", "eta_seconds", "message")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def from_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def event_item(event: JobEvent) -> dict[str, Any]:
    """A progress event as a streamed item; its preview as PNG bytes."""
    item: dict[str, Any] = {"kind": EVENT, **{name: getattr(event, name) for name in _EVENT_FIELDS}}
    item["preview"] = png_bytes(event.preview) if event.preview is not None else None
    return item


def event_fields(item: dict[str, Any]) -> dict[str, Any]:
    """The JobEvent fields of an event item (phase apart), its preview a picture again."""
    fields = {name: item[name] for name in _EVENT_FIELDS[1:] if item.get(name) is not None}
    if item.get("preview") is not None:
        fields["preview"] = from_png(item["preview"])
    return fields
