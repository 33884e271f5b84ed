"""Decoding that is bounded and strict, for every function of the package.

Every function is bounded by ``Limits``: a file whose header declares frames or a duration
over them is refused before anything is decoded, and the decoder refuses any frame over the
pixel limit, so a stream that declares a small size and then carries huge frames is refused
at the first of them.

Damage is never passed on silently. FFmpeg's decoders hide it by default: they skip what
they cannot read and paint over broken pictures (error concealment), so a damaged file
would turn into a glitched or shortened output. Here every decoder checks the CRCs its
format carries and stops at the first error (``err_detect``), video decoders run with the
error resilience that marks a concealed picture as corrupt (single or frame threads, never
slice threads alone, which turn it off), and any error from demuxing or decoding, or a frame
marked corrupt, is MEDIA_CORRUPT. ``check_media`` decodes an upload this way from its start.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import av
import av.container
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from gql_media.errors import ErrorCode, MediaError
from gql_media.settings import DEFAULT_MAX_MEDIA_SECONDS, DEFAULT_MAX_VIDEO_PIXELS


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of the work on one file: the pixels of one video frame and the duration."""

    pixels: int = DEFAULT_MAX_VIDEO_PIXELS
    seconds: float = DEFAULT_MAX_MEDIA_SECONDS


DEFAULT_LIMITS = Limits()  # the settings' defaults


@dataclass(frozen=True, slots=True)
class Budget:
    """How much of a file ``check_media`` decodes: seconds of media from the start, and
    pixels of decoded video frames, whichever runs out first."""

    seconds: float
    pixels: int


# the decoder options that make damage an error instead of something concealed
_STRICT_DECODING = {"err_detect": "crccheck+explode"}


def _sniff(path: Path) -> bool:
    """Whether the first bytes are those of a container this module accepts."""
    with path.open("rb") as handle:
        head = handle.read(12)
    return (
        head[4:8] == b"ftyp"
        or head[:4] in (b"\x1a\x45\xdf\xa3", b"OggS", b"fLaC")
        or head[:3] == b"ID3"
        or (head[:4] == b"RIFF" and head[8:12] == b"WAVE")
        or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    )


@contextmanager
def opened(path: Path) -> Iterator[av.container.InputContainer]:
    """The open input container of ``path``, closed after the block; a file that is no
    accepted media is UNSUPPORTED_MEDIA_TYPE, damage MEDIA_CORRUPT, an FFmpeg failure
    while writing PROCESSING_FAILED."""
    if not _sniff(path):
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file is not a supported media type")
    try:
        # tags that are not valid UTF-8 are dropped: they are not part of the media
        container = av.open(str(path), metadata_errors="ignore")
    except MemoryError:
        raise  # over the memory ceiling, not damaged: see adapters.isolation
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(ErrorCode.MEDIA_CORRUPT, "the media file is damaged") from exc
    if not isinstance(container, av.container.InputContainer):  # pragma: no cover
        container.close()
        raise MediaError(ErrorCode.MEDIA_CORRUPT, "the media file cannot be read")
    try:
        yield container
    except MemoryError:
        raise  # FFmpeg's ENOMEM is one too
    except av.error.InvalidDataError as exc:
        raise MediaError(ErrorCode.MEDIA_CORRUPT, f"the media file is damaged: {exc}") from exc
    except av.FFmpegError as exc:
        # decoding errors became MediaError in ``bounded``: this is the output side
        raise MediaError(ErrorCode.PROCESSING_FAILED, f"FFmpeg failed: {exc}") from exc
    finally:
        container.close()


def make_strict(stream: VideoStream | AudioStream) -> None:
    """Have the decoder of ``stream`` report damage (see the module's docstring); call before
    the first decode."""
    context = stream.codec_context
    context.options = {**context.options, **_STRICT_DECODING}
    if isinstance(stream, VideoStream):
        # with frame threads (or one thread) error resilience stays on; slice threads, PyAV's
        # default, turn it off and concealed pictures carry no mark
        stream.thread_type = "AUTO"


