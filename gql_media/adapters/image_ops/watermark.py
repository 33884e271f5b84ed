"""Text and image watermarks, placed by position and margin."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont, ImageOps

from gql_media.adapters.image_ops.model import ImageWatermark, Position, TextWatermark
from gql_media.adapters.image_ops.reading import eight_bit, has_alpha, load_frame, open_image
from gql_media.adapters.image_ops.transform import parse_colour
from gql_media.errors import ErrorCode, MediaError


def _place(
    canvas: tuple[int, int], item: tuple[int, int], position: Position, margin: int
) -> tuple[int, int]:
    vertical, _, horizontal = position.partition("-")
    if position in ("left", "right"):
        vertical, horizontal = "center", position
    elif position in ("top", "bottom"):
        horizontal = "center"
    elif position == "center":
        vertical = horizontal = "center"
    free_w, free_h = canvas[0] - item[0], canvas[1] - item[1]
    x = {"left": margin, "right": free_w - margin}.get(horizontal, free_w // 2)
    y = {"top": margin, "bottom": free_h - margin}.get(vertical, free_h // 2)
    return max(0, min(x, free_w)), max(0, min(y, free_h))


def _overlay(image: Image.Image, layer: Image.Image) -> Image.Image:
    keep_alpha = has_alpha(image)
    merged = Image.alpha_composite(image.convert("RGBA"), layer)
    return merged if keep_alpha else merged.convert("RGB")


def text_watermark(image: Image.Image, op: TextWatermark) -> Image.Image:
    """Draw ``op``'s text in the bundled font, sized to the picture's height."""
    size = max(8, round(image.height * op.scale))
    font = ImageFont.load_default(size=size)
    colour = parse_colour(op.color, "textWatermark.color")[:3]
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), op.text, font=font)
    box = (math.ceil(right - left), math.ceil(bottom - top))
    x, y = _place(image.size, box, op.position, op.margin)
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).text(
        (x - left, y - top), op.text, font=font, fill=(*colour, round(255 * op.opacity))
    )
    return _overlay(image, layer)


def image_watermark(image: Image.Image, op: ImageWatermark, max_pixels: int) -> Image.Image:
    """Draw ``op``'s image, sized to the picture's width, at its opacity."""
    with open_image(op.source, max_pixels) as opened:
        load_frame(opened)
        try:
            mark = eight_bit(ImageOps.exif_transpose(opened)).convert("RGBA")
        except MemoryError:
            raise  # over the memory ceiling, not damaged: see adapters.isolation
        except Exception as exc:
            raise MediaError(ErrorCode.MEDIA_CORRUPT, "the watermark file is damaged") from exc
    width = max(1, round(image.width * op.scale))
    height = max(1, round(mark.height * width / mark.width))
    mark = mark.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if op.opacity < 1:
        alpha = mark.getchannel("A").point(lambda a: round(a * op.opacity))
        mark.putalpha(alpha)
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    layer.paste(mark, _place(image.size, mark.size, op.position, op.margin))
    return _overlay(image, layer)
