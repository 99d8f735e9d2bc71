"""Pure helpers: resize modes, masks, crop regions, previews, atomic PNG writes, progress text."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from app.engine import masks
from app.engine.jobs import JobEvent
from app.engine.outputs import next_image_number, read_parameters, save_image
from app.engine.preview import SD1_FACTORS, LatentPreviewer, PendingPreview
from app.engine.requests import Txt2ImgRequest
from app.engine.tasks import JobClock, StepReporter
from app.engine.jobs import Job
from app.engine.worker import FairQueue
from app.ui.progress import format_seconds, progress_html


def test_resize_modes_keep_or_fill_the_aspect() -> None:
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 100, 100))  # left half blue
    stretched = masks.resize_image(wide, 64, 64, "Just resize")
    cropped = masks.resize_image(wide, 64, 64, "Crop and resize")
    filled = masks.resize_image(wide, 64, 64, "Resize and fill")
    assert stretched.size == cropped.size == filled.size == (64, 64)
    assert stretched.getpixel((5, 32)) == (0, 0, 255) and stretched.getpixel((60, 32)) == (255, 0, 0)
    # Crop keeps the centre (blue|red boundary in the middle); fill keeps the whole picture, edge-stretched.
    assert cropped.getpixel((2, 32))[2] > 200 and cropped.getpixel((61, 32))[0] > 200
    assert filled.getpixel((2, 2)) == (0, 0, 255) and filled.getpixel((61, 61)) == (255, 0, 0)
    with pytest.raises(ValueError):
        masks.resize_image(wide, 64, 64, "Sideways")


def test_mask_blur_invert_and_crop_region() -> None:
    mask = Image.new("L", (100, 60))
    mask.paste(255, (40, 20, 50, 30))
    blurred = masks.prepare_mask(mask, 2)
    assert blurred.getpixel((45, 25)) > 240 and 0 < blurred.getpixel((39, 25)) < 200 and blurred.getpixel((5, 5)) == 0
    assert masks.prepare_mask(mask, 0, invert=True).getpixel((5, 5)) == 255
    box = masks.crop_region(mask, 5, 128, 64)  # 2:1 target ratio
    left, top, right, bottom = box
    assert left <= 35 and right >= 55 and top <= 15 and bottom >= 35
    assert (right - left) == 2 * (bottom - top)
    with pytest.raises(ValueError, match="empty"):
        masks.crop_region(Image.new("L", (10, 10)), 4, 64, 64)


def test_paste_back_keeps_unmasked_pixels_exactly() -> None:
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    generated = Image.new("RGB", (32, 32), (255, 255, 255))
    mask = Image.new("L", (32, 32))
    mask.paste(255, (4, 4, 28, 28))
    out = np.asarray(masks.paste_back(original, generated, masks.prepare_mask(mask, 2)))
    keep = np.asarray(masks.prepare_mask(mask, 2)) == 0
    assert np.array_equal(out[keep], np.asarray(original)[keep])
    assert (out[16, 16] == 255).all()


def test_fill_spreads_surrounding_colour_into_the_hole() -> None:
    image = Image.new("RGB", (64, 64), (0, 200, 0))
    image.paste((255, 0, 0), (24, 24, 40, 40))  # a red square that the mask covers
    mask = Image.new("L", (64, 64))
    mask.paste(255, (20, 20, 44, 44))
    filled = masks.fill_masked_area(image, mask)
    assert filled.getpixel((32, 32)) == (0, 200, 0)
    assert filled.getpixel((2, 2)) == (0, 200, 0)


def test_preview_is_a_latent_sized_projection() -> None:
    latents = torch.zeros(2, 4, 8, 12)
    latents[0, 3] = -1.0  # channel 3 pushes towards blue-ish in SD's approximation
    image = LatentPreviewer()(latents)
    assert image.size == (12, 8)
    expected = np.round((np.clip(-np.array(SD1_FACTORS[3]), -1, 1) + 1) * 127.5)
    assert np.array_equal(np.asarray(image)[0, 0], expected.astype(np.uint8))
    with pytest.raises(ValueError):
        LatentPreviewer()(torch.zeros(1, 16, 4, 4))


class _SlowCopy:
    """A preview copy the device finishes two steps after it was queued (a GPU behind the host)."""

    def __init__(self, now: list[int]) -> None:
        self.now, self.done_at = now, now[0] + 2

    def query(self) -> bool:
        return self.now[0] >= self.done_at

    def synchronize(self) -> None:
        raise AssertionError("the reporter waited for the device")


class _SlowPreviewer(LatentPreviewer):
    """Previews whose copies take two steps; ``now`` holds the step being reported."""

    def start(self, latents: torch.Tensor) -> PendingPreview:
        self.started.append(float(latents[0, 0, 0, 0]))
        return PendingPreview(self, latents[0].clone(), _SlowCopy(self.now))


class _Context:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def check_cancelled(self) -> None: ...

    def check_skipped(self) -> None: ...

    def emit(self, phase: str, **data) -> None:
        self.events.append({"phase": phase, **data})


def _report_steps(previewer: LatentPreviewer, steps: int, every: int, now: list[int]) -> list[tuple[int, float]]:
    """The (step, preview's top-left red value) of each preview shown over ``steps`` steps."""
    ctx = _Context()
    reporter = StepReporter(ctx, previewer, every, Txt2ImgRequest(steps=steps), 0, JobClock())  # type: ignore[arg-type]
    for step in range(steps):
        now[0] = step + 1
        latents = torch.full((1, 4, 2, 2), step / 10.0)  # each step's latents differ
        reporter(None, step, None, {"latents": latents})
    return [(e["step"], np.asarray(e["preview"])[0, 0, 0] / 255.0) for e in ctx.events
            if e["phase"] == "sampling" and e.get("preview") is not None]


def test_previews_never_wait_for_the_device() -> None:
    """On the CPU a due preview shows at its step. When its copy is still on its way (a GPU running behind
    the host) it shows at the first later step that finds the copy done, without waiting; the next one
    starts then. Due at 2, 4, 6 of 8; each copy takes two more steps: step 2's latents show at 4, step 4's
    at 6, step 6's at 8."""
    now = [0]
    assert [step for step, _ in _report_steps(LatentPreviewer(), steps=8, every=2, now=now)] == [2, 4, 6]
    slow = _SlowPreviewer()
    object.__setattr__(slow, "started", [])
    object.__setattr__(slow, "now", now)
    shown = _report_steps(slow, steps=8, every=2, now=now)
    assert [step for step, _ in shown] == [4, 6, 8]
    assert slow.started == pytest.approx([0.1, 0.3, 0.5])  # the latents of steps 2, 4 and 6
    expected = [LatentPreviewer()(torch.full((1, 4, 2, 2), value)) for value in (0.1, 0.3, 0.5)]
    assert [red for _, red in shown] == [np.asarray(image)[0, 0, 0] / 255.0 for image in expected]
    assert len(set(red for _, red in shown)) == 3


def test_save_image_numbers_atomically_and_embeds_parameters(tmp_path) -> None:
    folder = tmp_path / "txt2img-images" / "2026-01-01"
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    first = save_image(image, folder, 77, "a prompt\nSteps: 1, Sampler: Euler, Seed: 77")
    (folder / "00041-5.png").write_bytes(b"")  # an A1111 file already there: numbering continues after it
    second = save_image(image, folder, 78, "x")
    assert first.name == "00000-77.png" and second.name == "00042-78.png"
    assert read_parameters(first) == "a prompt\nSteps: 1, Sampler: Euler, Seed: 77"
    assert next_image_number(folder) == 43

    broken = Image.new("RGB", (8, 8))
    broken.save = lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
    with pytest.raises(OSError):
        save_image(broken, folder, 79, "x")
    assert sorted(p.name for p in folder.iterdir()) == ["00000-77.png", "00041-5.png", "00042-78.png"]


def test_fair_queue_serves_owners_in_turn() -> None:
    queue = FairQueue()
    jobs = {name: Job(owner, lambda ctx: None, description=name)
            for name, owner in [("a1", "alice"), ("a2", "alice"), ("a3", "alice"), ("b1", "bob"), ("c1", "carol")]}
    for job in jobs.values():
        queue.put(job)
    assert [j.description for j in queue.order()] == ["a1", "b1", "c1", "a2", "a3"]
    assert queue.remove(jobs["b1"]) and not queue.remove(jobs["b1"])
    taken = [queue.take(0).description for _ in range(4)]
    assert taken == ["a1", "c1", "a2", "a3"]
    assert queue.take(0.01) is None


def test_progress_text() -> None:
    event = JobEvent("j", "sampling", step=5, total_steps=20, batch_index=1, batch_count=2, eta_seconds=75)
    text = progress_html(event)
    assert "Step 5/20" in text and "batch 2/2" in text and "ETA 1m 15s" in text and "width:62.5%" in text
    assert "2 jobs ahead" in progress_html(JobEvent("j", "queued", position=2))
    assert format_seconds(3.4) == "3s"
