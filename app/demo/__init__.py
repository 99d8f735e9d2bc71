"""The bundled "shapes" demo model: its data generator, build, checker and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEMO_MODEL = "demo-shapes"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
BUNDLED_PATH = REPO_ROOT / "models" / "Stable-diffusion" / DEMO_MODEL


def bundled_demo_model() -> Path | None:
    """The demo model's folder in this repository, when it has been built (it is committed)."""
    return BUNDLED_PATH if (BUNDLED_PATH / "model_index.json").is_file() else None


SHAPES_EVALUATOR = "shapes"  # the name the demo model's card gives its checker


def register_scorers(scorers: Any) -> None:
    """Add the shapes checker to a training ``Scorers`` registry (app/cli.py calls this at start)."""
    from app.demo.scoring import adherence

    scorers.register(SHAPES_EVALUATOR, adherence,
                     "share of samples whose shape and colour the shapes checker reads as the prompt asks")
