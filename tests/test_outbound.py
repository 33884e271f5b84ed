"""Outbound requests to addresses from outside the configuration: only http(s), no internal
addresses unless allowed, the configured provider hosts trusted, every redirect re-checked."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gql_media.adapters import http
from gql_media.adapters.outbound import OutboundBlocked, OutboundGuard, guard_from
from gql_media.errors import ErrorCode
from tests.fakes import picture, serving


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://localhost:8000/x.png",
        "http://10.1.2.3/x.png",
        "http://192.168.0.10/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://0.0.0.0/x.png",
        "ftp://example.com/x.png",
        "file:///etc/passwd",
        "not a url",
    ],
)
async def test_internal_and_odd_urls_are_blocked(url: str) -> None:
    with pytest.raises(OutboundBlocked) as blocked:
        await OutboundGuard().check(url)
    assert blocked.value.code is ErrorCode.OUTBOUND_BLOCKED


async def test_public_addresses_pass_and_the_allow_list_opens_internal_ones() -> None:
    await OutboundGuard().check("https://93.184.216.34/image.png")
    guard = OutboundGuard(allow=["10.0.0.0/8", "images.internal"])
    await guard.check("http://10.20.30.40/x.png")
    await guard.check("http://images.internal/x.png")  # listed by name: not even resolved
    with pytest.raises(OutboundBlocked):
        await guard.check("http://192.168.1.1/x.png")
    trusted = guard_from([], "http://127.0.0.1:9999/v1", None)
    await trusted.check("http://127.0.0.1:1234/files/a.png")  # a configured provider's host


def files_app() -> Starlette:
    image = picture(32, 24, seed=1)

    async def file(request: Request) -> Response:
        return Response(image, media_type="image/png")

    async def redirect(request: Request) -> Response:
        return RedirectResponse(request.query_params["to"], status_code=302)

    return Starlette(routes=[Route("/a.png", file), Route("/redirect", redirect)])


async def test_redirects_are_checked_at_every_hop() -> None:
    async with serving(files_app()) as base, httpx.AsyncClient() as client:
        guard = guard_from([], base)  # the server's own host (127.0.0.1) is trusted
        same = await http.download(
            client, f"{base}/redirect?to=/a.png", max_bytes=10_000, guard=guard
        )
        assert (same.width, same.height) == (32, 24)
        port = base.rsplit(":", 1)[1]
        with pytest.raises(OutboundBlocked):  # "localhost" is loopback and not trusted
            await http.download(
                client,
                f"{base}/redirect?to=http://localhost:{port}/a.png",
                max_bytes=10_000,
                guard=guard,
            )
        with pytest.raises(OutboundBlocked):
            await http.download(
                client,
                f"{base}/redirect?to=http://169.254.169.254/latest/meta-data/",
                max_bytes=10_000,
                guard=guard,
            )
