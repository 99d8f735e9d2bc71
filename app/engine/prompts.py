"""What a prompt asks for besides its words: ``<lora:name:weight>`` tags and textual inversions.

LoRA tags may stand anywhere in the positive prompt (inside brackets too); they are taken out of
the text the model encodes, and the infotext keeps the prompt as typed, tags included, as A1111
does. Textual inversions are the files of ``models/embeddings/`` that fit the model's text
encoder(s); the words are read by ``app.engine.conditioning``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from app.engine.conditioning import PromptEmbeddings
from app.engine.embeddings import FAMILY_WIDTHS, EmbeddingMismatch
from app.engine.prompt_chunks import CHUNK_TOKENS
from app.engine.registry import ModelEntry, ModelRegistry
from app.engine.requests import GenerationRequest, LoraSpec

LORA_TAG = re.compile(r"<lora:([^<>]*)>", re.IGNORECASE)


def split_lora_tags(prompt: str) -> tuple[str, tuple[LoraSpec, ...]]:
    """(the prompt without its ``<lora:...>`` tags, the LoRAs they ask for, in order).

    Raises ValueError for a tag without a name, a weight that is not a number, or the
    separate text-encoder/UNet weights of A1111 (``<lora:name:te:unet>``), which are not
    supported.
    """
    specs: list[LoraSpec] = []
    for match in LORA_TAG.finditer(prompt):
        specs.append(_spec_of(match.group(0), match.group(1)))
    return LORA_TAG.sub("", prompt).strip(), tuple(specs)


def _spec_of(tag: str, body: str) -> LoraSpec:
    name, *rest = body.split(":")
    name = name.strip()
    if not name:
        raise ValueError(f"{tag} names no LoRA: write <lora:name> or <lora:name:weight>.")
    if len(rest) > 1:
        raise ValueError(f"{tag}: separate text-encoder and UNet weights are not supported; "
                         f"use one weight, as in <lora:{name}:0.8>.")
    if not rest or not rest[0].strip():
        return LoraSpec(name, 1.0)
    text = rest[0].strip()
    try:
        weight = float(text)
    except ValueError:
        raise ValueError(f"The weight {text!r} in {tag} is not a number.") from None
    return LoraSpec(name, weight)


def merge_loras(*groups: tuple[LoraSpec, ...]) -> tuple[LoraSpec, ...]:
    """One spec per LoRA name, in first-seen order; weights of repeated names add up."""
    weights: dict[str, float] = {}
    for group in groups:
        for spec in group:
            weights[spec.name] = weights.get(spec.name, 0.0) + spec.weight
    return tuple(LoraSpec(name, weight) for name, weight in weights.items())


def requested_loras(request: GenerationRequest) -> tuple[str, tuple[LoraSpec, ...]]:
    """(the prompt to encode, every LoRA of the request: its ``loras`` field and its prompt tags)."""
    prompt, tagged = split_lora_tags(request.prompt)
    return prompt, merge_loras(request.loras, tagged)


# ----- textual inversions for a model ------------------------------------------------------------

@dataclass(frozen=True)
class EmbeddingStatus:
    """One file of models/embeddings as the pickers list it: usable on a model or skipped, and why."""

    name: str  # the word used in prompts
    vectors: int | None  # None when the file could not be read
    family_label: str
    short_hash: str
    skipped_because: str | None = None

    @property
    def usable(self) -> bool:
        return self.skipped_because is None


def embedding_statuses(registry: ModelRegistry, widths: tuple[int, ...] | None,
                       allow_pickle: bool) -> tuple[list[EmbeddingStatus], PromptEmbeddings]:
    """Every embedding file with what it is, and the vectors of those that fit text encoders of
    ``widths`` (None: the widths are unknown, so none is usable yet)."""
    statuses: list[EmbeddingStatus] = []
    vectors: dict[str, tuple] = {}
    hashes: dict[str, str] = {}
    for entry in registry.embeddings():
        assert entry.path is not None
        name = Path(entry.name).stem
        try:
            inversion = registry.textual_inversion(entry.path, allow_pickle=allow_pickle)
        except ValueError as exc:
            statuses.append(EmbeddingStatus(name, None, "unreadable", "", str(exc)))
            continue
        reason = None
        if name in hashes or any(s.name == name and s.usable for s in statuses):
            reason = f"another embedding is already called {name}"
        elif inversion.vector_count > CHUNK_TOKENS:
            reason = f"{name} has {inversion.vector_count} vectors; at most {CHUNK_TOKENS} fit in a prompt chunk"
        elif widths is None:
            reason = "cannot tell whether it fits this model before the model is loaded"
        else:
            try:
                vectors[name] = inversion.vectors_for(widths)
                hashes[name] = inversion.short_hash
            except EmbeddingMismatch as exc:
                reason = str(exc)
        statuses.append(EmbeddingStatus(name, inversion.vector_count, inversion.family_label, inversion.short_hash,
                                        reason))
    return statuses, PromptEmbeddings(vectors, hashes)


def text_encoder_widths(registry: ModelRegistry, entry: ModelEntry) -> tuple[int, ...] | None:
    """The hidden sizes of a checkpoint's text encoder(s), read without loading it (None if unknown)."""
    if entry.kind == "diffusers" and entry.path is not None:
        widths = []
        for folder in ("text_encoder", "text_encoder_2"):
            config = entry.path / folder / "config.json"
            if config.is_file():
                widths.append(int(json.loads(config.read_text(encoding="utf-8"))["hidden_size"]))
        return tuple(widths) or None
    family = registry.checkpoint_family(entry)
    return FAMILY_WIDTHS.get(family) if family else None
