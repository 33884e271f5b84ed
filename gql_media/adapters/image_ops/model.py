"""What an image pipeline takes and gives: its operations, the encoding of its output,
and what is known of an image; the formats read and written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

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
ImageFormat = Literal["JPEG", "PNG", "WEBP", "AVIF"]  # the formats written
OUTPUT_FORMATS: tuple[str, ...] = get_args(ImageFormat)
ANIMATED_FORMATS = ("WEBP", "PNG")  # output formats written with every frame
DEFAULT_QUALITY = {"JPEG": 85, "WEBP": 80, "AVIF": 60}
MAX_FRAMES = 1000


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
    """The content type of an image format; application/octet-stream for one unknown."""
    return CONTENT_TYPES.get(format.upper(), "application/octet-stream")
