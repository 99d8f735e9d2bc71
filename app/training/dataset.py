"""Training data: a folder of images with captions, checked, bucketed by aspect ratio, augmented.

Layouts read (the user's folder is only read, never changed):
- kohya: ``<image>.png`` + ``<image>.txt`` caption, in the folder or in ``N_name`` subfolders whose
  images repeat N times per epoch (an image without a caption gets ``name`` as its caption);
- Hugging Face imagefolder: a ``metadata.jsonl`` with ``{"file_name": ..., "text": ...}`` lines.

Each image goes to the aspect-ratio bucket nearest its own (about resolution² pixels, sides a
multiple of ``bucket_step``), is scaled to cover it and centre-cropped: no forced square crop.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")
MAX_PIXELS = 8192 * 8192  # larger files are refused, not decoded (decompression bombs)


@dataclass(frozen=True)
class TrainImage:
    path: Path
    caption: str
    repeats: int
    size: tuple[int, int]  # (width, height) as stored


@dataclass(frozen=True)
class SkippedImage:
    path: Path
    reason: str


@dataclass
class ScanReport:
    images: list[TrainImage] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{len(self.images)} images ({sum(i.repeats for i in self.images)} with repeats), "
                 f"{len(self.skipped)} skipped"]
        lines += [f"  skipped {s.path.name}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def scan_folder(root: Path, *, min_side: int = 32, caption_overrides: dict[str, str] | None = None) -> ScanReport:
    """Every usable image under ``root`` with its caption and repeats; the unusable ones with reasons.
    ``caption_overrides`` (relative path -> caption, e.g. edited in the UI) win over the files."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"The dataset folder {root} does not exist.")
    report = ScanReport()
    metadata = _read_metadata_jsonl(root / "metadata.jsonl")
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        repeats, class_token = 1, ""
        if len(relative.parts) > 1:
            match = REPEAT_FOLDER.match(relative.parts[0])
            if match:
                repeats, class_token = int(match[1]), match[2].replace("_", " ")
        problem, size = check_image(path, min_side)
        if problem:
            report.skipped.append(SkippedImage(path, problem))
            continue
        caption = (caption_overrides or {}).get(relative.as_posix())
        if caption is None:
            caption = _caption_for(path, relative, metadata, class_token)
        report.images.append(TrainImage(path, caption, max(1, repeats), size))
    if not report.images:
        raise ValueError(f"No usable images in {root}.\n{report.summary()}")
    for skipped in report.skipped:
        log.warning("dataset: skipped %s: %s", skipped.path, skipped.reason)
    return report


def check_image(path: Path, min_side: int) -> tuple[str | None, tuple[int, int]]:
    """(why the image cannot be used, or None; its size). Reads the header, then decodes once."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                return f"too large ({width}x{height}; at most {MAX_PIXELS // 1_000_000} megapixels)", (width, height)
            if min(width, height) < min_side:
                return f"too small ({width}x{height}; the short side must be at least {min_side} px)", (width, height)
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return f"unreadable ({exc.__class__.__name__}: {exc})", (0, 0)
    return None, (width, height)


def _read_metadata_jsonl(path: Path) -> dict[str, str]:
    captions: dict[str, str] = {}
    if not path.is_file():
        return captions
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            captions[str(row["file_name"])] = str(row.get("text", row.get("caption", "")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {number}: expected {{\"file_name\": ..., \"text\": ...}} ({exc})") from exc
    return captions


def _caption_for(path: Path, relative: Path, metadata: dict[str, str], class_token: str) -> str:
    text_file = path.with_suffix(".txt")
    if text_file.is_file():
        return " ".join(text_file.read_text(encoding="utf-8", errors="replace").split())
    for key in (relative.as_posix(), path.name):
        if key in metadata:
            return metadata[key].strip()
    return class_token


# ----- buckets ----------------------------------------------------------------------------------


def make_buckets(resolution: int, step: int, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(width, height) pairs of about ``resolution``² pixels, sides multiples of ``step``."""
    area = resolution * resolution
    buckets = set()
    width = step
    while width <= resolution * max_ratio:
        height = min(int(area // width) // step * step, int(resolution * max_ratio) // step * step)
        if height >= step and max(width, height) / min(width, height) <= max_ratio:
            buckets.add((width, height))
        width += step
    return sorted(buckets)


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log space) to the image's; larger area wins ties."""
    import math

    ratio = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def fit_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> Image.Image:
    """Scale to cover the bucket, then centre-crop to it."""
    width, height = bucket
    scale = max(width / image.width, height / image.height)
    resized = image.convert("RGB").resize((max(width, round(image.width * scale)),
                                           max(height, round(image.height * scale))), Image.BICUBIC)
    left = (resized.width - width) // 2
    top = (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


# ----- captions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionOptions:
    shuffle: bool = False
    keep_tokens: int = 0  # leading comma-separated tags that never move
    dropout: float = 0.0  # chance that a sample trains with the empty caption

    @property
    def varies(self) -> bool:
        return self.shuffle or self.dropout > 0


def process_caption(caption: str, options: CaptionOptions, rng: random.Random) -> str:
    if options.dropout > 0 and rng.random() < options.dropout:
        return ""
    if not options.shuffle:
        return caption
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    kept, rest = tags[:options.keep_tokens], tags[options.keep_tokens:]
    rng.shuffle(rest)
    return ", ".join(kept + rest)


# ----- epoch order ------------------------------------------------------------------------------


def epoch_batches(bucket_of: list[tuple[int, int]], repeats: list[int], batch_size: int, seed: int,
                  epoch: int) -> list[list[int]]:
    """The batches of one epoch as lists of image indices, each batch from one bucket.

    The order depends only on (seed, epoch), so a resumed run replays it exactly.
    """
    rng = random.Random(f"{seed}:{epoch}")
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for index, (bucket, count) in enumerate(zip(bucket_of, repeats)):
        by_bucket.setdefault(bucket, []).extend([index] * count)
    batches: list[list[int]] = []
    for bucket in sorted(by_bucket):
        items = by_bucket[bucket]
        rng.shuffle(items)
        batches += [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    rng.shuffle(batches)
    return batches


def sample_rng(seed: int, epoch: int, position: int, slot: int | str) -> random.Random:
    """The randomness of one sample (flip, caption shuffle, dropout), or of a named draw of the batch
    (``"preserve"``: its preserved prompts): fixed by where it is in the run, so stopping and
    resuming changes nothing."""
    return random.Random(f"{seed}:{epoch}:{position}:{slot}")
