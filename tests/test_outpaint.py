"""Outpainting: extend the canvas, generate only the new area, keep the original's pixels exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.engine import Engine, InpaintRequest
from app.engine.a1111_request import ENGINE_DEFAULTS, request_from_a1111
from app.engine.infotext import parse_infotext
from app.engine.outpaint import extend_canvas, extended_sides, paste_original

SMALL = dict(steps=3, denoising_strength=1.0, mask_blur=2, save=False)


def _source() -> Image.Image:
    """A 64x64 picture with varied edges (a seeded gradient plus noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    base = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1) + rng.integers(-20, 20, (64, 64, 3))
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_extend_canvas_rounds_up_by_growing_the_new_area_and_masks_it_with_an_overlap() -> None:
    picture = _source().crop((0, 0, 60, 62))  # 60x62: neither side a multiple of 8
    assert extended_sides(60, 62, 20, 0, 0, 0) == (20, 0, 0, 2)  # 80 wide; 2 rows added at the bottom
    canvas, mask, box = extend_canvas(picture, 20, 0, 0, 0, "stretch")
    assert canvas.size == mask.size == (80, 64) and box == (20, 0, 80, 62)
    assert np.array_equal(_pixels(canvas.crop(box)), _pixels(picture))
    assert np.array_equal(_pixels(canvas)[:62, 0], _pixels(picture)[:, 0])  # the left edge column, stretched
    m = np.asarray(mask)
    # white: the new area plus 8 px into the original on each extended side (the 2 rounding rows count as one)
    assert (m[:, :28] == 255).all() and (m[:54, 28:] == 0).all() and (m[54:] == 255).all()
    noisy, _, _ = extend_canvas(picture, 20, 0, 0, 0, "noise", seed=1)
    assert np.array_equal(_pixels(noisy.crop(box)), _pixels(picture)) and _pixels(noisy)[:, :20].std() > 50
    assert np.array_equal(_pixels(paste_original(noisy, picture, box).crop(box)), _pixels(picture))


@pytest.mark.parametrize("sides", [dict(outpaint_left=32), dict(outpaint_right=32), dict(outpaint_up=32),
                                   dict(outpaint_down=32), dict(outpaint_left=8, outpaint_right=12, outpaint_down=16)])
def test_outpaint_keeps_the_original_and_generates_the_new_area(engine: Engine, sides: dict[str, int]) -> None:
    source = _source()
    request = InpaintRequest(prompt="a landscape", seed=5, init_image=source, **sides, **SMALL)
    result = engine.generate(request)
    out = result.images[0]
    left, right, up, down = extended_sides(64, 64, *(sides.get(f"outpaint_{s}", 0) for s in ("left", "right", "up", "down")))
    assert out.size == (64 + left + right, 64 + up + down)
    assert out.size[0] % 8 == 0 and out.size[1] % 8 == 0
    box = (left, up, left + 64, up + 64)
    assert np.array_equal(_pixels(out.crop(box)), _pixels(source))  # byte-identical
    fill, _, _ = extend_canvas(source, left, right, up, down, "stretch")
    new_area = np.ones(out.size[::-1], dtype=bool)
    new_area[up:up + 64, left:left + 64] = False
    # The new area is generated, not left as the stretched edges: a new area left as the fill would differ by 0
    # (only the blur band near the seam mixes the two); the tiny model's strength-1 content differs by 79-112
    # levels here. 10 of 255 (as test_engine's inpaint check) is far above any rounding, yet far below that.
    assert np.abs(_pixels(out)[new_area] - _pixels(fill)[new_area]).mean() > 10
    info = parse_infotext(result.infotexts[0])
    assert (info["Size-1"], info["Size-2"]) == (str(out.size[0]), str(out.size[1]))
    assert info["Outpaint"] == ", ".join(f"{s} {sides.get(f'outpaint_{s}', 0)}" for s in ("left", "right", "up", "down"))
    assert info["Outpaint fill"] == "stretch"


