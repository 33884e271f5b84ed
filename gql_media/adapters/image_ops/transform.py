"""The operations that change the picture's geometry (resize, thumbnail, crop, rotate,
EXIF orientation)."""

from __future__ import annotations

import math

from PIL import Image, ImageColor

from gql_media.adapters.image_ops.model import Crop, Resize, Rotate
from gql_media.adapters.image_ops.reading import has_alpha
from gql_media.errors import ErrorCode, MediaError


def pixels_guard(width: int, height: int, max_pixels: int) -> None:
    """TOO_MANY_PIXELS when a result of ``width`` x ``height`` would pass ``max_pixels``."""
    if width * height > max_pixels:
        raise MediaError(
            ErrorCode.TOO_MANY_PIXELS,
            f"the result would be {width}x{height}, over the limit of {max_pixels} pixels",
        )


def resize_plan(
    size: tuple[int, int], op: Resize
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """(scaled size, final box): the size to scale to, and for cover and contain with both
    sides given, the box to crop or pad to."""
    w, h = size
    box_w, box_h = op.width, op.height
    if op.fit == "fill":
        tw, th = box_w or w, box_h or h
        if not op.upscale:
            tw, th = min(tw, w), min(th, h)
        return (tw, th), None
    scales = [s for s in (box_w / w if box_w else None, box_h / h if box_h else None) if s]
    scale = max(scales) if op.fit == "cover" and len(scales) == 2 else min(scales)
    if not op.upscale or op.fit == "inside":
        scale = min(scale, 1.0)
    scaled = (max(1, round(w * scale)), max(1, round(h * scale)))
    if box_w and box_h and op.fit == "cover":
        # without upscaling, a source smaller than the box is cropped to what it has
        return scaled, (min(box_w, scaled[0]), min(box_h, scaled[1]))
    if box_w and box_h and op.fit == "contain":
        return scaled, (box_w, box_h)
    return scaled, None


def resize(image: Image.Image, op: Resize, max_pixels: int) -> Image.Image:
    """Scale into the box of ``op``, then crop (cover) or pad (contain) to it."""
    scaled, box = resize_plan(image.size, op)
    pixels_guard(*scaled, max_pixels)
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if box is None or box == image.size:
        return image
    pixels_guard(*box, max_pixels)
    if op.fit == "cover":
        left, top = (image.width - box[0]) // 2, (image.height - box[1]) // 2
        return image.crop((left, top, left + box[0], top + box[1]))
    canvas = Image.new("RGBA", box, (0, 0, 0, 0))
    canvas.paste(image.convert("RGBA"), ((box[0] - image.width) // 2, (box[1] - image.height) // 2))
    return canvas


def crop(image: Image.Image, op: Crop) -> Image.Image:
    """The rectangle of ``op``; PROCESSING_FAILED unless it lies inside the picture."""
    right, bottom = op.left + op.width, op.top + op.height
    inside = 0 <= op.left < right <= image.width and 0 <= op.top < bottom <= image.height
    if not inside:
        raise MediaError(
            ErrorCode.PROCESSING_FAILED,
            f"the crop does not lie inside the {image.width}x{image.height} picture",
        )
    return image.crop((op.left, op.top, right, bottom))


def parse_colour(value: str, what: str) -> tuple[int, ...]:
    """A CSS colour as RGB(A); PROCESSING_FAILED naming ``what`` when it is unknown."""
    try:
        return ImageColor.getrgb(value)
    except ValueError as exc:
        raise MediaError(ErrorCode.PROCESSING_FAILED, f"{what}: unknown colour {value!r}") from exc


def rotate(image: Image.Image, op: Rotate, max_pixels: int) -> Image.Image:
    """Turn clockwise; a quarter turn that expands is a lossless transpose."""
    degrees = op.degrees % 360
    quarter = {
        90: Image.Transpose.ROTATE_270,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_90,
    }
    if degrees == 0:
        return image
    if degrees in quarter and op.expand:
        return image.transpose(quarter[int(degrees)])
    background = parse_colour(op.background, "rotate.background")
    if len(background) == 4 and background[3] < 255 or has_alpha(image):
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if op.expand:
        radians = math.radians(degrees)
        cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
        pixels_guard(
            math.ceil(image.width * cos + image.height * sin),
            math.ceil(image.width * sin + image.height * cos),
            max_pixels,
        )
    fill = background if image.mode == "RGBA" else background[:3]
    if image.mode == "L":
        fill = (background[0],)
    return image.rotate(-degrees, Image.Resampling.BICUBIC, expand=op.expand, fillcolor=tuple(fill))
