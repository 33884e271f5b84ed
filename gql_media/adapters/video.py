"""Video and audio with PyAV (its wheels carry FFmpeg): probing, frames, transcodes, audio.

CPU-bound and blocking: call from a thread. Files are recognised by their first bytes and
then by FFmpeg's demuxer; only the containers listed in ``_CONTAINERS`` are accepted.
Failures raise ``MediaError`` with a stable code. Long operations report progress as the
decoded timestamp over the duration.

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

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, TypeVar

import av
import av.container
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from gql_media.adapters import image_ops
from gql_media.errors import ErrorCode, MediaError
from gql_media.settings import DEFAULT_MAX_MEDIA_SECONDS, DEFAULT_MAX_VIDEO_PIXELS

Progress = Callable[[float], None]
Quality = Literal["low", "medium", "high"]
AudioCodec = Literal["aac", "mp3", "opus"]

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
_CRF = {"low": 28, "medium": 23, "high": 18}
_AUDIO_BITRATE = {"low": 64_000, "medium": 128_000, "high": 192_000}
# codec name, muxer, default bitrate, sample rates the encoder takes (None: any)
_AUDIO_OUT: dict[str, tuple[str, str, int, tuple[int, ...] | None]] = {
    "aac": ("aac", "ipod", 128_000, None),
    "mp3": ("libmp3lame", "mp3", 128_000, (48_000, 44_100, 32_000, 24_000, 22_050, 16_000)),
    "opus": ("libopus", "ogg", 96_000, (48_000,)),
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of the work on one file: the pixels of one video frame and the duration."""

    pixels: int = DEFAULT_MAX_VIDEO_PIXELS
    seconds: float = DEFAULT_MAX_MEDIA_SECONDS


@dataclass(frozen=True, slots=True)
class Budget:
    """How much of a file ``check_media`` decodes: seconds of media from the start, and
    pixels of decoded video frames, whichever runs out first."""

    seconds: float
    pixels: int


# the decoder options that make damage an error instead of something concealed
_STRICT_DECODING = {"err_detect": "crccheck+explode"}


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
def _opened(path: Path) -> Iterator[av.container.InputContainer]:
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
        # decoding errors became MediaError in ``_bounded``: this is the output side
        raise MediaError(ErrorCode.PROCESSING_FAILED, f"FFmpeg failed: {exc}") from exc
    finally:
        container.close()


def _strict(stream: VideoStream | AudioStream) -> None:
    """Have the decoder of ``stream`` report damage (see the module's docstring); call before
    the first decode."""
    context = stream.codec_context
    context.options = {**context.options, **_STRICT_DECODING}
    if isinstance(stream, VideoStream):
        # with frame threads (or one thread) error resilience stays on; slice threads, PyAV's
        # default, turn it off and concealed pictures carry no mark
        stream.thread_type = "AUTO"


def _video_stream(container: av.container.InputContainer) -> VideoStream | None:
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:  # not cover art
            return stream
    return None


def _audio_stream(container: av.container.InputContainer) -> AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _duration(container: av.container.InputContainer, stream: Any) -> float | None:
    if container.duration is not None and container.duration > 0:
        return round(container.duration / av.time_base, 3)
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base), 3)
    return None


