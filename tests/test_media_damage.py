"""Damaged media against the running service: a file whose headers are sound and whose data
is broken is refused at upload with MEDIA_CORRUPT, whatever its kind; damage past what an
upload decodes ends the processing job FAILED with MEDIA_CORRUPT, not retried, instead of
a black, glitched or shortened output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gql_media.settings import Settings
from tests.media import (
    animated_gif,
    damage,
    damaged_png,
    encoded,
    gif_with_broken_frame,
    jpeg,
    make_video,
    quadrants,
    tone,
    truncated_jpeg,
)
from tests.support import LiveServer
from tests.test_media_api import follow, upload_stream
from tests.test_media_limits import process_video, refused, serving

# a sample's sound and damaged bytes, made in a scratch directory
Sample = Callable[[Path], tuple[bytes, bytes]]


def _png(_: Path) -> tuple[bytes, bytes]:
    return encoded(quadrants(64, 48), "PNG"), damaged_png(64, 48)


def _jpeg(_: Path) -> tuple[bytes, bytes]:
    return jpeg(), truncated_jpeg()


def _gif(_: Path) -> tuple[bytes, bytes]:
    return animated_gif(5), gif_with_broken_frame(5, broken=2)


def _file(make: Callable[[Path], Path], kind: str, start: float, end: float) -> Sample:
    """A file made by ``make``, and a copy whose ``kind`` packets from ``start`` to ``end``
    seconds are garbage after their first bytes."""

    def sample(tmp: Path) -> tuple[bytes, bytes]:
        sound = make(tmp / "sound").read_bytes()
        broken = tmp / "broken"
        broken.write_bytes(sound)
        return sound, damage(broken, kind, start, end).read_bytes()

    return sample


SAMPLES = [
    pytest.param(_png, "picture.png", id="png-idat-not-zlib"),
    pytest.param(_jpeg, "photo.jpg", id="jpeg-truncated-scan"),
    pytest.param(_gif, "moving.gif", id="gif-broken-middle-frame"),
    pytest.param(
        _file(lambda p: make_video(p, seconds=2.0), "video", 0.8, 1.2),
        "clip.mp4",
        id="mp4-garbage-video-frames",
    ),
    pytest.param(
        _file(lambda p: make_video(p, seconds=2.0), "audio", 0.8, 1.2),
        "clip.mp4",
        id="mp4-garbage-audio-frames",
    ),
    pytest.param(
        _file(lambda p: tone(p, "ipod", "aac"), "audio", 1.0, 1.5),
        "song.m4a",
        id="aac-garbage-frames",
    ),
    pytest.param(
        _file(lambda p: tone(p, "mp3", "libmp3lame"), "audio", 1.0, 1.5),
        "song.mp3",
        id="mp3-garbage-frames",
    ),
]


@pytest.mark.parametrize(("sample", "filename"), SAMPLES)
async def test_a_damaged_file_is_refused_at_upload(
    server: LiveServer, settings: Settings, tmp_path: Path, sample: Sample, filename: str
) -> None:
    sound, damaged = sample(tmp_path)
    taken = await upload_stream(server, sound, filename)
    assert taken.status_code == 201, taken.text  # the same file undamaged is fine
    assert await refused(server, damaged, filename) == "MEDIA_CORRUPT"
    stored = [p for p in settings.effective_storage_dir.rglob("*") if p.is_file()]
    assert len(stored) == 1  # the sound upload only


@pytest.mark.parametrize(
    ("kind", "flip", "operation"),
    [
        # one picture with one byte changed: damage a decoder paints over (error
        # concealment) unless told to report it
        pytest.param("video", True, {"transcode": {"quality": "LOW"}}, id="transcode"),
        pytest.param("audio", False, {"extractAudio": {"codec": "MP3"}}, id="extract-audio"),
    ],
)
async def test_damage_past_the_upload_decode_ends_the_job_as_corrupt(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    kind: str,
    flip: bool,
    operation: dict[str, object],
) -> None:
    # a 4 s video damaged at 2.5 s; the upload decodes the first second only
    settings = settings_factory(upload_decode_seconds=1.0)
    late = damage(make_video(tmp_path / "late.mp4", seconds=4.0), kind, 2.49, 2.51, flip=flip)
    async with serving(settings) as live:
        upload = await upload_stream(live, late.read_bytes(), "late.mp4")
        assert upload.status_code == 201, upload.text
        job = await process_video(live, upload.json()["media"]["id"], [operation])
        final = (await follow(live, job))[-1]
    assert final["status"] == "FAILED", final
    assert final["error"]["code"] == "MEDIA_CORRUPT", final["error"]
    assert final["error"]["retryable"] is False
    assert final["attempts"] == 1
    assert final["outputs"] == []
