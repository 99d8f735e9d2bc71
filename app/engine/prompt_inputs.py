"""A prompt as pipeline arguments: the conditioning tensors and the step callback that changes them.

Shared by the generate tasks, the LoRA evaluation and the trainer's samples, so that every place
that draws a picture reads the prompt the same way (A1111's language, textual inversions included).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from app.engine.conditioning import (
    DEFAULT_EMPHASIS,
    ConditioningSwitcher,
    EncodeSettings,
    PromptEncoder,
    StepConditioning,
)
from app.engine.lora_runtime import ActiveLora, file_key
from app.engine.prompt_parser import prompt_schedule
from app.engine.prompts import EmbeddingStatus, embedding_statuses
from app.engine.registry import ModelRegistry

log = logging.getLogger(__name__)

StepCallback = Callable[[Any, int, Any, dict], dict]


def encode_for_pipeline(encoder: PromptEncoder, pipe: Any, registry: ModelRegistry, prompt: str, negative_prompt: str,
                        steps: int, *, loras: Sequence[ActiveLora] = (), clip_skip: int = 1,
                        emphasis: str = DEFAULT_EMPHASIS, allow_pickle: bool = False) -> StepConditioning:
    """Encode ``prompt`` (LoRA tags already removed) and ``negative_prompt`` for ``pipe`` with the
    LoRAs already fused and the job's sampler set. The schedule counts model calls, as A1111 does:
    twice the steps for a second-order sampler. Embeddings that do not fit the model are skipped,
    with a log line when used."""
    statuses, embeddings = embedding_statuses(registry, encoder.widths, allow_pickle)
    _warn_skipped(statuses, prompt, negative_prompt)
    lora_state = tuple((file_key(lora.path), lora.weight) for lora in loras if lora.info.has_text_encoder)
    schedule_steps = steps * int(getattr(pipe.scheduler, "order", 1) or 1)
    return encoder.encode(prompt, negative_prompt, schedule_steps, EncodeSettings(clip_skip, emphasis, lora_state),
                          embeddings)


def conditioned_call(conditioning: StepConditioning, batch_size: int,
                     reporter: StepCallback | None = None) -> dict[str, Any]:
    """Pipeline keyword arguments: the first step's tensors, and a ``callback_on_step_end`` that runs
    ``reporter`` (progress, previews) and then, for prompts that change during sampling, puts the
    next step's conditioning in place."""
    kwargs: dict[str, Any] = dict(conditioning.pipeline_kwargs())
    if not conditioning.changes_during_sampling:
        if reporter is not None:
            kwargs |= {"callback_on_step_end": reporter, "callback_on_step_end_tensor_inputs": ["latents"]}
        return kwargs
    switcher = ConditioningSwitcher(conditioning, batch_size)

    def callback(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        if reporter is not None:
            callback_kwargs = reporter(pipe, step, timestep, callback_kwargs)
        return switcher(pipe, step, timestep, callback_kwargs)

    return kwargs | {"callback_on_step_end": callback,
                     "callback_on_step_end_tensor_inputs": ["latents", *switcher.tensor_inputs]}


def prompt_infotext(prompt: str, negative_prompt: str, steps: int, emphasis: str,
                    conditioning: StepConditioning) -> dict[str, object]:
    """A1111's prompt parameters: "TI hashes" of the embeddings used, and "Emphasis" when it is not
    Original and a text the model reads (after prompt editing) holds brackets."""
    extra: dict[str, object] = {}
    if conditioning.embeddings_used:
        extra["TI hashes"] = ", ".join(f"{name.replace(':', '').replace(',', '')}: {short}"
                                       for name, short in conditioning.embeddings_used.items())
    texts = "".join(text for source in (prompt, negative_prompt) for _, text in prompt_schedule(source, steps))
    if emphasis != DEFAULT_EMPHASIS and ("(" in texts or "[" in texts):
        extra["Emphasis"] = emphasis
    return extra


def _warn_skipped(statuses: list[EmbeddingStatus], *prompts: str) -> None:
    words = set(re.findall(r"[\w.-]+", " ".join(prompts)))
    for status in statuses:
        if not status.usable and status.name in words:
            log.warning("embedding %s in the prompt is not used: %s", status.name, status.skipped_because)
