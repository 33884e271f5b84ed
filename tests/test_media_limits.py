"""Media bounds against the running service: an animation is bounded by the pixels of all
its frames, a video by the size of its frames and its duration, whatever its header says;
and each processing attempt runs in a child process that a memory ceiling, the job timeout
and cancelJob end, while the worker goes on."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gql_media.adapters import gif, image_ops
from gql_media.adapters import redis as redis_adapter
from gql_media.errors import ErrorCode, MediaError
from gql_media.settings import Settings
from tests.media import animated_gif, encoded, jpeg, mjpeg_mkv, sparse_gif
from tests.support import LiveServer, start_server
from tests.test_media_api import (
    PROCESS_IMAGE,
    PROCESS_VIDEO,
    follow,
    upload_multipart,
    upload_stream,
)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[LiveServer]:
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=True) as live:
        yield live


async def refused(live: LiveServer, data: bytes, filename: str) -> str:
    """The code both upload paths refuse ``data`` with (they must agree)."""
    streamed = await upload_stream(live, data, filename)
    assert streamed.status_code == 422, streamed.text
    [error] = streamed.json()["userErrors"]
    multipart = await upload_multipart(live, data, filename, "application/octet-stream")
    [same] = multipart.json()["data"]["uploadMedia"]["userErrors"]
    assert (same["field"], same["code"]) == ("file", error["code"])
    return str(error["code"])


async def test_an_animation_is_bounded_by_the_pixels_of_all_its_frames(
    server: LiveServer,
) -> None:
    # 2.3 KB: a 3000x3000 canvas (9 MP, under the picture limit) and 100 one-pixel frames,
    # each of which a decoder paints on a whole canvas: 900 MP of work
    hostile = sparse_gif(3000, 3000, 100)
    assert len(hostile) < 3000
    assert await refused(server, hostile, "sparse.gif") == "TOO_MANY_PIXELS"

    modest = await upload_stream(server, sparse_gif(300, 300, 100), "modest.gif")
    assert modest.status_code == 201, modest.text
    assert modest.json()["media"]["metadata"]["frames"] == 100


async def test_a_video_declaring_16000x16000_frames_is_refused_by_default(
    server: LiveServer,
) -> None:
    # 606 bytes whose header declares 256 MP frames (over the default 40 MP), refused before
    # a decoder allocates one
    declared = mjpeg_mkv([0], declared=16000)
    assert await refused(server, declared, "huge.mkv") == "TOO_MANY_PIXELS"


async def test_a_video_is_bounded_by_its_frame_size_and_duration(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(max_video_pixels=100_000, max_media_seconds=5)
    async with serving(settings) as live:
        # as the header says, before any frame is decoded: this one has none that decodes
        declared = mjpeg_mkv([0], declared=400)  # 160,000 pixels a frame
        assert await refused(live, declared, "declared.mkv") == "TOO_MANY_PIXELS"
        large = mjpeg_mkv([400, 400])
        assert await refused(live, large, "large.mkv") == "TOO_MANY_PIXELS"
        long = mjpeg_mkv([64] * 8)  # eight seconds
        assert await refused(live, long, "long.mkv") == "MEDIA_TOO_LONG"
        fitting = await upload_stream(live, mjpeg_mkv([256] * 5), "fits.mkv")
        assert fitting.status_code == 201, fitting.text


async def test_a_frame_larger_than_its_header_declares_ends_the_job(
    settings_factory: Callable[..., Settings],
) -> None:
    # the upload decodes the first 1.5 s only (a full decode would refuse the file at once)
    settings = settings_factory(max_video_pixels=100_000, upload_decode_seconds=1.5)
    async with serving(settings) as live:
        # the header and the first frame say 256x256 (65,536 pixels); the third frame is
        # 2048x2048: the upload is taken, the job that decodes that frame is refused
        lying = await upload_stream(live, mjpeg_mkv([256, 256, 2048, 256]), "lying.mkv")
        assert lying.status_code == 201, lying.text
        media = lying.json()["media"]
        assert (media["width"], media["height"]) == (256, 256)
        job = await process_video(live, media["id"], [{"transcode": {"quality": "LOW"}}])
        final = (await follow(live, job))[-1]
        assert final["status"] == "FAILED", final
        assert final["error"]["code"] == "TOO_MANY_PIXELS", final["error"]
        assert final["error"]["retryable"] is False


async def process_video(live: LiveServer, media_id: str, operations: list[Any]) -> str:
    body = await live.graphql(
        PROCESS_VIDEO, {"input": {"mediaId": media_id, "operations": operations}}
    )
    payload = body["data"]["processVideo"]
    assert payload["userErrors"] == [], payload
    return str(payload["job"]["id"])


# -- each processing attempt runs in a child process that can be stopped and capped ---------

CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { job { status } userErrors { code } } }"
JOB = "query($id: ID!) { job(id: $id) { status error { code retryable } } }"
STARTED = re.compile(r"media process (\d+) started")


async def process_image(live: LiveServer, data: bytes, variants: list[Any]) -> str:
    upload = await upload_stream(live, data, "source.bin")
    assert upload.status_code == 201, upload.text
    media_id = upload.json()["media"]["id"]
    body = await live.graphql(PROCESS_IMAGE, {"input": {"mediaId": media_id, "variants": variants}})
    payload = body["data"]["processImage"]
    assert payload["userErrors"] == [], payload
    return str(payload["job"]["id"])


async def thumbnail_succeeds(live: LiveServer) -> None:
    job = await process_image(live, jpeg(), [{"name": "t", "operations": [THUMBNAIL]}])
    assert (await follow(live, job))[-1]["status"] == "SUCCEEDED"


async def busy_child(caplog: pytest.LogCaptureFixture) -> int:
    """The process id of the one media child (the pool has one): the first that started."""
    while not (found := STARTED.findall(caplog.text)):
        await asyncio.sleep(0.01)
    return int(found[0])


async def gone(pid: int) -> None:
    """Wait until no process has ``pid`` (killed and reaped); the test's timeout bounds it."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.01)


