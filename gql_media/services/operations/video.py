"""The operations of processVideo, each defined once, and the entries that name their
outputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from gql_media.adapters.video import AUDIO_BITRATE, AUDIO_OUT, CRF, AudioCodec, Quality
from gql_media.services.operations.fields import (
    NAME_RULE,
    Choices,
    Model,
    Param,
    enum_name,
    number_text,
    operation,
    param,
)
from gql_media.services.operations.image import IMAGE_FORMAT

StillFormat = Literal["JPEG", "PNG", "WEBP"]  # a video still is never AVIF
DEFAULT_FRACTION = 0.1
AUDIO_BITRATES: dict[AudioCodec, int] = {codec: out[2] for codec, out in AUDIO_OUT.items()}
VIDEO_QUALITY = Choices.of(
    "VideoQuality",
    "Quality of a transcode.",
    Quality,
    **{
        quality: f"x264 CRF {CRF[quality]}, audio at {AUDIO_BITRATE[quality]} bits per second."
        for quality in CRF
    },
)
AUDIO_CODEC = Choices.of(
    "AudioCodec",
    "Codec of extracted audio.",
    AudioCodec,
    aac="AAC in M4A.",
    mp3="MP3.",
    opus="Opus in Ogg.",
)


class VideoOperation(Model):
    """One operation of a processVideo job."""

    __slots__ = ()


@operation(
    "videoThumbnail",
    "The frame on screen at a time, as an image, upright (the video's rotation applied).",
    output="thumbnail",
)
@dataclass(frozen=True, slots=True, kw_only=True)
class VideoThumbnail(VideoOperation):
    at: float | None = param(
        "Time of the frame",
        "seconds",
        0,
        86_400,
        note="Past the end: the last frame. Give at or fraction, not both.",
        default=None,
    )
    fraction: float | None = param(
        "Time of the frame as a fraction of the duration",
        "",
        0,
        1,
        default_note=f"{number_text(DEFAULT_FRACTION)} when at is not given either",
        default=None,
    )
    max_size: int | None = param(
        "Longest edge of the image",
        "pixels",
        16,
        8192,
        default_note="the frame's own size",
        default=None,
    )
    format: StillFormat = param("Encoding of the image", choices=IMAGE_FORMAT, default="JPEG")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.at is not None and self.fraction is not None:
            yield "", "give at or fraction, not both"

    def options(self) -> dict[str, Any]:
        """The keywords of ``adapters.video.video_thumbnail``, defaults applied."""
        fraction = DEFAULT_FRACTION if self.at is None and self.fraction is None else self.fraction
        return {
            "at": self.at,
            "fraction": fraction,
            "max_size": self.max_size,
            "format": self.format,
        }


@operation(
    "videoMetadata",
    "Put the kind, container, duration, width, height, fps, codecs, bitrate, rotation, "
    "sample rate and channels in Job.result; makes no output.",
)
@dataclass(frozen=True, slots=True, kw_only=True)
class VideoMetadata(VideoOperation):
    pass


@operation(
    "transcode",
    "Re-encode as H.264/AAC MP4 (fast start), upright, never larger than the source.",
    output="video",
)
@dataclass(frozen=True, slots=True, kw_only=True)
class Transcode(VideoOperation):
    target_height: int | None = param(
        "Greatest height of the video",
        "pixels",
        16,
        4320,
        note="The width follows the aspect ratio.",
        default_note="the source's height",
        default=None,
    )
    quality: Quality = param("Quality of the encoding", choices=VIDEO_QUALITY, default="medium")

    def options(self) -> dict[str, Any]:
        """The keywords of ``adapters.video.transcode``."""
        return {"target_height": self.target_height, "quality": self.quality}


@operation(
    "extractAudio",
    "The first audio track, re-encoded; UNSUPPORTED_MEDIA_TYPE if there is none.",
    output="audio",
)
@dataclass(frozen=True, slots=True, kw_only=True)
class ExtractAudio(VideoOperation):
    codec: AudioCodec = param("Codec of the audio", choices=AUDIO_CODEC, default="aac")
    bitrate: int | None = param(
        "Bitrate of the audio",
        "bits per second",
        8_000,
        512_000,
        default_note=", ".join(
            f"{rate} for {enum_name(codec)}" for codec, rate in AUDIO_BITRATES.items()
        ),
        default=None,
    )

    def options(self) -> dict[str, Any]:
        """The keywords of ``adapters.video.extract_audio``, the codec's bitrate applied."""
        return {"codec": self.codec, "bitrate": self.bitrate or AUDIO_BITRATES[self.codec]}


VIDEO_MODELS: tuple[type[VideoOperation], ...] = (
    VideoThumbnail,
    VideoMetadata,
    Transcode,
    ExtractAudio,
)
VIDEO_OPERATIONS = tuple(model.spec for model in VIDEO_MODELS)
OUTPUT_NAME = Param(
    f"Name of the operation's output: {NAME_RULE}",
    default_note=", ".join(
        f"`{op.output}` for {op.name}" for op in VIDEO_OPERATIONS if op.output is not None
    ),
    name="name",
    python_name="name",
)


@dataclass(frozen=True, slots=True)
class VideoStep:
    """An entry of processVideo's operations: the operation, and the name of its output as
    given (None: the operation's own; an operation that makes no output has none)."""

    operation: VideoOperation
    name: str | None = None

    @property
    def output(self) -> str | None:
        """The name of the output the step makes, or None when it makes none."""
        default = self.operation.spec.output
        return None if default is None else self.name or default
