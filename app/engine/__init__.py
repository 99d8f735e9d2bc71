"""The headless engine: no Gradio here. Front ends build requests and follow jobs."""

from app.engine.config import EngineConfig
from app.engine.engine import Engine
from app.engine.jobs import Job, JobCancelled, JobEvent, JobFailed, JobResult
from app.engine.requests import (
    GenerationRequest,
    Img2ImgRequest,
    InpaintRequest,
    LoraSpec,
    Txt2ImgRequest,
)

__all__ = [
    "Engine", "EngineConfig", "Job", "JobCancelled", "JobEvent", "JobFailed", "JobResult",
    "GenerationRequest", "Img2ImgRequest", "InpaintRequest", "LoraSpec", "Txt2ImgRequest",
]