THUMBNAIL = {"thumbnail": {"size": 64}}
# Minutes of CPU work with no progress report before the end, longer than any test may
# take, in little memory (each frame shrinks before the next): 30 frames of 4 MP, each
# decoded and turned 19 times
SLOW = sparse_gif(2000, 2000, 30)
TURN = {"rotate": {"degrees": 45, "expand": False}}
SLOW_VARIANTS = [{"name": "turned", "format": "WEBP", "operations": [TURN] * 19 + [THUMBNAIL]}]


async def test_a_job_over_the_memory_ceiling_fails_and_the_worker_goes_on(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(
        process_memory_limit_mb=400, max_animation_pixels=10**10, worker_concurrency=1
    )
    async with serving(settings) as live:
        # 40 frames of 2000x2000 kept whole as RGBA: 640 MB, over the 400 MiB ceiling
        job = await process_image(
            live, sparse_gif(2000, 2000, 40), [{"name": "whole", "format": "WEBP"}]
        )
        final = (await follow(live, job))[-1]
        assert final["status"] == "FAILED", final
        assert final["error"] == {
            "code": "RESOURCE_LIMIT",
            "message": "the work needed more memory than the limit of 400 MiB",
            "retryable": False,
        }
        await thumbnail_succeeds(live)


async def test_a_timed_out_job_ends_its_work(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gql_media.adapters.isolation")
    settings = settings_factory(
        job_timeout=3.0, max_attempts=1, max_animation_pixels=10**10, worker_concurrency=1
    )
    async with serving(settings) as live:
        job = await process_image(live, SLOW, SLOW_VARIANTS)
        final = (await follow(live, job))[-1]
        assert final["status"] == "FAILED" and final["error"]["code"] == "JOB_TIMEOUT", final
        await gone(await busy_child(caplog))
        await thumbnail_succeeds(live)


async def test_a_canceled_job_ends_its_work(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gql_media.adapters.isolation")
    settings = settings_factory(max_animation_pixels=10**10, worker_concurrency=1)
    async with serving(settings) as live:
        job = await process_image(live, SLOW, SLOW_VARIANTS)
        pid = await busy_child(caplog)  # started for this job, the first of the worker
        canceled = await live.graphql(CANCEL, {"id": job})
        assert canceled["data"]["cancelJob"] == {"job": {"status": "CANCELED"}, "userErrors": []}
        await gone(pid)
        await thumbnail_succeeds(live)
        assert (await live.graphql(JOB, {"id": job}))["data"]["job"]["status"] == "CANCELED"


async def test_with_isolation_off_jobs_run_in_threads(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gql_media.adapters.isolation")
    async with serving(settings_factory(process_isolation=False)) as live:
        await thumbnail_succeeds(live)
        # the bounds hold there too
        assert await refused(live, sparse_gif(3000, 3000, 100), "sparse.gif") == "TOO_MANY_PIXELS"
    assert not STARTED.search(caplog.text)


def test_gif_frames_are_counted_no_further_than_the_bound(tmp_path: Path) -> None:
    # Pillow walks every frame to count them, at a cost growing with the canvas (12 µs a
    # frame on 3000x3000): about 12 s for these 23 MB. The walk stops past the bound.
    path = tmp_path / "many.gif"
    path.write_bytes(sparse_gif(3000, 3000, 1_000_000))
    assert gif.count_frames(path, stop_after=22) == 23
    with pytest.raises(MediaError) as refused:
        image_ops.probe_image(path, max_pixels=10**8, max_animation_pixels=200_000_000)
    assert refused.value.code is ErrorCode.TOO_MANY_PIXELS

    # where it does not stop, it counts what Pillow counts
    for data in (sparse_gif(300, 300, 100), animated_gif(7), animated_gif(1)):
        path.write_bytes(data)
        with Image.open(path) as image:
            assert gif.count_frames(path, stop_after=10**6) == image.n_frames


async def test_every_page_of_a_tiff_is_bounded(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(max_image_pixels=100_000)
    async with serving(settings) as live:
        # the first page is what opening the file shows; the second is over the limit
        pages = [Image.new("1", (10, 10)), Image.new("1", (400, 400))]
        tiff = encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])
        assert await refused(live, tiff, "pages.tif") == "TOO_MANY_PIXELS"
        small = [Image.new("1", (10, 10)), Image.new("1", (300, 300))]
        fitting = encoded(small[0], "TIFF", save_all=True, append_images=small[1:])
        accepted = await upload_stream(live, fitting, "fits.tif")
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["media"]["metadata"]["frames"] == 2
