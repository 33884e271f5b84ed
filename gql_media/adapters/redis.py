"""Redis clients: a server at a URL, the master that Redis Sentinel names, or the in-process
stand-in of the embedded mode. Every client of the api and the workers is made here."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from typing import Any, cast

from arq.connections import ArqRedis
from fakeredis import FakeServer
from fakeredis.aioredis import FakeAsyncRedisConnection
from pydantic import SecretStr
from redis.asyncio import ConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from gql_media.redis_settings import RedisConnectionSettings

# seconds to open a connection (to Redis or a sentinel); a sentinel's answer, too
CONNECT_TIMEOUT = 2.0
# seconds an idle pooled connection may sit before it is checked with a PING on next use
HEALTH_CHECK_INTERVAL = 15


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """The master that the sentinels at ``sentinels`` know as ``master``, and what to log in
    with: ``username``/``password``/``db`` on the master, ``sentinel_password`` on the
    sentinels."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    username: str | None = None
    password: str | None = None
    db: int = 0
    sentinel_password: str | None = None


def target(settings: RedisConnectionSettings) -> str | SentinelTarget | None:
    """Where ``settings`` say Redis is: a URL, the sentinels, or None (the stand-in)."""
    if not settings.redis_sentinels:
        return settings.redis_url
    return SentinelTarget(
        sentinels=tuple(settings.redis_sentinel_addresses),
        master=settings.redis_sentinel_master,
        username=settings.redis_username,
        password=_secret(settings.redis_password),
        db=settings.redis_db,
        sentinel_password=_secret(settings.redis_sentinel_password),
    )


def dump_call(data: dict[str, Any]) -> bytes:
    """arq's ``job_serializer`` here: the call arq stores for a job (and the result it would
    keep) as JSON, which the enqueue script of ``adapters.arq_patch`` writes too. What JSON
    cannot hold (an exception in a failed job's result) is kept as its ``repr``."""
    return json.dumps(data, default=repr, separators=(",", ":")).encode()


def load_call(raw: bytes) -> Any:
    """arq's ``job_deserializer`` here: JSON; an entry queued by a version that stored
    arq's default pickle is read as such (Redis is this service's own store)."""
    if raw[:1] == b"{":
        return json.loads(raw)
    return pickle.loads(raw)


def _calls_as_json(client: ArqRedis) -> ArqRedis:
    client.job_serializer = dump_call
    client.job_deserializer = load_call
    return client


def connect(where: str | SentinelTarget | None, fake_server: Any | None = None) -> ArqRedis:
    """A client for ``where`` (a URL or a ``SentinelTarget``), or for ``fake_server`` (a
    ``fakeredis.FakeServer``) when it is None.

    The client stores arq's calls as JSON (``dump_call``). Through Sentinel, each new
    connection asks the sentinels for the master's address, and a connection to a master
    that was demoted is dropped at its first refused write: the client follows a failover
    by itself. Nothing is sent until the first command: building a client never blocks.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "socket_keepalive": True,
    }
    if isinstance(where, SentinelTarget):
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(where.sentinels),
            sentinel_kwargs={
                "socket_connect_timeout": CONNECT_TIMEOUT,
                "socket_timeout": CONNECT_TIMEOUT,
                "socket_keepalive": True,
                "password": where.sentinel_password,
            },
            username=where.username,
            password=where.password,
            db=where.db,
            **options,
        )
        return _calls_as_json(
            cast(ArqRedis, sentinel.master_for(where.master, redis_class=ArqRedis))
        )
    if where is not None:
        return _calls_as_json(ArqRedis(connection_pool=ConnectionPool.from_url(where, **options)))
    server = fake_server if fake_server is not None else FakeServer()
    return _calls_as_json(
        ArqRedis(
            connection_pool=ConnectionPool(
                connection_class=cast(Any, FakeAsyncRedisConnection), server=server
            )
        )
    )


def new_fake_server() -> Any:
    """One in-process Redis shared by every client of the embedded mode."""
    return FakeServer()


async def close(client: ArqRedis) -> None:
    """Close the client and its pool (a client built on a given pool leaves it open), and
    its connections to the sentinels."""
    pool = client.connection_pool
    await client.aclose(close_connection_pool=True)
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()
