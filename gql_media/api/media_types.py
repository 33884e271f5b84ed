"""GraphQL inputs of uploads and processing jobs, and their translation to plain JSON.

Each list entry of operations names exactly one operation (the services check this and
report the entry otherwise); the rest of the validation happens in the services too, so a
request gets every problem back at once as userErrors.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import strawberry

from gql_media.api.types import MediaAsset, UserError


@strawberry.enum(description="How a resize fits the box.")
class FitMode(enum.Enum):
    CONTAIN = "contain"
    COVER = "cover"
    FILL = "fill"
    INSIDE = "inside"


@strawberry.enum(description="Where a watermark goes.")
class Position(enum.Enum):
    TOP_LEFT = "top-left"
    TOP = "top"
    TOP_RIGHT = "top-right"
    LEFT = "left"
    CENTER = "center"
    RIGHT = "right"
    BOTTOM_LEFT = "bottom-left"
    BOTTOM = "bottom"
    BOTTOM_RIGHT = "bottom-right"


@strawberry.enum(description="Encoding of processed images.")
class ImageFormat(enum.Enum):
    JPEG = "JPEG"
    PNG = "PNG"
    WEBP = "WEBP"
    AVIF = "AVIF"


@strawberry.enum(description="Quality of a transcode: CRF 28, 23 or 18.")
class VideoQuality(enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@strawberry.enum(description="Codec of extracted audio.")
class AudioCodec(enum.Enum):
    AAC = "aac"
    MP3 = "mp3"
    OPUS = "opus"


@strawberry.input(description="Scale into a box; one of width and height may be omitted.")
class ResizeInput:
    width: int | None = None
    height: int | None = None
    fit: FitMode = FitMode.CONTAIN
    upscale: bool = strawberry.field(default=False, description="Allow making it larger.")


@strawberry.input(description="Shrink so the longest edge is at most `size`.")
class ThumbnailInput:
    size: int


@strawberry.input
class CropInput:
    left: int = 0
    top: int = 0
    width: int
    height: int


@strawberry.input
class RotateInput:
    degrees: float = strawberry.field(description="Counter-clockwise.")
    expand: bool = True
    background: str | None = None


@strawberry.input
class TextWatermarkInput:
    text: str
    position: Position = Position.BOTTOM_RIGHT
    margin: int = 16
    opacity: float = 0.5
    scale: float = strawberry.field(default=0.05, description="Text height / image height.")
    color: str = "#ffffff"


@strawberry.input
class ImageWatermarkInput:
    media_id: strawberry.ID = strawberry.field(description="An uploaded image.")
    position: Position = Position.BOTTOM_RIGHT
    margin: int = 16
    opacity: float = 0.5
    scale: float = strawberry.field(default=0.2, description="Mark width / image width.")


@strawberry.input(description="Exactly one operation.")
class ImageOperationInput:
    resize: ResizeInput | None = None
    thumbnail: ThumbnailInput | None = None
    crop: CropInput | None = None
    rotate: RotateInput | None = None
    auto_orient: bool | None = strawberry.field(
        default=None, description="Apply EXIF orientation (always done first anyway)."
    )
    text_watermark: TextWatermarkInput | None = None
    image_watermark: ImageWatermarkInput | None = None


@strawberry.input(description="One named output made from the source by its operations.")
class ImageVariantInput:
    name: str
    operations: list[ImageOperationInput] = strawberry.field(default_factory=list)
    format: ImageFormat | None = strawberry.field(
        default=None, description="Keep the source's format when omitted."
    )
    quality: int | None = strawberry.field(default=None, description="1 to 100.")
    progressive: bool = False
    strip_metadata: bool = True


@strawberry.input
class ProcessImageInput:
    media_id: strawberry.ID
    variants: list[ImageVariantInput]
    idempotency_key: str | None = None
    webhook_url: str | None = strawberry.field(
        default=None, description="POST the job here, signed, when it ends."
    )


@strawberry.input(description="A frame as an image, at `at` seconds or `fraction` of the way.")
class VideoThumbnailInput:
    at: float | None = None
    fraction: float | None = None
    max_size: int | None = None
    format: ImageFormat = ImageFormat.JPEG


@strawberry.input(description="H.264/AAC MP4, never larger than the source.")
class TranscodeInput:
    target_height: int | None = None
    quality: VideoQuality = VideoQuality.MEDIUM


@strawberry.input
class ExtractAudioInput:
    codec: AudioCodec = AudioCodec.AAC
    bitrate: int | None = None


@strawberry.input(description="Exactly one operation, with an optional output name.")
class VideoOperationInput:
    name: str | None = None
    video_thumbnail: VideoThumbnailInput | None = None
    video_metadata: bool | None = strawberry.field(
        default=None, description="Put duration, codecs, size, fps, bitrate in Job.result."
    )
    transcode: TranscodeInput | None = None
    extract_audio: ExtractAudioInput | None = None


@strawberry.input
class ProcessVideoInput:
    media_id: strawberry.ID
    operations: list[VideoOperationInput]
    idempotency_key: str | None = None
    webhook_url: str | None = strawberry.field(
        default=None, description="POST the job here, signed, when it ends."
    )


@strawberry.type
class UploadMediaPayload:
    media: MediaAsset | None
    user_errors: list[UserError]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_json(value: Any) -> Any:
    """An input object as plain JSON with the GraphQL field names; omitted fields dropped."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            _camel(f.name): to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    return value
