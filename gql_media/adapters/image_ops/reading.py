"""Opening and decoding image files within the bounds on pixels and frames; damage is
MEDIA_CORRUPT, and the first decode of a frame is the one that reports it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, ImageSequence

from gql_media.adapters import gif
from gql_media.adapters.image_ops.model import (
    CONTENT_TYPES,
    MAX_FRAMES,
    ImageInfo,
    content_type_for,
)
from gql_media.errors import ErrorCode, MediaError
from gql_media.settings import DEFAULT_MAX_ANIMATION_PIXELS

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
SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the picture a quarter


def _looks_like_image(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _SIGNATURES)


def open_image(path: Path, max_pixels: int) -> Image.Image:
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


def load_frame(image: Image.Image) -> None:
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


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8), 1 when there is none or it cannot be read."""
    if image.format == "PNG":
        # a PNG's EXIF may follow its pixels, so Pillow decodes the picture to read it: decode
        # here, where damage is reported, not inside the tolerant read below
        load_frame(image)
    try:
        value = image.getexif().get(0x0112, 1)
    except MemoryError:
        raise
    except Exception:
        # a malformed EXIF block is not damage to the pixels: the picture is shown as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def frame_count(image: Image.Image, path: Path, max_pixels: int, max_animation_pixels: int) -> int:
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
    (and, for a PNG, the pixels: see ``exif_orientation``)."""
    with open_image(path, max_pixels) as image:
        fmt = str(image.format)
        frames = frame_count(image, path, max_pixels, max_animation_pixels)
        width, height = image.size
        if decode:
            _check_decodes(image, frames)
        orientation = exif_orientation(image)
    if orientation in SWAPS_AXES:
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
        load_frame(image)
    if frames > 1:
        try:
            image.seek(0)
        except MemoryError:
            raise
        except Exception as exc:
            raise MediaError(ErrorCode.MEDIA_CORRUPT, "the image file is damaged") from exc


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits: Pillow's own conversion clips it at 255 instead."""
    if not image.mode.startswith("I;16"):
        return image
    return image.convert("I").point(lambda value: value / 257).convert("L")


def animation_frames(
    path: Path, max_pixels: int, max_animation_pixels: int
) -> Iterator[tuple[Image.Image, int]]:
    """Every frame of an animation, upright and as RGBA, with its duration in ms."""
    with open_image(path, max_pixels) as image:
        frame_count(image, path, max_pixels, max_animation_pixels)
        try:
            for frame in ImageSequence.Iterator(image):
                duration = int(frame.info.get("duration", 100) or 100)
                yield ImageOps.exif_transpose(frame.convert("RGBA")), duration
        except (MediaError, MemoryError):
            raise  # MemoryError: over the memory ceiling, not damaged (adapters.isolation)
        except Exception as exc:
            raise MediaError(ErrorCode.MEDIA_CORRUPT, "the image file is damaged") from exc


def has_alpha(image: Image.Image) -> bool:
    """Whether ``image`` has transparency."""
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
