"""Image processing with Pillow: identifying uploads and running variant pipelines.

CPU-bound and blocking: call from a thread. Every function raises ``MediaError`` with a
stable code for media it cannot handle; nothing here touches the network or storage.

A pipeline starts from the upright picture (EXIF orientation applied), runs its operations
in order and encodes the result. Large JPEGs are decoded through Pillow's draft mode at the
smallest scale that still covers what the variants need, and resizes use ``reducing_gap``
so a 24-megapixel source never decodes at full size for a thumbnail.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, ImageColor, ImageDraw, ImageFont, ImageOps, ImageSequence

from gql_media.adapters import gif
from gql_media.errors import ErrorCode, MediaError
from gql_media.settings import DEFAULT_MAX_ANIMATION_PIXELS

Fit = Literal["contain", "cover", "fill", "inside"]
Position = Literal[
    "top-left",
    "top",
    "top-right",
    "left",
    "center",
    "right",
    "bottom-left",
    "bottom",
    "bottom-right",
]

CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}
OUTPUT_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF")
_ANIMATED_FORMATS = ("WEBP", "PNG")  # output formats written with every frame
DEFAULT_QUALITY = {"JPEG": 85, "WEBP": 80, "AVIF": 60}
MAX_FRAMES = 1000
# (offset, magic): the signatures of the formats accepted as images
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (8, b"WEBP"),
    (4, b"ftypavif"),
    (4, b"ftypavis"),
    (0, b"II*\x00"),
    (0, b"MM\x00*"),
    (0, b"BM"),
)
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the picture a quarter


@dataclass(frozen=True, slots=True)
class Resize:
    width: int | None = None
    height: int | None = None
    fit: Fit = "contain"
    upscale: bool = False


@dataclass(frozen=True, slots=True)
class Thumbnail:
    size: int = 256


@dataclass(frozen=True, slots=True)
class Crop:
    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Rotate:
    degrees: float  # clockwise
    expand: bool = True
    background: str = "#00000000"


@dataclass(frozen=True, slots=True)
class AutoOrient:
    pass


@dataclass(frozen=True, slots=True)
class TextWatermark:
    text: str
    position: Position = "bottom-right"
    margin: int = 16
    opacity: float = 0.5
    scale: float = 0.05  # text height as a fraction of the picture's height
    color: str = "#ffffff"


@dataclass(frozen=True, slots=True)
class ImageWatermark:
    source: Path
    position: Position = "bottom-right"
    margin: int = 16
    opacity: float = 0.5
    scale: float = 0.2  # watermark width as a fraction of the picture's width


Operation = Resize | Thumbnail | Crop | Rotate | AutoOrient | TextWatermark | ImageWatermark


@dataclass(frozen=True, slots=True)
class Output:
    format: str | None = None  # None: the source's format where it can be written, else PNG
    quality: int | None = None
    progressive: bool = False
    strip_metadata: bool = True


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    operations: tuple[Operation, ...] = ()
    output: Output = field(default_factory=Output)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str
    content_type: str
    width: int  # as displayed, EXIF orientation applied
    height: int
    frames: int
    orientation: int


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    name: str
    content_type: str
    width: int
    height: int
    data: bytes


def content_type_for(format: str) -> str:
    return CONTENT_TYPES.get(format.upper(), "application/octet-stream")


def _looks_like_image(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _SIGNATURES)


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open (not decode) an image file, refusing unknown kinds and oversized pictures."""
    if not _looks_like_image(path):
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file is not a supported image")
    try:
        image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own limit; its warning is an exception where warnings are errors
        raise MediaError(ErrorCode.TOO_MANY_PIXELS, f"the picture is too large: {exc}") from exc
    except MemoryError:
        raise  # over the memory ceiling, not damaged: see adapters.isolation
    except Exception as exc:
        raise MediaError(ErrorCode.MEDIA_CORRUPT, "the image file is damaged") from exc
    if image.format not in CONTENT_TYPES:
        image.close()
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"{image.format} is not supported")
    if image.width * image.height > max_pixels:
        image.close()
        raise MediaError(
            ErrorCode.TOO_MANY_PIXELS,
            f"{image.width}x{image.height} exceeds the limit of {max_pixels} pixels",
        )
    return image