def _check_declared(
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
    duration = _duration(container, vstream or astream)
    if duration is not None and duration > limits.seconds:
        raise MediaError(
            ErrorCode.MEDIA_TOO_LONG,
            f"{duration:g} s exceeds the limit of {limits.seconds:g} s",
        )


FrameT = TypeVar("FrameT", bound=VideoFrame | AudioFrame)


def _bounded(frames: Iterable[FrameT], limits: Limits) -> Iterator[FrameT]:
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


def _rotation(frame: VideoFrame) -> int:
    """Clockwise quarter turns (in degrees) that the display matrix asks for."""
    return round(-frame.rotation / 90) % 4 * 90


def _first_frame(
    container: av.container.InputContainer, stream: VideoStream, limits: Limits
) -> VideoFrame:
    _strict(stream)
    for frame in _bounded(container.decode(stream), limits):
        return frame
    raise MediaError(ErrorCode.MEDIA_CORRUPT, "the video has no decodable frame")


def probe_media(path: Path, limits: Limits = Limits()) -> MediaInfo:
    """What a video or audio file is; decodes its first video frame (``check_media``
    decodes more)."""
    with _opened(path) as container:
        known = _CONTAINERS.get(container.format.name)
        if known is None:
            raise MediaError(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"{container.format.name} is not supported"
            )
        name, video_type, audio_type = known
        vstream, astream = _video_stream(container), _audio_stream(container)
        if vstream is None and astream is None:
            raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file has no video or audio")
        _check_declared(container, vstream, astream, limits)
        width = height = rotation = 0
        fps: float | None = None
        if vstream is not None:
            frame = _first_frame(container, vstream, limits)
            rotation = _rotation(frame)
            width, height = frame.width, frame.height
            if rotation in (90, 270):
                width, height = height, width
            rate = vstream.average_rate or vstream.guessed_rate
            fps = round(float(rate), 3) if rate else None
        if name == "mp4" and _is_quicktime(path):
            name, video_type = "mov", "video/quicktime"
        if name == "matroska" and _is_webm(path):
            name, video_type, audio_type = "webm", "video/webm", "audio/webm"
        kind: Literal["video", "audio"] = "video" if vstream is not None else "audio"
        content_type = video_type if kind == "video" else audio_type
        if content_type is None:
            raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"video in {name} is not supported")
        return MediaInfo(
            kind=kind,
            content_type=content_type,
            container=name,
            duration=_duration(container, vstream or astream),
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


def check_media(path: Path, limits: Limits, budget: Budget) -> None:
    """Decode the video and audio of ``path`` from the start until ``budget`` is spent or
    the file ends; MediaError MEDIA_CORRUPT at the first damage FFmpeg reports. The bounds
    of ``limits`` hold as in every decode.

    What FFmpeg cannot see stays unseen: PCM audio (WAV) has no redundancy, so any bytes
    are samples, and demuxers that resynchronise (Ogg pages failing their CRC, MPEG audio
    between frame headers) drop what they skip without an error."""
    with _opened(path) as container:
        vstream, astream = _video_stream(container), _audio_stream(container)
        _check_declared(container, vstream, astream, limits)
        streams = [s for s in (vstream, astream) if s is not None]
        for stream in streams:
            _strict(stream)
        pixels = 0
        for frame in _bounded(_demuxed(container, streams, until=budget.seconds), limits):
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


def _upright(image: Image.Image, rotation: int) -> Image.Image:
    turns = {
        90: Image.Transpose.ROTATE_270,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_90,
    }
    return image.transpose(turns[rotation]) if rotation in turns else image


def _to_image(frame: VideoFrame) -> Image.Image:
    image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
    return image


def _needs_video(container: av.container.InputContainer, limits: Limits) -> VideoStream:
    stream = _video_stream(container)
    if stream is None:
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file has no video track")
    _check_declared(container, stream, _audio_stream(container), limits)
    _strict(stream)
    return stream


def video_thumbnail(
    source: Path,
    *,
    at: float | None = None,
    fraction: float | None = None,
    max_size: int | None = None,
    format: str = "JPEG",
    limits: Limits = Limits(),
) -> tuple[bytes, str, int, int]:
    """A still of the video at ``at`` seconds or ``fraction`` of its duration (default: a
    tenth of the way in), upright and fitted in ``max_size``: (data, type, width, height)."""
    with _opened(source) as container:
        stream = _needs_video(container, limits)
        duration = _duration(container, stream) or 0.0
        target = at if at is not None else duration * (0.1 if fraction is None else fraction)
        target = max(0.0, min(target, max(0.0, duration - 0.001)))
        if target > 0 and stream.time_base is not None:
            container.seek(round(target / stream.time_base), stream=stream, backward=True)
        chosen: VideoFrame | None = None
        for frame in _bounded(container.decode(stream), limits):
            # the frame on screen at ``target``: the last one that starts by then
            if chosen is not None and frame.time is not None and frame.time > target + 1e-3:
                break
            chosen = frame
        if chosen is None:
            raise MediaError(ErrorCode.MEDIA_CORRUPT, "no frame could be decoded at that time")
        image = _upright(_to_image(chosen), _rotation(chosen))
    if max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    output = image_ops.Output(format=format)
    data = image_ops.encode(image, output, format, image)
    return data, image_ops.content_type_for(format), image.width, image.height


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


class _Clock:
    """Turns decoded timestamps into progress reports, at most one per percent."""

    def __init__(self, duration: float | None, progress: Progress | None) -> None:
        self.duration, self.progress, self.last = duration or 0.0, progress, -1.0

    def tick(self, time: float | None) -> None:
        if self.progress is None or time is None or self.duration <= 0:
            return
        fraction = min(max(time / self.duration, 0.0), 1.0)
        if fraction - self.last >= 0.01:
            self.last = fraction
            self.progress(fraction)


def transcode(
    source: Path,
    out: Path,
    *,
    target_height: int | None = None,
    quality: Quality = "medium",
    progress: Progress | None = None,
    limits: Limits = Limits(),
) -> MediaInfo:
    """Re-encode ``source`` as H.264/AAC MP4 (fast start) at most ``target_height`` high,
    upright; never upscales. Returns what was written."""
    info = probe_media(source, limits)
    if info.kind != "video" or info.width is None or info.height is None:
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file has no video track")
    height = _even(min(target_height or info.height, info.height))
    width = _even(info.width * height / info.height)
    clock = _Clock(info.duration, progress)
    with (
        _opened(source) as container,
        av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as output,
    ):
        vin, ain = _needs_video(container, limits), _audio_stream(container)
        if ain is not None:
            _strict(ain)
        rate = Fraction(vin.average_rate or vin.guessed_rate or 30).limit_denominator(1001)
        vout = output.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.codec_context.time_base = 1 / rate
        vout.options = {"crf": str(_CRF[quality]), "preset": "veryfast"}
        aout: Any = None
        if ain is not None:
            aout = output.add_stream("aac", rate=ain.codec_context.sample_rate or 48_000)
            aout.bit_rate = _AUDIO_BITRATE[quality]
            aout.layout = "stereo" if (ain.codec_context.channels or 1) > 1 else "mono"
        last_pts = -1
        streams = [s for s in (vin, ain) if s is not None]
        for frame in _bounded(_demuxed(container, streams), limits):
            if isinstance(frame, VideoFrame):
                clock.tick(frame.time)
                pts = round((frame.time or 0.0) * rate)
                last_pts = pts = max(pts, last_pts + 1)
                if info.rotation:
                    upright = _upright(_to_image(frame), info.rotation)
                    frame = VideoFrame.from_image(upright)  # type: ignore[no-untyped-call]
                frame = frame.reformat(width=width, height=height, format="yuv420p")
                frame.pts, frame.time_base = pts, 1 / rate
                output.mux(vout.encode(frame))
            elif aout is not None and isinstance(frame, AudioFrame):
                frame.pts = None
                output.mux(aout.encode(frame))
        output.mux(vout.encode(None))
        if aout is not None:
            output.mux(aout.encode(None))
    return probe_media(out, limits)


def _demuxed(
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


def extract_audio(
    source: Path,
    out: Path,
    *,
    codec: AudioCodec = "aac",
    bitrate: int | None = None,
    progress: Progress | None = None,
    limits: Limits = Limits(),
) -> MediaInfo:
    """The first audio track as AAC (in M4A), MP3, or Opus (in Ogg). Returns what was
    written."""
    info = probe_media(source, limits)
    encoder, muxer, default_rate, rates = _AUDIO_OUT[codec]
    clock = _Clock(info.duration, progress)
    with _opened(source) as container, av.open(str(out), "w", format=muxer) as output:
        ain = _audio_stream(container)
        if ain is None:
            raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file has no audio track")
        _strict(ain)
        sample_rate = ain.codec_context.sample_rate or 48_000
        if rates is not None and sample_rate not in rates:
            sample_rate = min(rates, key=lambda r: (abs(r - sample_rate), -r))
        aout: Any = output.add_stream(encoder, rate=sample_rate)
        aout.bit_rate = bitrate or default_rate
        aout.layout = "stereo" if (ain.codec_context.channels or 1) > 1 else "mono"
        for frame in _bounded(container.decode(ain), limits):
            clock.tick(frame.time)
            frame.pts = None
            output.mux(aout.encode(frame))
        output.mux(aout.encode(None))
    if out.stat().st_size == 0:
        raise MediaError(ErrorCode.PROCESSING_FAILED, "no audio was written")
    return probe_media(out, limits)
