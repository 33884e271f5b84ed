"""Writing a pipeline's result: the output format, the encoder's options, the metadata
kept or stripped."""

from __future__ import annotations

import io

from PIL import Image

from gql_media.adapters.image_ops.model import (
    ANIMATED_FORMATS,
    DEFAULT_QUALITY,
    OUTPUT_FORMATS,
    Output,
)
from gql_media.adapters.image_ops.reading import has_alpha
from gql_media.errors import ErrorCode, MediaError


def output_format(output: Output, source_format: str, animated: bool) -> str:
    """The format a variant is written in: the one asked for, else the source's where it
    can be written (an animation's where it stays animated), else PNG or WEBP."""
    if output.format is not None:
        return output.format
    if animated:
        return source_format if source_format in ANIMATED_FORMATS else "WEBP"
    return source_format if source_format in OUTPUT_FORMATS else "PNG"


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for formats without alpha: transparent areas become white."""
    if not has_alpha(image):
        return image.convert("RGB") if image.mode not in ("RGB", "L") else image
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def save_options(fmt: str, output: Output, source: Image.Image) -> dict[str, object]:
    """Pillow's save options for ``fmt``: quality, progressive or optimised writing, the
    colour profile, and the EXIF kept (upright) or dropped."""
    options: dict[str, object] = {}
    if fmt in DEFAULT_QUALITY:
        options["quality"] = output.quality or DEFAULT_QUALITY[fmt]
    if fmt == "JPEG":
        options.update(optimize=True, progressive=output.progressive)
    elif fmt == "PNG":
        options["optimize"] = output.quality is not None and output.quality < 50
    elif fmt == "WEBP":
        options["method"] = 4
    if "icc_profile" in source.info:
        options["icc_profile"] = source.info["icc_profile"]
    if output.strip_metadata:
        if fmt == "JPEG":
            options["comment"] = b""  # Pillow copies the source's comment otherwise
    else:
        exif = source.getexif()
        exif[0x0112] = 1  # the pixels are upright now
        options["exif"] = exif.tobytes()
    return options


def encode(image: Image.Image, output: Output, fmt: str, source: Image.Image) -> bytes:
    """``image`` encoded as ``fmt`` with the variant's output options."""
    if fmt == "JPEG":
        image = _flatten(image)
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if has_alpha(image) else "RGB")
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt, **save_options(fmt, output, source))
    except (OSError, ValueError) as exc:
        raise MediaError(ErrorCode.PROCESSING_FAILED, f"could not encode {fmt}: {exc}") from exc
    return buffer.getvalue()
