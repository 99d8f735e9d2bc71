"""The placeholder default model: a tiny SD 1.x-architecture pipeline with random weights.

It lets the app start and every code path run on a machine with no checkpoint, until the bundled
demo model exists. Its images are noise-like by design; its card says so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from app.engine.registry import CHECKPOINT_DIR, MODEL_CARD

PLACEHOLDER_NAME = "tiny-random-sd1"
PLACEHOLDER_CARD = {
    "label": "untrained placeholder, random weights",
    "default_width": 64,
    "default_height": 64,
    "default_steps": 10,
}


def ensure_placeholder_model(models_dir: Path) -> str:
    """Write the placeholder under models/Stable-diffusion once; return its registry name."""
    target = Path(models_dir) / CHECKPOINT_DIR / PLACEHOLDER_NAME
    if (target / "model_index.json").is_file():
        return PLACEHOLDER_NAME
    from app.engine.tiny import build_tiny_pipeline

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=target.parent))
    try:
        build_tiny_pipeline("sd1", seed=0).save_pretrained(staging)
        (staging / MODEL_CARD).write_text(json.dumps(PLACEHOLDER_CARD, indent=2), encoding="utf-8")
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PLACEHOLDER_NAME
