"""Slow and greedy clients, attacking a running api over raw sockets: requests sent by
halves, more connections than the api holds, more WebSockets and subscriptions than a key
may have, a revoked key's open sockets, and a WebSocket client that never reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gql_media.adapters import redis as redis_adapter
from tests.support import LiveServer, start_server

SLOW = {"header_timeout": 0.5, "body_timeout": 0.5, "body_idle_timeout": 0.5}


@asynccontextmanager
async def running(settings_factory: Any, **overrides: Any) -> AsyncIterator[LiveServer]:
    settings = settings_factory(**overrides)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        yield live


async def raw(live: LiveServer, data: bytes = b"") -> tuple[asyncio.StreamReader, Any]:
    """A plain TCP connection to the api that has sent ``data``."""
    host, port = live.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


def error_code(response: bytes) -> tuple[int, str]:
    """The status and the error code of one raw HTTP response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body)["errors"][0]["extensions"]["code"]


GRAPHQL_HEAD = (
    b"POST /graphql HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n"
)


async def test_half_sent_requests_are_cut_off_while_others_are_served(
    settings_factory: Any,
) -> None:
    async with running(settings_factory, **SLOW, body_min_rate=1_000_000) as live:
        halves = {
            "request line": b"POST /graph",
            "headers": b"POST /graphql HTTP/1.1\r\nHost: api\r\nContent-Ty",
            "body": GRAPHQL_HEAD + b'{"query": "{ __typ',
            "upload": (
                b"POST /uploads HTTP/1.1\r\nHost: api\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" + b"\0" * 4000
            ),
            "second request": (
                b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\nPOST /graphql HTTP/1.1\r\nHost"
            ),
        }
        slow = {name: await raw(live, data) for name, data in halves.items()}
        silent = await raw(live)
        served = await live.graphql("{ __typename }")  # meanwhile, a whole request is served
        assert served == {"data": {"__typename": "Query"}}
        received = {name: await reader.read() for name, (reader, _) in slow.items()}
        assert await silent[0].read() == b""  # sent nothing: closed without a word
        first, _, second = received.pop("second request").partition(b"HTTP/1.1 408")
        assert first.startswith(b"HTTP/1.1 200") and error_code(b"HTTP/1.1 408" + second) == (
            408,
            "REQUEST_TIMEOUT",
        )
        for name, response in received.items():
            assert error_code(response) == (408, "REQUEST_TIMEOUT"), name
        for _, writer in [*slow.values(), silent]:
            writer.close()


async def test_a_body_must_keep_a_minimum_rate(settings_factory: Any) -> None:
    """Bytes that keep coming, but too slowly for the body's size, are cut off too."""
    async with running(
        settings_factory, body_timeout=0.5, body_min_rate=100, body_idle_timeout=30
    ) as live:
        reader, writer = await raw(live, GRAPHQL_HEAD + b"{")

        async def drip() -> None:  # ten bytes a second: never idle, never enough
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        response = await reader.read()
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await dripping
        assert error_code(response) == (408, "REQUEST_TIMEOUT")
        writer.close()


async def test_oversized_headers_are_refused(settings_factory: Any) -> None:
    async with running(settings_factory, max_header_bytes=4096) as live:
        reader, writer = await raw(live, b"GET /healthz HTTP/1.1\r\nHost: api\r\n")
        for _ in range(10):  # 10 KB of headers, and more would follow
            writer.write(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        await writer.drain()
        assert error_code(await reader.read()) == (431, "HEADERS_TOO_LARGE")
        writer.close()


async def test_connections_past_the_cap_are_refused_until_slow_ones_go(
    settings_factory: Any,
) -> None:
    async with running(settings_factory, max_connections=6, header_timeout=2) as live:
        held = [await raw(live, b"GET /heal") for _ in range(6)]
        reader, writer = await raw(live)
        assert error_code(await reader.read()) == (503, "TOO_MANY_CONNECTIONS")
        writer.close()
        for reader, writer in held:  # cut off in their turn: their slots come free
            assert error_code(await reader.read()) == (408, "REQUEST_TIMEOUT")
            writer.close()
        response = await live.http.get("/healthz")
        assert response.status_code == 200