def video_stream(container: av.container.InputContainer) -> VideoStream | None:
    """The first video stream that is not cover art, or None."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:  # not cover art
            return stream
    return None


def audio_stream(container: av.container.InputContainer) -> AudioStream | None:
    """The first audio stream, or None."""
    return container.streams.audio[0] if container.streams.audio else None


def media_duration(container: av.container.InputContainer, stream: Any) -> float | None:
    """Seconds of the container's duration, else of ``stream``'s, or None when neither says."""
    if container.duration is not None and container.duration > 0:
        return round(container.duration / av.time_base, 3)
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base), 3)
    return None


def check_declared(
    container: av.container.InputContainer,
    vstream: VideoStream | None,
    astream: AudioStream | None,
    limits: Limits,
) -> None:
    """Refuse a file whose header declares frames or a duration over ``limits``; arm the
    video decoder to refuse larger frames than declared."""
    if vstream is not None:
        width, height = vstream.codec_context.width or 0, vstream.codec_context.height or 0
        if width * height > limits.pixels:
            raise MediaError(
                ErrorCode.TOO_MANY_PIXELS,
                f"{width}x{height} video frames exceed the limit of {limits.pixels} pixels",
            )
        # FFmpeg's decoders check every frame they allocate against max_pixels
        vstream.codec_context.options = {
            **vstream.codec_context.options,
            "max_pixels": str(limits.pixels),
        }
    duration = media_duration(container, vstream or astream)
    if duration is not None and duration > limits.seconds:
        raise MediaError(
            ErrorCode.MEDIA_TOO_LONG,
            f"{duration:g} s exceeds the limit of {limits.seconds:g} s",
        )


FrameT = TypeVar("FrameT", bound=VideoFrame | AudioFrame)


def bounded(frames: Iterable[FrameT], limits: Limits) -> Iterator[FrameT]:
    """Decoded ``frames``, refusing one larger than ``limits`` or later than their duration
    (a header may leave the duration out, or lie about it)."""
    source = iter(frames)
    while True:
        try:
            frame = next(source)
        except StopIteration:
            return
        except av.error.ValueError as exc:  # EINVAL: max_pixels refused the frame
            raise MediaError(
                ErrorCode.TOO_MANY_PIXELS,
                f"a video frame exceeds the limit of {limits.pixels} pixels",
            ) from exc
        except MemoryError:
            raise  # FFmpeg's ENOMEM too: over the memory ceiling, see adapters.isolation
        except av.FFmpegError as exc:
            # reading or decoding the source failed: whatever FFmpeg calls it (invalid data,
            # a failed CRC, EPERM from the AAC decoder...), the file is damaged
            raise MediaError(ErrorCode.MEDIA_CORRUPT, f"the media file is damaged: {exc}") from exc
        if frame.is_corrupt:
            at = f" at {frame.time:.3f} s" if frame.time is not None else ""
            raise MediaError(ErrorCode.MEDIA_CORRUPT, f"the media file is damaged{at}")
        if isinstance(frame, VideoFrame) and frame.width * frame.height > limits.pixels:
            raise MediaError(
                ErrorCode.TOO_MANY_PIXELS,
                f"a {frame.width}x{frame.height} video frame exceeds the limit of "
                f"{limits.pixels} pixels",
            )
        if frame.time is not None and frame.time > limits.seconds:
            raise MediaError(
                ErrorCode.MEDIA_TOO_LONG, f"the media runs past the limit of {limits.seconds:g} s"
            )
        yield frame


def frame_rotation(frame: VideoFrame) -> int:
    """Clockwise quarter turns (in degrees) that the display matrix asks for."""
    return round(-frame.rotation / 90) % 4 * 90


def demuxed(
    container: av.container.InputContainer, streams: list[Any], until: float | None = None
) -> Iterator[VideoFrame | AudioFrame]:
    """The frames of ``streams``, decoded in file order; with ``until``, no packet that
    starts later than that many seconds is decoded."""
    for packet in container.demux(streams):
        if until is not None and packet.pts is not None and packet.time_base is not None:
            if packet.pts * packet.time_base > until:
                return
        for frame in packet.decode():
            if isinstance(frame, VideoFrame | AudioFrame):
                yield frame


def turn_upright(image: Image.Image, rotation: int) -> Image.Image:
    """``image`` as a player shows it: turned ``rotation`` degrees clockwise (quarter turns)."""
    turns = {
        90: Image.Transpose.ROTATE_270,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_90,
    }
    return image.transpose(turns[rotation]) if rotation in turns else image


def to_image(frame: VideoFrame) -> Image.Image:
    """``frame`` as a Pillow image."""
    image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
    return image


def needs_video(container: av.container.InputContainer, limits: Limits) -> VideoStream:
    """The video stream of ``container`` within ``limits``, its decoder strict;
    UNSUPPORTED_MEDIA_TYPE when there is none."""
    stream = video_stream(container)
    if stream is None:
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file has no video track")
    check_declared(container, stream, audio_stream(container), limits)
    make_strict(stream)
    return stream
