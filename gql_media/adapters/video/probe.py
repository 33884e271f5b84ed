"""What a video or audio file is (``probe_media``), and whether it decodes without damage
(``check_media``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import av.container
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from gql_media.adapters.video.decoding import (
    DEFAULT_LIMITS,
    Budget,
    Limits,
    audio_stream,
    bounded,
    check_declared,
    demuxed,
    frame_rotation,
    make_strict,
    media_duration,
    opened,
    video_stream,
)
from gql_media.errors import ErrorCode, MediaError

# demuxer name → (short container name, content type with video, content type audio only)
_CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": ("mp4", "video/mp4", "audio/mp4"),
    "matroska,webm": ("matroska", "video/x-matroska", "audio/x-matroska"),
    "mp3": ("mp3", None, "audio/mpeg"),
    "ogg": ("ogg", "video/ogg", "audio/ogg"),
    "wav": ("wav", None, "audio/wav"),
    "flac": ("flac", None, "audio/flac"),
    "aac": ("aac", None, "audio/aac"),
}


@dataclass(frozen=True, slots=True)
class MediaInfo:
    kind: Literal["video", "audio"]
    content_type: str
    container: str
    duration: float | None
    width: int | None  # as displayed, rotation applied
    height: int | None
    fps: float | None
    video_codec: str | None
    audio_codec: str | None
    bitrate: int | None
    rotation: int  # clockwise degrees a player turns the picture
    sample_rate: int | None
    channels: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "container": self.container,
            "duration": self.duration,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "videoCodec": self.video_codec,
            "audioCodec": self.audio_codec,
            "bitrate": self.bitrate,
            "rotation": self.rotation,
            "sampleRate": self.sample_rate,
            "channels": self.channels,
        }


def _first_frame(
    container: av.container.InputContainer, stream: VideoStream, limits: Limits
) -> VideoFrame:
    make_strict(stream)
    for frame in bounded(container.decode(stream), limits):
        return frame
    raise MediaError(ErrorCode.MEDIA_CORRUPT, "the video has no decodable frame")


def probe_media(path: Path, limits: Limits = DEFAULT_LIMITS) -> MediaInfo:
    """What a video or audio file is; decodes its first video frame (``check_media``
    decodes more)."""
    with opened(path) as container:
        name, video_type, audio_type = _container(container, path)
        vstream, astream = video_stream(container), audio_stream(container)
        if vstream is None and astream is None:
            raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file has no video or audio")
        check_declared(container, vstream, astream, limits)
        width = height = rotation = 0
        fps: float | None = None
        if vstream is not None:
            width, height, rotation = _picture(container, vstream, limits)
            rate = vstream.average_rate or vstream.guessed_rate
            fps = round(float(rate), 3) if rate else None
        kind: Literal["video", "audio"] = "video" if vstream is not None else "audio"
        content_type = video_type if kind == "video" else audio_type
        if content_type is None:
            raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"video in {name} is not supported")
        return MediaInfo(
            kind=kind,
            content_type=content_type,
            container=name,
            duration=media_duration(container, vstream or astream),
            width=width or None,
            height=height or None,
            fps=fps,
            video_codec=vstream.codec_context.codec.canonical_name if vstream is not None else None,
            audio_codec=astream.codec_context.codec.canonical_name if astream is not None else None,
            bitrate=container.bit_rate or None,
            rotation=rotation,
            sample_rate=astream.codec_context.sample_rate if astream is not None else None,
            channels=astream.codec_context.channels if astream is not None else None,
        )


def _container(container: av.container.InputContainer, path: Path) -> tuple[str, str | None, str]:
    """(short name, content type with video or None, content type audio only) of an
    accepted container; UNSUPPORTED_MEDIA_TYPE for any other."""
    known = _CONTAINERS.get(container.format.name)
    if known is None:
        raise MediaError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"{container.format.name} is not supported"
        )
    name, video_type, audio_type = known
    if name == "mp4" and _is_quicktime(path):
        return "mov", "video/quicktime", audio_type
    if name == "matroska" and _is_webm(path):
        return "webm", "video/webm", "audio/webm"
    return name, video_type, audio_type


def _picture(
    container: av.container.InputContainer, stream: VideoStream, limits: Limits
) -> tuple[int, int, int]:
    """(width, height, rotation) of the video as displayed, from its first frame."""
    frame = _first_frame(container, stream, limits)
    rotation = frame_rotation(frame)
    width, height = frame.width, frame.height
    if rotation in (90, 270):
        width, height = height, width
    return width, height, rotation


def check_media(path: Path, limits: Limits, budget: Budget) -> None:
    """Decode the video and audio of ``path`` from the start until ``budget`` is spent or
    the file ends; MediaError MEDIA_CORRUPT at the first damage FFmpeg reports. The bounds
    of ``limits`` hold as in every decode.

    What FFmpeg cannot see stays unseen: PCM audio (WAV) has no redundancy, so any bytes
    are samples, and demuxers that resynchronise (Ogg pages failing their CRC, MPEG audio
    between frame headers) drop what they skip without an error."""
    with opened(path) as container:
        vstream, astream = video_stream(container), audio_stream(container)
        check_declared(container, vstream, astream, limits)
        streams = [s for s in (vstream, astream) if s is not None]
        for stream in streams:
            make_strict(stream)
        pixels = 0
        for frame in bounded(demuxed(container, streams, until=budget.seconds), limits):
            if isinstance(frame, VideoFrame):
                pixels += frame.width * frame.height
                if pixels > budget.pixels:
                    return


def _is_quicktime(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(12)[8:12] == b"qt  "


def _is_webm(path: Path) -> bool:
    with path.open("rb") as handle:
        return b"webm" in handle.read(64)
