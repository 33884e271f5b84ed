"""Writing new media from a file: an H.264/AAC MP4 transcode, or its audio track alone;
both report progress as the decoded timestamp over the duration."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.container
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.video.frame import VideoFrame

from gql_media.adapters.video.decoding import (
    DEFAULT_LIMITS,
    Limits,
    audio_stream,
    bounded,
    demuxed,
    make_strict,
    needs_video,
    opened,
    to_image,
    turn_upright,
)
from gql_media.adapters.video.probe import MediaInfo, probe_media
from gql_media.errors import ErrorCode, MediaError

Progress = Callable[[float], None]
Quality = Literal["low", "medium", "high"]
AudioCodec = Literal["aac", "mp3", "opus"]
# x264 CRF and AAC bits per second of each quality
CRF: dict[Quality, int] = {"low": 28, "medium": 23, "high": 18}
AUDIO_BITRATE: dict[Quality, int] = {"low": 64_000, "medium": 128_000, "high": 192_000}
# codec name, muxer, default bitrate, sample rates the encoder takes (None: any)
AUDIO_OUT: dict[AudioCodec, tuple[str, str, int, tuple[int, ...] | None]] = {
    "aac": ("aac", "ipod", 128_000, None),
    "mp3": ("libmp3lame", "mp3", 128_000, (48_000, 44_100, 32_000, 24_000, 22_050, 16_000)),
    "opus": ("libopus", "ogg", 96_000, (48_000,)),
}


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
    limits: Limits = DEFAULT_LIMITS,
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
        opened(source) as container,
        av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as output,
    ):
        vin, ain = needs_video(container, limits), audio_stream(container)
        rate = Fraction(vin.average_rate or vin.guessed_rate or 30).limit_denominator(1001)
        vout = _video_out(output, rate, (width, height), quality)
        aout = _audio_out(output, ain, AUDIO_BITRATE[quality]) if ain is not None else None
        last_pts = -1
        streams = [s for s in (vin, ain) if s is not None]
        for frame in bounded(demuxed(container, streams), limits):
            if isinstance(frame, VideoFrame):
                clock.tick(frame.time)
                last_pts = max(round((frame.time or 0.0) * rate), last_pts + 1)
                picture = _picture(frame, info.rotation, (width, height), last_pts, rate)
                output.mux(vout.encode(picture))
            elif aout is not None and isinstance(frame, AudioFrame):
                frame.pts = None
                output.mux(aout.encode(frame))
        output.mux(vout.encode(None))
        if aout is not None:
            output.mux(aout.encode(None))
    return probe_media(out, limits)


def _video_out(
    output: av.container.OutputContainer, rate: Fraction, size: tuple[int, int], quality: Quality
) -> Any:
    """The H.264 stream of a transcode."""
    vout: Any = output.add_stream("libx264", rate=rate)
    vout.width, vout.height, vout.pix_fmt = *size, "yuv420p"
    vout.codec_context.time_base = 1 / rate
    vout.options = {"crf": str(CRF[quality]), "preset": "veryfast"}
    return vout


def _audio_out(output: av.container.OutputContainer, ain: AudioStream, bitrate: int) -> Any:
    """The AAC stream of a transcode, from ``ain`` (whose decoder is made strict)."""
    make_strict(ain)
    aout: Any = output.add_stream("aac", rate=ain.codec_context.sample_rate or 48_000)
    aout.bit_rate = bitrate
    aout.layout = "stereo" if (ain.codec_context.channels or 1) > 1 else "mono"
    return aout


def _picture(
    frame: VideoFrame, rotation: int, size: tuple[int, int], pts: int, rate: Fraction
) -> VideoFrame:
    """``frame`` upright, at ``size`` in the encoder's pixel format, at ``pts``."""
    if rotation:
        upright = turn_upright(to_image(frame), rotation)
        frame = VideoFrame.from_image(upright)  # type: ignore[no-untyped-call]
    frame = frame.reformat(width=size[0], height=size[1], format="yuv420p")
    frame.pts, frame.time_base = pts, 1 / rate
    return frame


def extract_audio(
    source: Path,
    out: Path,
    *,
    codec: AudioCodec = "aac",
    bitrate: int | None = None,
    progress: Progress | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> MediaInfo:
    """The first audio track as AAC (in M4A), MP3, or Opus (in Ogg). Returns what was
    written."""
    info = probe_media(source, limits)
    encoder, muxer, default_rate, rates = AUDIO_OUT[codec]
    clock = _Clock(info.duration, progress)
    with opened(source) as container, av.open(str(out), "w", format=muxer) as output:
        ain = audio_stream(container)
        if ain is None:
            raise MediaError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the file has no audio track")
        make_strict(ain)
        sample_rate = ain.codec_context.sample_rate or 48_000
        if rates is not None and sample_rate not in rates:
            sample_rate = min(rates, key=lambda r: (abs(r - sample_rate), -r))
        aout: Any = output.add_stream(encoder, rate=sample_rate)
        aout.bit_rate = bitrate or default_rate
        aout.layout = "stereo" if (ain.codec_context.channels or 1) > 1 else "mono"
        for frame in bounded(container.decode(ain), limits):
            clock.tick(frame.time)
            frame.pts = None
            output.mux(aout.encode(frame))
        output.mux(aout.encode(None))
    if out.stat().st_size == 0:
        raise MediaError(ErrorCode.PROCESSING_FAILED, "no audio was written")
    return probe_media(out, limits)
