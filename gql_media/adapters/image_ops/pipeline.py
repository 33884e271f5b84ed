"""A variant pipeline from a file: the upright source decoded as small as every variant
allows, each variant's operations in order, then its encoding."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageOps

from gql_media.adapters.image_ops.encoding import encode, output_format, save_options
from gql_media.adapters.image_ops.model import (
    ANIMATED_FORMATS,
    AutoOrient,
    Crop,
    Operation,
    ProcessedImage,
    Resize,
    Rotate,
    TextWatermark,
    Thumbnail,
    Variant,
    content_type_for,
)
from gql_media.adapters.image_ops.reading import (
    SWAPS_AXES,
    animation_frames,
    eight_bit,
    exif_orientation,
    has_alpha,
    load_frame,
    open_image,
    probe_image,
)
from gql_media.adapters.image_ops.transform import crop, resize, resize_plan, rotate
from gql_media.adapters.image_ops.watermark import image_watermark, text_watermark
from gql_media.errors import ErrorCode, MediaError
from gql_media.settings import DEFAULT_MAX_ANIMATION_PIXELS


def apply(image: Image.Image, op: Operation, max_pixels: int) -> Image.Image:
    """One operation on a decoded, upright picture."""
    if isinstance(op, Resize):
        return resize(image, op, max_pixels)
    if isinstance(op, Thumbnail):
        copy = image.copy()
        copy.thumbnail((op.size, op.size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        return copy
    if isinstance(op, Crop):
        return crop(image, op)
    if isinstance(op, Rotate):
        return rotate(image, op, max_pixels)
    if isinstance(op, AutoOrient):
        return ImageOps.exif_transpose(image)
    if isinstance(op, TextWatermark):
        return text_watermark(image, op)
    return image_watermark(image, op, max_pixels)


def needed_size(size: tuple[int, int], variant: Variant) -> tuple[int, int] | None:
    """The smallest upright size the variant's first resize needs, or None for full size."""
    for op in variant.operations:
        if isinstance(op, AutoOrient):
            continue
        if isinstance(op, Thumbnail):
            scale = min(1.0, op.size / max(size))
            return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))
        if isinstance(op, Resize):
            return resize_plan(size, op)[0]
        return None
    return None


def decode_upright(path: Path, variants: Sequence[Variant], max_pixels: int) -> Image.Image:
    """The upright source, decoded as small as every variant allows."""
    with open_image(path, max_pixels) as image:
        orientation = exif_orientation(image)
        upright = image.size[::-1] if orientation in SWAPS_AXES else image.size
        if image.format == "JPEG":
            needs = [needed_size(upright, v) for v in variants]
            if all(n is not None for n in needs):
                need_w = max(n[0] for n in needs if n is not None)
                need_h = max(n[1] for n in needs if n is not None)
                stored = (need_h, need_w) if orientation in SWAPS_AXES else (need_w, need_h)
                image.draft(image.mode if image.mode in ("RGB", "L") else "RGB", stored)
        load_frame(image)
        try:
            decoded = eight_bit(ImageOps.exif_transpose(image))
            if decoded.mode not in ("RGB", "RGBA", "L", "LA"):
                decoded = decoded.convert("RGBA" if has_alpha(decoded) else "RGB")
        except MemoryError:
            raise  # over the memory ceiling, not damaged: see adapters.isolation
        except Exception as exc:
            raise MediaError(ErrorCode.MEDIA_CORRUPT, "the image file is damaged") from exc
    return decoded


def _animated(
    path: Path, variant: Variant, fmt: str, max_pixels: int, max_animation_pixels: int
) -> tuple[bytes, tuple[int, int]]:
    frames: list[Image.Image] = []
    durations: list[int] = []
    first: Image.Image | None = None
    for frame, duration in animation_frames(path, max_pixels, max_animation_pixels):
        first = first or frame
        for op in variant.operations:
            frame = apply(frame, op, max_pixels)
        frames.append(frame.convert("RGBA"))
        durations.append(duration)
    if not frames or first is None:
        raise MediaError(ErrorCode.MEDIA_CORRUPT, "the animation has no frames")
    buffer = io.BytesIO()
    options = save_options(fmt, variant.output, first)
    options.pop("exif", None)
    frames[0].save(
        buffer,
        fmt,
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=0,
        **options,
    )
    return buffer.getvalue(), frames[0].size


def process_image(
    source: Path,
    variants: Sequence[Variant],
    max_pixels: int,
    progress: Callable[[float], None] | None = None,
    *,
    max_animation_pixels: int = DEFAULT_MAX_ANIMATION_PIXELS,
) -> list[ProcessedImage]:
    """Run every variant on ``source``; one output per variant, in order."""
    report = progress or (lambda _fraction: None)
    # decoding below shows any damage
    info = probe_image(source, max_pixels, decode=False, max_animation_pixels=max_animation_pixels)
    animated = info.frames > 1
    decoded = decode_upright(source, variants, max_pixels)
    report(1 / (len(variants) + 1))
    results: list[ProcessedImage] = []
    for index, variant in enumerate(variants):
        fmt = output_format(variant.output, info.format, animated)
        if animated and fmt in ANIMATED_FORMATS:
            data, size = _animated(source, variant, fmt, max_pixels, max_animation_pixels)
        else:
            image = decoded
            for op in variant.operations:
                image = apply(image, op, max_pixels)
            data, size = encode(image, variant.output, fmt, decoded), image.size
        results.append(ProcessedImage(variant.name, content_type_for(fmt), *size, data))
        report((index + 2) / (len(variants) + 1))
    return results