def test_noise_fill_runs(engine: Engine) -> None:
    source = _source()
    out = engine.generate(InpaintRequest(prompt="x", seed=3, init_image=source, outpaint_right=16,
                                         outpaint_fill="noise", **SMALL)).images[0]
    assert out.size == (80, 64)
    assert np.array_equal(_pixels(out.crop((0, 0, 64, 64))), _pixels(source))


def test_outpaint_validation(engine: Engine) -> None:
    source = _source()
    with pytest.raises(ValueError, match="Outpainting would make 2112x64"):
        engine.submit(InpaintRequest(prompt="x", init_image=source, outpaint_right=2048, **SMALL))
    with pytest.raises(ValueError, match="Outpaint left must be between 0"):
        engine.submit(InpaintRequest(prompt="x", init_image=source, outpaint_left=-8, **SMALL))
    with pytest.raises(ValueError, match="Unknown outpaint fill"):
        engine.submit(InpaintRequest(prompt="x", init_image=source, outpaint_left=8, outpaint_fill="blur", **SMALL))
    painted = Image.new("L", (64, 64))
    painted.paste(255, (10, 10, 20, 20))
    with pytest.raises(ValueError, match="clear the painted mask"):
        engine.submit(InpaintRequest(prompt="x", init_image=source, mask=painted, outpaint_up=8, **SMALL))
    InpaintRequest(prompt="x", init_image=source, mask=Image.new("L", (64, 64)), outpaint_up=8, **SMALL).validate()
    with pytest.raises(ValueError, match="needs a mask"):  # without outpainting, the mask is still needed
        InpaintRequest(prompt="x", init_image=source, **SMALL).validate()


def test_a1111_mapping_of_the_outpaint_fields() -> None:
    source = _source()
    request = request_from_a1111("img2img", {"init_image": source, "outpaint_left": 64.0, "outpaint_down": 8,
                                             "outpaint_fill": "noise"}, defaults={})
    assert isinstance(request, InpaintRequest) and request.mask is None
    assert (request.outpaint_left, request.outpaint_right, request.outpaint_up, request.outpaint_down) == (64, 0, 0, 8)
    assert request.outpaint_fill == "noise" and request.outpaint_size() == (128, 72)
    request.validate()
    plain = request_from_a1111("img2img", {"init_image": source, "outpaint_left": 0, "outpaint_fill": None}, defaults={})
    assert type(plain).__name__ == "Img2ImgRequest"
    ui = request_from_a1111("inpaint", {"init_image": source, "mask": Image.new("L", (64, 64)), "outpaint_up": 16,
                                        "outpaint_fill": "stretch"}, defaults={}, field_defaults=ENGINE_DEFAULTS)
    assert isinstance(ui, InpaintRequest) and ui.outpaint_up == 16


def test_api_schema_documents_the_extension() -> None:
    from app.api.generate_models import StableDiffusionImg2ImgProcessingAPI as Img2Img

    schema = Img2Img.model_json_schema()["properties"]
    assert "LoRA Studio extension" in schema["outpaint_left"]["description"]
    assert schema["outpaint_right"]["maximum"] == 2048 and schema["outpaint_fill"]["default"] == "stretch"
    with pytest.raises(ValueError):
        Img2Img(outpaint_up=-8)


def test_the_outpaint_keys_read_back_from_the_infotext() -> None:
    from app.engine import InpaintRequest
    from app.engine.infotext_fields import request_from_infotext

    text = ('a field\nSteps: 3, Sampler: Euler, Seed: 1, Size: 128x64, Outpaint: "left 64, right 0, up 0, down 0", '
            "Outpaint fill: noise, Version: x")
    request = request_from_infotext(text, task="inpaint")
    assert isinstance(request, InpaintRequest)
    assert (request.outpaint_left, request.outpaint_right, request.outpaint_up, request.outpaint_down,
            request.outpaint_fill) == (64, 0, 0, 0, "noise")
    assert request_from_infotext("a field\nSteps: 3, Sampler: Euler, Seed: 1", task="inpaint").outpaint_left == 0
