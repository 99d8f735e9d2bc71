"""What a shapes prompt asks for, and how many generated pictures show it (the demo model's score)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from app.demo.checker import Reading, read_picture
from app.demo.shapes import HELD_OUT_SHAPE, PALETTE, SHAPES

_LORA_TAG = re.compile(r"<lora:[^>]*>")
_WORDS = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Request:
    """The shape, colour and background a prompt names (None where it names none)."""
    shape: str | None
    colour: str | None
    background: str | None


def parse_prompt(prompt: str) -> Request:
    """The first shape word, the first colour word before the shape and the first colour after it.

    Works for every caption template of the generator ("a red circle on a blue background",
    "red circle, blue background", ...); LoRA tags are ignored.
    """
    words = _WORDS.findall(_LORA_TAG.sub(" ", prompt.lower()))
    shapes = (*SHAPES, HELD_OUT_SHAPE)
    where = next((i for i, w in enumerate(words) if w in shapes), None)
    if where is None:
        return Request(None, None, None)
    colour = next((w for w in reversed(words[:where]) if w in PALETTE), None)
    background = next((w for w in words[where + 1:] if w in PALETTE), None)
    return Request(words[where], colour, background)


def judge(image: Image.Image, prompt: str) -> tuple[bool, Request, Reading]:
    """Whether the picture shows the prompt's shape in the prompt's colour, with what was asked and
    what the checker read."""
    wanted = parse_prompt(prompt)
    reading = read_picture(image)
    right = wanted.shape is not None and (reading.shape, reading.colour) == (wanted.shape, wanted.colour)
    return right, wanted, reading


def shows(image: Image.Image, prompt: str) -> bool:
    """Whether the picture shows the prompt's shape in the prompt's colour."""
    return judge(image, prompt)[0]


def adherence(images: Sequence[Image.Image], prompts: Sequence[str]) -> float:
    """Share of pictures showing their prompt's shape and colour (the training tab's score hook)."""
    if len(images) != len(prompts):
        raise ValueError("one prompt per picture")
    if not images:
        return 0.0
    return sum(shows(image, prompt) for image, prompt in zip(images, prompts)) / len(images)
