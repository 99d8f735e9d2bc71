"""The "shapes" world of the bundled demo model: coloured shapes on coloured backgrounds, with captions.

Everything is drawn from a seed, so a dataset is reproduced exactly. Some (shape, colour) pairs are
held out of the base model's training (to test generalisation), and one shape, the star, is held
out entirely (the concept the LoRA test teaches).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle")
HELD_OUT_SHAPE = "star"  # never in the base model's data: the LoRA test's concept
HELD_OUT_PAIRS = frozenset({("triangle", "yellow"), ("circle", "purple"), ("square", "orange")})
TEMPLATES = (
    "a {colour} {shape} on a {background} background",
    "a {colour} {shape} over {background}",
    "{colour} {shape}, {background} background",
    "a picture of a {colour} {shape} on {background}",
    "one {colour} {shape} in front of a {background} wall",
)


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    size: int  # the shape's bounding box side, pixels
    centre: tuple[int, int]

    def caption(self, template: str = TEMPLATES[0]) -> str:
        return template.format(colour=self.colour, shape=self.shape, background=self.background)


def random_scene(rng: random.Random, image_size: int = 64, shapes: tuple[str, ...] = SHAPES,
                 allow_held_out_pairs: bool = False) -> Scene:
    """A scene whose shape colour differs from its background, inside the picture."""
    while True:
        shape = rng.choice(shapes)
        colour, background = rng.sample(list(PALETTE), 2)
        if allow_held_out_pairs or (shape, colour) not in HELD_OUT_PAIRS:
            break
    return placed_scene(rng, shape, colour, background, image_size)


def placed_scene(rng: random.Random, shape: str, colour: str, background: str, image_size: int = 64) -> Scene:
    """That shape in those colours, at a random size and place inside the picture."""
    size, centre = placement(rng, image_size, smallest_size(shape, image_size))
    return Scene(shape, colour, background, size, centre)


def placement(rng: random.Random, image_size: int, smallest: int) -> tuple[int, tuple[int, int]]:
    """A side between ``smallest`` and 5/8 of the picture, and a centre that keeps the shape inside."""
    size = rng.randint(smallest, image_size * 5 // 8)
    half = size // 2 + 1
    return size, (rng.randint(half, image_size - half), rng.randint(half, image_size - half))


def smallest_size(shape: str, image_size: int) -> int:
    """The smallest side a shape is drawn at. A star is at least half the picture: smaller, its points
    are two or three pixels wide, narrower than one latent cell of the 4x autoencoder, so no model of
    this size can draw them (decoded, they come back as round blobs)."""
    return image_size // 2 if shape == HELD_OUT_SHAPE else image_size // 4


def render(scene: Scene, image_size: int = 64) -> Image.Image:
    image = Image.new("RGB", (image_size, image_size), PALETTE[scene.background])
    pen = ImageDraw.Draw(image)
    x, y = scene.centre
    r = scene.size / 2
    fill = PALETTE[scene.colour]
    if scene.shape == "circle":
        pen.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif scene.shape == "square":
        pen.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    elif scene.shape == "triangle":
        pen.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
    elif scene.shape == "star":
        pen.polygon(star_points(x, y, r), fill=fill)
    else:
        raise ValueError(f"unknown shape {scene.shape!r}")
    return image


def star_points(x: float, y: float, r: float, points: int = 5) -> list[tuple[float, float]]:
    inner = r * 0.42
    corners = []
    for i in range(points * 2):
        radius = r if i % 2 == 0 else inner
        angle = -math.pi / 2 + i * math.pi / points
        corners.append((x + radius * math.cos(angle), y + radius * math.sin(angle)))
    return corners


def random_outline(rng: random.Random, image_size: int = 64) -> Image.Image:
    """A random polygon of 3 to 12 corners at random distances from its centre (convex or not), in a
    palette colour on another: uncaptioned pictures that teach the autoencoder outlines in general,
    so that it can draw shapes the text-to-image model never saw (the star a LoRA teaches)."""
    colour, background = rng.sample(list(PALETTE), 2)
    image = Image.new("RGB", (image_size, image_size), PALETTE[background])
    size, (x, y) = placement(rng, image_size, image_size // 4)
    r = size / 2
    corners = rng.randint(3, 12)
    turn = rng.random() * 2 * math.pi
    angles = sorted(rng.random() * 2 * math.pi for _ in range(corners))
    reach = [rng.uniform(0.3, 1.0) for _ in range(corners)]
    ImageDraw.Draw(image).polygon([(x + r * k * math.cos(a + turn), y + r * k * math.sin(a + turn))
                                   for a, k in zip(angles, reach)], fill=PALETTE[colour])
    return image


def sample(seed: int, count: int, image_size: int = 64, shapes: tuple[str, ...] = SHAPES,
           allow_held_out_pairs: bool = False) -> list[tuple[Image.Image, str, Scene]]:
    """``count`` (picture, caption, scene) triples, reproducible from ``seed``."""
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        scene = random_scene(rng, image_size, shapes, allow_held_out_pairs)
        items.append((render(scene, image_size), scene.caption(rng.choice(TEMPLATES)), scene))
    return items
