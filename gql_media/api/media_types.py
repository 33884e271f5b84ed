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
from gql_media.services import operation_fields as ops


def _described(param: ops.Param, values: type[enum.Enum] | None = None) -> Any:
    """A field with the description and default that ``operation_fields`` states."""
    if param.required:
        return strawberry.field(description=param.description)
    default = param.default
    if values is not None and default is not None:
        default = values(default)
    return strawberry.field(default=default, description=param.description)


def _value(param: ops.Param, value: str) -> Any:
    return strawberry.enum_value(value, description=param.choice_description(value))


_FIT = ops.RESIZE["fit"]
_QUALITY = ops.TRANSCODE["quality"]
_CODEC = ops.EXTRACT_AUDIO["codec"]


@strawberry.enum(description="How a resize fits the box.")
class FitMode(enum.Enum):
    CONTAIN = _value(_FIT, "contain")
    COVER = _value(_FIT, "cover")
    FILL = _value(_FIT, "fill")
    INSIDE = _value(_FIT, "inside")


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


@strawberry.enum(description="Quality of a transcode.")
class VideoQuality(enum.Enum):
    LOW = _value(_QUALITY, "low")
    MEDIUM = _value(_QUALITY, "medium")
    HIGH = _value(_QUALITY, "high")


@strawberry.enum(description="Codec of extracted audio.")
class AudioCodec(enum.Enum):
    AAC = _value(_CODEC, "aac")
    MP3 = _value(_CODEC, "mp3")
    OPUS = _value(_CODEC, "opus")


@strawberry.input(description=ops.RESIZE.description)
class ResizeInput:
    width: int | None = _described(ops.RESIZE["width"])
    height: int | None = _described(ops.RESIZE["height"])
    fit: FitMode = _described(_FIT, FitMode)
    upscale: bool = _described(ops.RESIZE["upscale"])


@strawberry.input(description=ops.THUMBNAIL.description)
class ThumbnailInput:
    size: int = _described(ops.THUMBNAIL["size"])


@strawberry.input(description=ops.CROP.description)
class CropInput:
    left: int = _described(ops.CROP["left"])
    top: int = _described(ops.CROP["top"])
    width: int = _described(ops.CROP["width"])
    height: int = _described(ops.CROP["height"])


@strawberry.input(description=ops.ROTATE.description)
class RotateInput:
    degrees: float = _described(ops.ROTATE["degrees"])
    expand: bool = _described(ops.ROTATE["expand"])
    background: str | None = _described(ops.ROTATE["background"])


_TEXT = ops.TEXT_WATERMARK


@strawberry.input(description=_TEXT.description)
class TextWatermarkInput:
    text: str = _described(_TEXT["text"])
    position: Position = _described(_TEXT["position"], Position)
    margin: int = _described(_TEXT["margin"])
    opacity: float = _described(_TEXT["opacity"])
    scale: float = _described(_TEXT["scale"])
    color: str = _described(_TEXT["color"])


_MARK = ops.IMAGE_WATERMARK


@strawberry.input(description=_MARK.description)
class ImageWatermarkInput:
    media_id: strawberry.ID = _described(_MARK["mediaId"])
    position: Position = _described(_MARK["position"], Position)
    margin: int = _described(_MARK["margin"])
    opacity: float = _described(_MARK["opacity"])
    scale: float = _described(_MARK["scale"])


@strawberry.input(description="Exactly one operation.")
class ImageOperationInput:
    resize: ResizeInput | None = strawberry.field(default=None, description=ops.RESIZE.description)
    thumbnail: ThumbnailInput | None = strawberry.field(
        default=None, description=ops.THUMBNAIL.description
    )
    crop: CropInput | None = strawberry.field(default=None, description=ops.CROP.description)
    rotate: RotateInput | None = strawberry.field(default=None, description=ops.ROTATE.description)
    auto_orient: bool | None = strawberry.field(
        default=None, description=ops.AUTO_ORIENT.description
    )
    text_watermark: TextWatermarkInput | None = strawberry.field(
        default=None, description=_TEXT.description
    )
    image_watermark: ImageWatermarkInput | None = strawberry.field(
        default=None, description=_MARK.description
    )


_VARIANT = ops.VARIANT


@strawberry.input(description=_VARIANT.description)
class ImageVariantInput:
    name: str = _described(_VARIANT["name"])
    operations: list[ImageOperationInput] = strawberry.field(default_factory=list)
    format: ImageFormat | None = _described(_VARIANT["format"])
    quality: int | None = _described(_VARIANT["quality"])
    progressive: bool = _described(_VARIANT["progressive"])
    strip_metadata: bool = _described(_VARIANT["stripMetadata"])


@strawberry.input
class ProcessImageInput:
    media_id: strawberry.ID = strawberry.field(description=f"An uploaded image. {ops.ANIMATION}")
    variants: list[ImageVariantInput]
    idempotency_key: str | None = None
    webhook_url: str | None = strawberry.field(
        default=None, description="POST the job here, signed, when it ends."
    )


_FRAME = ops.VIDEO_THUMBNAIL


@strawberry.input(description=_FRAME.description)
class VideoThumbnailInput:
    at: float | None = _described(_FRAME["at"])
    fraction: float | None = _described(_FRAME["fraction"])
    max_size: int | None = _described(_FRAME["maxSize"])
    format: ImageFormat = _described(_FRAME["format"], ImageFormat)


@strawberry.input(description=ops.TRANSCODE.description)
class TranscodeInput:
    target_height: int | None = _described(ops.TRANSCODE["targetHeight"])
    quality: VideoQuality = _described(_QUALITY, VideoQuality)


@strawberry.input(description=ops.EXTRACT_AUDIO.description)
class ExtractAudioInput:
    codec: AudioCodec = _described(_CODEC, AudioCodec)
    bitrate: int | None = _described(ops.EXTRACT_AUDIO["bitrate"])


@strawberry.input(description="Exactly one operation, with an optional output name.")
class VideoOperationInput:
    name: str | None = _described(ops.OUTPUT_NAME)
    video_thumbnail: VideoThumbnailInput | None = strawberry.field(
        default=None, description=_FRAME.description
    )
    video_metadata: bool | None = strawberry.field(
        default=None, description=ops.VIDEO_METADATA.description
    )
    transcode: TranscodeInput | None = strawberry.field(
        default=None, description=ops.TRANSCODE.description
    )
    extract_audio: ExtractAudioInput | None = strawberry.field(
        default=None, description=ops.EXTRACT_AUDIO.description
    )


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
