"""Tiny training pictures: coloured shapes on white, with same-name captions."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw


def draw(path: Path, colour: str, shape: str, size: tuple[int, int] = (64, 64)) -> None:
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    (pen.ellipse if shape == "circle" else pen.rectangle)((16, 16, 48, 48), fill=colour)
    image.save(path)


def dot_dataset(folder: Path, caption: str = "a {colour} circle",
                colours: tuple[str, ...] = ("red", "blue", "green")) -> Path:
    """One 64x64 circle per colour, ``<i>.png`` + ``<i>.txt``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, colour in enumerate(colours):
        draw(folder / f"{index}.png", colour, "circle")
        (folder / f"{index}.txt").write_text(caption.format(colour=colour))
    return folder