def _load(image: Image.Image) -> None:
    """Decode the current frame of ``image``; MEDIA_CORRUPT when its data is damaged.

    The first decode of a frame must be this one: Pillow forgets a decode that failed, and a
    second ``load()`` returns the blank canvas it had allocated, as if nothing were wrong.
    """
    try:
        image.load()
    except MemoryError:
        raise  # over the memory ceiling, not damaged: see adapters.isolation
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(ErrorCode.TOO_MANY_PIXELS, f"the picture is too large: {exc}") from exc
    except Exception as exc:
        raise MediaError(ErrorCode.MEDIA_CORRUPT, f"the image file is damaged: {exc}") from exc


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8), 1 when there is none or it cannot be read."""
    if image.format == "PNG":
        # a PNG's EXIF may follow its pixels, so Pillow decodes the picture to read it: decode
        # here, where damage is reported, not inside the tolerant read below
        _load(image)
    try:
        value = image.getexif().get(0x0112, 1)
    except MemoryError:
        raise
    except Exception:
        # a malformed EXIF block is not damage to the pixels: the picture is shown as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _frame_count(image: Image.Image, path: Path, max_pixels: int, max_animation_pixels: int) -> int:
    """The frames of ``image``, refusing an animation whose frames add up to too many pixels.

    Every frame of an animation is decoded at the size of its canvas, whatever part of it
    the frame changes: the work is the canvas times the frames. Counting reads the frame
    headers only; a GIF's are walked no further than the bound allows. The pages of a TIFF
    each have a size of their own: each is bounded, and their sum.
    """
    if image.format == "GIF":
        allowed = min(MAX_FRAMES, max(1, max_animation_pixels // (image.width * image.height)))
        counted = gif.count_frames(path, stop_after=allowed)
        if counted is not None and counted > allowed:
            raise MediaError(
                ErrorCode.TOO_MANY_PIXELS,
                f"more than {allowed} frames of {image.width}x{image.height}: over the limit "
                f"of {max_animation_pixels} pixels for an animation, or of {MAX_FRAMES} frames",
            )
    frames = int(getattr(image, "n_frames", 1))
    if frames > MAX_FRAMES:
        raise MediaError(ErrorCode.TOO_MANY_PIXELS, f"more than {MAX_FRAMES} frames")
    total = image.width * image.height * frames
    if image.format == "TIFF" and frames > 1:
        total = _tiff_pixels(image, frames, max_pixels)
    if frames > 1 and total > max_animation_pixels:
        raise MediaError(
            ErrorCode.TOO_MANY_PIXELS,
            f"{frames} frames of {image.width}x{image.height} are {total} pixels, over the "
            f"limit of {max_animation_pixels} for an animation",
        )
    return frames


def _tiff_pixels(image: Image.Image, pages: int, max_pixels: int) -> int:
    """The pixels of every page of a TIFF, refusing a page over ``max_pixels`` (the open
    checked the first one only). Seeking reads a page's header, not its pixels."""
    total = 0
    try:
        for page in range(pages):
            image.seek(page)
            width, height = image.size
            if width * height > max_pixels:
                raise MediaError(
                    ErrorCode.TOO_MANY_PIXELS,
                    f"page {page + 1} is {width}x{height}, over the limit of {max_pixels} pixels",
                )
            total += width * height
        image.seek(0)
    except (MediaError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(ErrorCode.TOO_MANY_PIXELS, f"a page is too large: {exc}") from exc
    except Exception as exc:
        raise MediaError(ErrorCode.MEDIA_CORRUPT, "the image file is damaged") from exc
    return total


def probe_image(
    path: Path,
    max_pixels: int,
    *,
    decode: bool = True,
    max_animation_pixels: int = DEFAULT_MAX_ANIMATION_PIXELS,
) -> ImageInfo:
    """What the image is. With ``decode``, every frame is decoded so that damage shows now
    (within the bounds on pixels and frames, checked first); a JPEG is decoded at 1/8 scale,
    which still reads every byte of its compressed data. Without, only the header is read
    (and, for a PNG, the pixels: see ``_orientation``)."""
    with _open(path, max_pixels) as image:
        fmt = str(image.format)
        frames = _frame_count(image, path, max_pixels, max_animation_pixels)
        width, height = image.size
        if decode:
            _check_decodes(image, frames)
        orientation = _orientation(image)
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return ImageInfo(fmt, content_type_for(fmt), width, height, frames, orientation)


def _check_decodes(image: Image.Image, frames: int) -> None:
    """Decode every frame of ``image`` (its frames were counted and bounded); MEDIA_CORRUPT
    at the first damaged one. Leaves ``image`` at its first frame."""
    if image.format == "JPEG":
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
    for index in range(frames):
        if index:
            try:
                image.seek(index)
            except MemoryError:
                raise
            except Exception as exc:
                raise MediaError(
                    ErrorCode.MEDIA_CORRUPT, f"frame {index + 1} of the image is damaged"
                ) from exc
        _load(image)
    if frames > 1:
        try:
            image.seek(0)
        except MemoryError:
            raise
        except Exception as exc:
            raise MediaError(ErrorCode.MEDIA_CORRUPT, "the image file is damaged") from exc


def _pixels_guard(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaError(
            ErrorCode.TOO_MANY_PIXELS,
            f"the result would be {width}x{height}, over the limit of {max_pixels} pixels",
        )


def _resize_plan(
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


def _needed_size(size: tuple[int, int], variant: Variant) -> tuple[int, int] | None:
    """The smallest upright size the variant's first resize needs, or None for full size."""
    for op in variant.operations:
        if isinstance(op, AutoOrient):
            continue
        if isinstance(op, Thumbnail):
            scale = min(1.0, op.size / max(size))
            return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))
        if isinstance(op, Resize):
            return _resize_plan(size, op)[0]
        return None
    return None


def _decode(path: Path, variants: Sequence[Variant], max_pixels: int) -> Image.Image:
    """The upright source, decoded as small as every variant allows."""
    with _open(path, max_pixels) as image:
        orientation = _orientation(image)
        upright = image.size[::-1] if orientation in _SWAPS_AXES else image.size
        if image.format == "JPEG":
            needs = [_needed_size(upright, v) for v in variants]
            if all(n is not None for n in needs):
                need_w = max(n[0] for n in needs if n is not None)
                need_h = max(n[1] for n in needs if n is not None)
                stored = (need_h, need_w) if orientation in _SWAPS_AXES else (need_w, need_h)
                image.draft(image.mode if image.mode in ("RGB", "L") else "RGB", stored)
        _load(image)
        try:
            decoded = _eight_bit(ImageOps.exif_transpose(image))
            if decoded.mode not in ("RGB", "RGBA", "L", "LA"):
                decoded = decoded.convert("RGBA" if _has_alpha(decoded) else "RGB")
        except MemoryError:
            raise  # over the memory ceiling, not damaged: see adapters.isolation
        except Exception as exc:
            raise MediaError(ErrorCode.MEDIA_CORRUPT, "the image file is damaged") from exc
    return decoded


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits: Pillow's own conversion clips it at 255 instead."""
    if not image.mode.startswith("I;16"):
        return image
    return image.convert("I").point(lambda value: value / 257).convert("L")


def _frames(
    path: Path, max_pixels: int, max_animation_pixels: int
) -> Iterator[tuple[Image.Image, int]]:
    """Every frame of an animation, upright and as RGBA, with its duration in ms."""
    with _open(path, max_pixels) as image:
        _frame_count(image, path, max_pixels, max_animation_pixels)
        try:
            for frame in ImageSequence.Iterator(image):
                duration = int(frame.info.get("duration", 100) or 100)
                yield ImageOps.exif_transpose(frame.convert("RGBA")), duration
        except (MediaError, MemoryError):
            raise  # MemoryError: over the memory ceiling, not damaged (adapters.isolation)
        except Exception as exc:
            raise MediaError(ErrorCode.MEDIA_CORRUPT, "the image file is damaged") from exc


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _resize(image: Image.Image, op: Resize, max_pixels: int) -> Image.Image:
    scaled, box = _resize_plan(image.size, op)
    _pixels_guard(*scaled, max_pixels)
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if box is None or box == image.size:
        return image
    _pixels_guard(*box, max_pixels)
    if op.fit == "cover":
        left, top = (image.width - box[0]) // 2, (image.height - box[1]) // 2
        return image.crop((left, top, left + box[0], top + box[1]))
    canvas = Image.new("RGBA", box, (0, 0, 0, 0))
    canvas.paste(image.convert("RGBA"), ((box[0] - image.width) // 2, (box[1] - image.height) // 2))
    return canvas


def _crop(image: Image.Image, op: Crop) -> Image.Image:
    right, bottom = op.left + op.width, op.top + op.height
    inside = 0 <= op.left < right <= image.width and 0 <= op.top < bottom <= image.height
    if not inside:
        raise MediaError(
            ErrorCode.PROCESSING_FAILED,
            f"the crop does not lie inside the {image.width}x{image.height} picture",
        )
    return image.crop((op.left, op.top, right, bottom))


def _colour(value: str, what: str) -> tuple[int, ...]:
    try:
        return ImageColor.getrgb(value)
    except ValueError as exc:
        raise MediaError(ErrorCode.PROCESSING_FAILED, f"{what}: unknown colour {value!r}") from exc


def _rotate(image: Image.Image, op: Rotate, max_pixels: int) -> Image.Image:
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
    background = _colour(op.background, "rotate.background")
    if len(background) == 4 and background[3] < 255 or _has_alpha(image):
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if op.expand:
        radians = math.radians(degrees)
        cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
        _pixels_guard(
            math.ceil(image.width * cos + image.height * sin),
            math.ceil(image.width * sin + image.height * cos),
            max_pixels,
        )
    fill = background if image.mode == "RGBA" else background[:3]
    if image.mode == "L":
        fill = (background[0],)
    return image.rotate(-degrees, Image.Resampling.BICUBIC, expand=op.expand, fillcolor=tuple(fill))


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
    keep_alpha = _has_alpha(image)
    merged = Image.alpha_composite(image.convert("RGBA"), layer)
    return merged if keep_alpha else merged.convert("RGB")


def _text_watermark(image: Image.Image, op: TextWatermark) -> Image.Image:
    size = max(8, round(image.height * op.scale))
    font = ImageFont.load_default(size=size)
    colour = _colour(op.color, "textWatermark.color")[:3]
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), op.text, font=font)
    box = (math.ceil(right - left), math.ceil(bottom - top))
    x, y = _place(image.size, box, op.position, op.margin)
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).text(
        (x - left, y - top), op.text, font=font, fill=(*colour, round(255 * op.opacity))
    )
    return _overlay(image, layer)


