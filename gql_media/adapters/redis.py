"""Redis clients: a real server, or the in-process stand-in of the embedded mode."""

from __future__ import annotations

from typing import Any, cast

from arq.connections import ArqRedis
from fakeredis import FakeServer
from fakeredis.aioredis import FakeAsyncRedisConnection
from redis.asyncio import ConnectionPool


def connect(url: str | None, fake_server: Any | None = None) -> ArqRedis:
    """A client for ``url``, or for ``fake_server`` (a ``fakeredis.FakeServer``) when url is None.

    Nothing is sent until the first command: building a client never blocks.
    """
    if url is not None:
        pool = ConnectionPool.from_url(
            url, socket_connect_timeout=2, health_check_interval=15, socket_keepalive=True
        )
        return ArqRedis(connection_pool=pool)
    server = fake_server if fake_server is not None else FakeServer()
    return ArqRedis(
        connection_pool=ConnectionPool(
            connection_class=cast(Any, FakeAsyncRedisConnection), server=server
        )
    )


def new_fake_server() -> Any:
    """One in-process Redis shared by every client of the embedded mode."""
    return FakeServer()


async def close(client: ArqRedis) -> None:
    """Close the client and its pool (a client built on a given pool leaves it open)."""
    await client.aclose(close_connection_pool=True)
