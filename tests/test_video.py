"""The video adapter on real files: probing, stills, transcodes and audio extraction.

``make_video`` frames go linearly from black to white, so the grey level of a still tells
which frame it is; ``quadrant_video`` frames show where a rotation puts each corner."""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageStat

from gql_media.adapters import video
from gql_media.adapters.video import AudioCodec
from gql_media.errors import ErrorCode, MediaError
from tests.media import make_video, quadrant_video, rotate_video

SECONDS, WIDTH, HEIGHT, FPS = 2.0, 320, 240, 24
FRAMES = round(SECONDS * FPS)
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
AUDIO = {
    # codec: (file name, content type, container, codec probed back, sample rate)
    "aac": ("audio.m4a", "audio/mp4", "mp4", "aac", 44_100),
    "mp3": ("audio.mp3", "audio/mpeg", "mp3", "mp3", 44_100),
    "opus": ("audio.ogg", "audio/ogg", "ogg", "opus", 48_000),
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of 320x240 H.264 at 24 fps, black to white, with a mono 44.1 kHz AAC tone."""
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", SECONDS, WIDTH, HEIGHT, FPS)


@pytest.fixture(scope="module")
def silent_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("silent") / "silent.mp4", 1.0, 160, 120, audio=False)


@pytest.fixture(scope="module")
def audio_only(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audio") / "audio.m4a"
    video.extract_audio(clip, out)
    return out


@contextmanager
def fails_with(code: ErrorCode) -> Iterator[None]:
    with pytest.raises(MediaError) as caught:
        yield
    assert caught.value.code == code, caught.value


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def grey(data: bytes) -> float:
    """The mean grey level of an encoded still."""
    with Image.open(io.BytesIO(data)) as image:
        return float(ImageStat.Stat(image.convert("L")).mean[0])


def shade(frame: int) -> float:
    """The grey level make_video gives ``frame``."""
    return 255 * frame / (FRAMES - 1)


def decoded_frames(path: Path) -> list[float]:
    """The time of every video frame of ``path``, decoded."""
    with av.open(str(path)) as container:
        return [float(frame.time or 0.0) for frame in container.decode(video=0)]


def corners(image: Image.Image, inset: int = 4) -> list[tuple[int, ...]]:
    rgb = image.convert("RGB")
    right, bottom = image.width - 1 - inset, image.height - 1 - inset
    points = ((inset, inset), (right, inset), (inset, bottom), (right, bottom))
    return [rgb.getpixel(point) for point in points]  # type: ignore[misc]


def assert_corners(image: Image.Image, expected: tuple[tuple[int, int, int], ...]) -> None:
    for actual, colour in zip(corners(image), expected, strict=True):
        assert all(abs(a - e) <= 12 for a, e in zip(actual, colour, strict=True)), (
            corners(image),
            expected,
        )


def assert_increasing_fractions(reports: list[float]) -> None:
    assert reports, "no progress was reported"
    assert all(0.0 <= value <= 1.0 for value in reports), reports
    assert all(a < b for a, b in zip(reports, reports[1:], strict=False)), reports
    assert reports[-1] >= 0.95, reports


# probing


def test_probe_an_h264_aac_mp4(clip: Path) -> None:
    info = video.probe_media(clip)

    assert info.kind == "video"
    assert (info.content_type, info.container) == ("video/mp4", "mp4")
    assert info.duration is not None and abs(info.duration - SECONDS) <= 0.1
    assert (info.width, info.height, info.fps, info.rotation) == (WIDTH, HEIGHT, FPS, 0)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.sample_rate, info.channels) == (44_100, 1)
    assert info.bitrate is not None and info.bitrate > 0
    assert info.to_dict()["videoCodec"] == "h264"


def test_probe_a_video_without_sound(silent_clip: Path) -> None:
    info = video.probe_media(silent_clip)

    assert (info.kind, info.video_codec, info.width, info.height) == ("video", "h264", 160, 120)
    assert info.duration is not None and abs(info.duration - 1.0) <= 0.1
    assert (info.audio_codec, info.sample_rate, info.channels) == (None, None, None)


@pytest.mark.parametrize("codec", ["aac", "mp3", "opus"])
def test_extracted_audio_probes_as_audio(clip: Path, tmp_path: Path, codec: AudioCodec) -> None:
    name, content_type, container, probed_codec, sample_rate = AUDIO[codec]
    out = tmp_path / name

    info = video.extract_audio(clip, out, codec=codec)

    assert info == video.probe_media(out)
    assert (info.kind, info.content_type, info.container) == ("audio", content_type, container)
    assert (info.audio_codec, info.sample_rate, info.channels) == (probed_codec, sample_rate, 1)
    assert (info.video_codec, info.width, info.height, info.fps) == (None, None, None, None)
    assert info.duration is not None and abs(info.duration - SECONDS) <= 0.1


@pytest.mark.parametrize("codec", ["aac", "mp3", "opus"])
def test_extract_audio_respects_the_bitrate(clip: Path, tmp_path: Path, codec: AudioCodec) -> None:
    name = AUDIO[codec][0]
    low = video.extract_audio(clip, tmp_path / f"low-{name}", codec=codec, bitrate=32_000)
    high = video.extract_audio(clip, tmp_path / f"high-{name}", codec=codec, bitrate=96_000)

    # the container's rate counts its own overhead, large on a 2 s file
    assert low.bitrate is not None and 0.8 * 32_000 <= low.bitrate <= 1.5 * 32_000
    assert high.bitrate is not None and 0.8 * 96_000 <= high.bitrate <= 1.5 * 96_000
    assert (tmp_path / f"low-{name}").stat().st_size < (tmp_path / f"high-{name}").stat().st_size


def test_extract_audio_from_a_video_without_sound(silent_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "audio.m4a"
    with fails_with(ErrorCode.UNSUPPORTED_MEDIA_TYPE):
        video.extract_audio(silent_clip, out)
    assert not out.exists()


def test_an_audio_file_has_no_picture(audio_only: Path, tmp_path: Path) -> None:
    with fails_with(ErrorCode.UNSUPPORTED_MEDIA_TYPE):
        video.video_thumbnail(audio_only)
    with fails_with(ErrorCode.UNSUPPORTED_MEDIA_TYPE):
        video.transcode(audio_only, tmp_path / "out.mp4")


def test_extract_audio_from_an_audio_file(audio_only: Path, tmp_path: Path) -> None:
    info = video.extract_audio(audio_only, tmp_path / "again.mp3", codec="mp3")

    assert (info.kind, info.content_type) == ("audio", "audio/mpeg")
    assert info.duration is not None and abs(info.duration - SECONDS) <= 0.1


Action = Callable[[Path, Path], Any]
ACTIONS: dict[str, Action] = {
    "probe": lambda source, _out: video.probe_media(source),
    "thumbnail": lambda source, _out: video.video_thumbnail(source),
    "transcode": lambda source, out: video.transcode(source, out / "out.mp4"),
    "extract_audio": lambda source, out: video.extract_audio(source, out / "out.m4a"),
}


def _damaged(clip: Path) -> dict[str, bytes]:
    whole = clip.read_bytes()
    noise = random.Random(7).randbytes(20_000)
    return {
        "first-half": whole[: len(whole) // 2],
        "ftyp-then-noise": whole[:32] + noise,
        "bare-ftyp-then-noise": b"\x00\x00\x00\x14ftypisom\x00\x00\x02\x00isom" + noise,
    }


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("damage", ["first-half", "ftyp-then-noise", "bare-ftyp-then-noise"])
def test_damaged_files_are_corrupt(clip: Path, tmp_path: Path, action: str, damage: str) -> None:
    source = write(tmp_path, "clip.mp4", _damaged(clip)[damage])
    with fails_with(ErrorCode.MEDIA_CORRUPT):
        ACTIONS[action](source, tmp_path)


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize(
    "data", [b"hello, this is text\n" * 50, b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64]
)
def test_other_files_are_unsupported(tmp_path: Path, action: str, data: bytes) -> None:
    source = write(tmp_path, "clip.mp4", data)
    with fails_with(ErrorCode.UNSUPPORTED_MEDIA_TYPE):
        ACTIONS[action](source, tmp_path)


def test_a_transcode_of_a_truncated_fast_start_file_is_corrupt(clip: Path, tmp_path: Path) -> None:
    # fast start puts the index first, so half a file still opens; its frames are missing
    whole = tmp_path / "whole.mp4"
    video.transcode(clip, whole)
    data = whole.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    half = write(tmp_path, "half.mp4", data[: len(data) // 2])

    with fails_with(ErrorCode.MEDIA_CORRUPT):
        video.transcode(half, tmp_path / "out.mp4")


# stills


@pytest.mark.parametrize(
    ("at", "frame"),
    [
        (0.0, 0),
        (0.5, 12),
        (1.0, 24),
        (1.23, 29),  # between frames: the one on screen then
        (1.5 + 0.5 / FPS, 36),
        (SECONDS - 0.01, FRAMES - 1),
        (10.0, FRAMES - 1),  # past the end: the last frame
        (-1.0, 0),
    ],
)
def test_a_still_at_a_time_is_the_frame_on_screen_then(clip: Path, at: float, frame: int) -> None:
    data, content_type, width, height = video.video_thumbnail(clip, at=at, format="PNG")

    assert (content_type, width, height) == ("image/png", WIDTH, HEIGHT)
    assert abs(grey(data) - shade(frame)) <= 2.5, (grey(data), shade(frame))


@pytest.mark.parametrize(
    ("fraction", "frame"),
    [(0.0, 0), (0.25, 12), (0.5, 24), (0.9, 43), (1.0, FRAMES - 1), (None, 4)],
)
def test_a_still_at_a_fraction_of_the_duration(
    clip: Path, fraction: float | None, frame: int
) -> None:
    data, _, _, _ = video.video_thumbnail(clip, fraction=fraction, format="PNG")

    assert abs(grey(data) - shade(frame)) <= 2.5, (grey(data), shade(frame))


@pytest.mark.parametrize(
    ("max_size", "size"), [(100, (100, 75)), (240, (240, 180)), (1000, (WIDTH, HEIGHT))]
)
def test_a_still_fits_max_size(clip: Path, max_size: int, size: tuple[int, int]) -> None:
    data, content_type, width, height = video.video_thumbnail(clip, at=1.0, max_size=max_size)

    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("JPEG", size)
    assert (content_type, (width, height)) == ("image/jpeg", size)
    assert abs(grey(data) - shade(24)) <= 4


@pytest.mark.parametrize(("fmt", "content_type"), [("WEBP", "image/webp"), ("AVIF", "image/avif")])
def test_a_still_in_other_formats(clip: Path, fmt: str, content_type: str) -> None:
    data, found_type, _, _ = video.video_thumbnail(clip, at=0.5, format=fmt)

    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == (fmt, (WIDTH, HEIGHT))
    assert found_type == content_type
    assert abs(grey(data) - shade(12)) <= 4


# rotated videos, as phones record them

UPRIGHT = {
    # quadrants() after a clockwise turn: top-left, top-right, bottom-left, bottom-right
    90: (BLUE, RED, WHITE, GREEN),
    180: (WHITE, BLUE, GREEN, RED),
    270: (GREEN, WHITE, RED, BLUE),
}


@pytest.fixture(params=[90, 180, 270])
def rotated(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, int]:
    degrees: int = request.param
    return rotate_video(quadrant_video(tmp_path / "phone.mp4", 64, 48), degrees), degrees


def test_probe_a_rotated_video_gives_the_displayed_size(rotated: tuple[Path, int]) -> None:
    path, degrees = rotated

    info = video.probe_media(path)

    assert info.rotation == degrees
    assert (info.width, info.height) == ((48, 64) if degrees in (90, 270) else (64, 48))


def test_a_still_of_a_rotated_video_is_upright(rotated: tuple[Path, int]) -> None:
    path, degrees = rotated

    data, _, width, height = video.video_thumbnail(path, at=0.5, format="PNG")

    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (width, height)
        assert_corners(image, UPRIGHT[degrees])


def test_a_transcode_of_a_rotated_video_is_upright(
    rotated: tuple[Path, int], tmp_path: Path
) -> None:
    path, degrees = rotated

    info = video.transcode(path, tmp_path / "upright.mp4")

    assert info.rotation == 0
    assert (info.width, info.height) == ((48, 64) if degrees in (90, 270) else (64, 48))
    with av.open(str(tmp_path / "upright.mp4")) as container:
        first = next(container.decode(video=0))
        assert_corners(first.to_image(), UPRIGHT[degrees])  # type: ignore[no-untyped-call]


# transcoding


@pytest.mark.parametrize(
    ("target_height", "size"),
    [(120, (160, 120)), (101, (134, 100)), (1000, (WIDTH, HEIGHT)), (None, (WIDTH, HEIGHT))],
)
def test_transcode_scales_down_and_never_up(
    clip: Path, tmp_path: Path, target_height: int | None, size: tuple[int, int]
) -> None:
    out = tmp_path / "out.mp4"

    info = video.transcode(clip, out, target_height=target_height)

    assert info == video.probe_media(out)
    assert (info.kind, info.content_type, info.container) == ("video", "video/mp4", "mp4")
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height, info.fps) == (*size, FPS)
    assert info.duration is not None and abs(info.duration - SECONDS) <= 0.1
    assert (info.sample_rate, info.channels) == (44_100, 1)
    times = decoded_frames(out)
    assert abs(len(times) - FRAMES) <= 1
    assert times == sorted(times)
    # still black to white, frame by frame
    still, _, _, _ = video.video_thumbnail(out, at=1.0, format="PNG")
    assert abs(grey(still) - shade(24)) <= 3


def test_transcode_a_video_without_sound(silent_clip: Path, tmp_path: Path) -> None:
    info = video.transcode(silent_clip, tmp_path / "out.mp4", target_height=60)

    assert (info.width, info.height, info.video_codec, info.audio_codec) == (80, 60, "h264", None)
    assert info.duration is not None and abs(info.duration - 1.0) <= 0.1
    assert abs(len(decoded_frames(tmp_path / "out.mp4")) - 24) <= 1


def test_transcode_quality_changes_the_size(clip: Path, tmp_path: Path) -> None:
    video.transcode(clip, tmp_path / "low.mp4", quality="low")
    video.transcode(clip, tmp_path / "high.mp4", quality="high")

    assert (tmp_path / "low.mp4").stat().st_size < (tmp_path / "high.mp4").stat().st_size


def test_transcode_reports_increasing_progress(clip: Path, tmp_path: Path) -> None:
    reports: list[float] = []

    video.transcode(clip, tmp_path / "out.mp4", target_height=120, progress=reports.append)

    assert_increasing_fractions(reports)
    assert len(reports) >= 10


@pytest.mark.parametrize("codec", ["aac", "mp3", "opus"])
def test_extract_audio_reports_increasing_progress(
    clip: Path, tmp_path: Path, codec: AudioCodec
) -> None:
    reports: list[float] = []

    video.extract_audio(clip, tmp_path / AUDIO[codec][0], codec=codec, progress=reports.append)

    assert_increasing_fractions(reports)
