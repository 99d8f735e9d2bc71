"""A1111's LoRA prompt syntax: ``<lora:name>`` or ``<lora:name:weight>``, anywhere in the prompt.

The tags are taken out of the text the model encodes; the infotext keeps the prompt as typed,
tags included, as A1111 does. Only the positive prompt is read, as in A1111.
"""

from __future__ import annotations

import re

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
