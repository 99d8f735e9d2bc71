"""Image and mask geometry for img2img and inpaint: A1111's resize modes, mask blur, the
"only masked" crop region, and pasting a result back so that pixels outside the mask stay
exactly as they were."""

from __future__ import annotations

import numpy as np
from diffusers.image_processor import VaeImageProcessor
from PIL import Image, ImageFilter, ImageOps

Box = tuple[int, int, int, int]  # left, top, right, bottom (right/bottom exclusive)


def resize_image(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """Resize as A1111's resize modes do: stretch, cover and crop, or fit and fill the edges."""
    if image.size == (width, height):
        return image.copy()
    if mode == "Just resize":
        return image.resize((width, height), Image.LANCZOS)
    if mode == "Crop and resize":
        return ImageOps.fit(image, (width, height), Image.LANCZOS, centering=(0.5, 0.5))
    if mode == "Resize and fill":
        return _fit_and_fill(image, width, height)
    raise ValueError(f"Unknown resize mode {mode!r}.")


def _fit_and_fill(image: Image.Image, width: int, height: int) -> Image.Image:
    """Fit inside the target, then fill the bands at the sides by stretching the edge pixels."""
    fitted = ImageOps.contain(image, (width, height), Image.LANCZOS)
    canvas = fitted.resize((width, height), Image.NEAREST)  # placeholder, overwritten below
    fw, fh = fitted.size
    left, top = (width - fw) // 2, (height - fh) // 2
    if fw < width:  # bands on the left and right: stretch the first/last column
        canvas.paste(fitted.crop((0, 0, 1, fh)).resize((left or 1, fh)), (0, top))
        canvas.paste(fitted.crop((fw - 1, 0, fw, fh)).resize((width - fw - left or 1, fh)), (left + fw, top))
    if fh < height:  # bands at the top and bottom: stretch the first/last row
        canvas.paste(fitted.crop((0, 0, fw, 1)).resize((fw, top or 1)), (left, 0))
        canvas.paste(fitted.crop((0, fh - 1, fw, fh)).resize((fw, height - fh - top or 1)), (left, top + fh))
    canvas.paste(fitted, (left, top))
    return canvas


def prepare_mask(mask: Image.Image, blur: int, invert: bool = False) -> Image.Image:
    """Greyscale mask (white = repaint), optionally inverted, Gaussian-blurred by ``blur`` px."""
    grey = mask.convert("L")
    if invert:
        grey = ImageOps.invert(grey)
    return grey.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else grey


def mask_bbox(mask: Image.Image) -> Box | None:
    """Bounding box of the non-zero pixels, or None for an empty mask."""
    return mask.getbbox()


def crop_region(mask: Image.Image, padding: int, width: int, height: int) -> Box:
    """The "only masked" region: the mask's box plus padding, grown to the target aspect ratio
    and clipped to the image (diffusers implements A1111's rule; we add the empty-mask error)."""
    if mask_bbox(mask) is None:
        raise ValueError("The mask is empty: paint the area to repaint.")
    return tuple(int(v) for v in VaeImageProcessor.get_crop_region(mask, width, height, pad=padding))  # type: ignore[return-value]


def fill_masked_area(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: replace masked pixels with colours spread in from around them."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    keep = (np.asarray(mask.convert("L"), dtype=np.float64) < 128).astype(np.float64)
    filled = rgb.copy()
    hole = keep == 0
    if keep.sum() == 0:
        return Image.fromarray(np.full_like(rgb, 127).astype(np.uint8))
    for radius in (64, 32, 16, 8, 4):  # coarse to fine: each pass refines the colours near the edge
        weights = _blur(keep, radius)
        colour = np.stack([_blur(rgb[..., c] * keep, radius) for c in range(3)], axis=-1)
        valid = weights > 1e-6
        update = hole & valid
        filled[update] = colour[update] / weights[update][:, None]
    return Image.fromarray(filled.clip(0, 255).round().astype(np.uint8))


def _blur(channel: np.ndarray, radius: int) -> np.ndarray:
    """Box blur with zero padding (the caller normalises by the blurred weights)."""
    out = channel
    for axis in (0, 1):
        padded = np.pad(out, [(radius + 1, radius) if a == axis else (0, 0) for a in (0, 1)])
        sums = np.cumsum(padded, axis=axis)
        upper = np.take(sums, range(2 * radius + 1, sums.shape[axis]), axis=axis)
        lower = np.take(sums, range(0, sums.shape[axis] - 2 * radius - 1), axis=axis)
        out = upper - lower
    return out


def paste_back(original: Image.Image, generated: Image.Image, blurred_mask: Image.Image) -> Image.Image:
    """Blend ``generated`` into ``original`` through the blurred mask: where the mask is 0 the
    original pixel is kept exactly."""
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), blurred_mask.convert("L"))