def _image_watermark(image: Image.Image, op: ImageWatermark, max_pixels: int) -> Image.Image:
    with _open(op.source, max_pixels) as opened:
        _load(opened)
        try:
            mark = _eight_bit(ImageOps.exif_transpose(opened)).convert("RGBA")
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


def apply(image: Image.Image, op: Operation, max_pixels: int) -> Image.Image:
    """One operation on a decoded, upright picture."""
    if isinstance(op, Resize):
        return _resize(image, op, max_pixels)
    if isinstance(op, Thumbnail):
        copy = image.copy()
        copy.thumbnail((op.size, op.size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        return copy
    if isinstance(op, Crop):
        return _crop(image, op)
    if isinstance(op, Rotate):
        return _rotate(image, op, max_pixels)
    if isinstance(op, AutoOrient):
        return ImageOps.exif_transpose(image)
    if isinstance(op, TextWatermark):
        return _text_watermark(image, op)
    return _image_watermark(image, op, max_pixels)


def _output_format(output: Output, source_format: str, animated: bool) -> str:
    if output.format is not None:
        return output.format
    if animated:
        return source_format if source_format in _ANIMATED_FORMATS else "WEBP"
    return source_format if source_format in OUTPUT_FORMATS else "PNG"


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for formats without alpha: transparent areas become white."""
    if not _has_alpha(image):
        return image.convert("RGB") if image.mode not in ("RGB", "L") else image
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _save_options(fmt: str, output: Output, source: Image.Image) -> dict[str, object]:
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
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt, **_save_options(fmt, output, source))
    except (OSError, ValueError) as exc:
        raise MediaError(ErrorCode.PROCESSING_FAILED, f"could not encode {fmt}: {exc}") from exc
    return buffer.getvalue()


def _animated(
    path: Path, variant: Variant, fmt: str, max_pixels: int, max_animation_pixels: int
) -> tuple[bytes, tuple[int, int]]:
    frames: list[Image.Image] = []
    durations: list[int] = []
    first: Image.Image | None = None
    for frame, duration in _frames(path, max_pixels, max_animation_pixels):
        first = first or frame
        for op in variant.operations:
            frame = apply(frame, op, max_pixels)
        frames.append(frame.convert("RGBA"))
        durations.append(duration)
    if not frames or first is None:
        raise MediaError(ErrorCode.MEDIA_CORRUPT, "the animation has no frames")
    buffer = io.BytesIO()
    options = _save_options(fmt, variant.output, first)
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
    decoded = _decode(source, variants, max_pixels)
    report(1 / (len(variants) + 1))
    results: list[ProcessedImage] = []
    for index, variant in enumerate(variants):
        fmt = _output_format(variant.output, info.format, animated)
        if animated and fmt in _ANIMATED_FORMATS:
            data, size = _animated(source, variant, fmt, max_pixels, max_animation_pixels)
        else:
            image = decoded
            for op in variant.operations:
                image = apply(image, op, max_pixels)
            data, size = encode(image, variant.output, fmt, decoded), image.size
        results.append(ProcessedImage(variant.name, content_type_for(fmt), *size, data))
        report((index + 2) / (len(variants) + 1))
    return results
