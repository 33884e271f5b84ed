"""Media bounds against the running service: an animation is bounded by the pixels of all
its frames, a video by the size of its frames and its duration, whatever its header says."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from gql_media.adapters import redis as redis_adapter
from gql_media.settings import Settings
from tests.media import mjpeg_mkv, sparse_gif
from tests.support import LiveServer, start_server
from tests.test_media_api import PROCESS_VIDEO, follow, upload_multipart, upload_stream


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
    settings = settings_factory(max_video_pixels=100_000)
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
