"""Process start-up: builds engines, clients and the ``Deps`` of a process, and closes them.

Used by the api's lifespan and the worker's start-up; nothing here runs at import.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.events import EventPublisher
from gql_media.adapters.isolation import Limits, ProcessPool, cpu_seconds_for
from gql_media.adapters.providers.registry import build_providers
from gql_media.adapters.queue import JobQueue
from gql_media.adapters.ratelimit import RateLimiter
from gql_media.adapters.storage_factory import build_storage
from gql_media.db.engine import create_engine, create_sessionmaker
from gql_media.services.deps import Deps
from gql_media.services.new_jobs import job_inserter
from gql_media.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    redis: ArqRedis
    deps: Deps
    fake_redis_server: Any | None

    def new_redis(self) -> ArqRedis:
        """Another client on the same Redis (or the same in-process stand-in)."""
        return redis_adapter.connect(redis_adapter.target(self.settings), self.fake_redis_server)


@asynccontextmanager
async def open_runtime(
    settings: Settings, fake_redis_server: Any | None = None
) -> AsyncIterator[Runtime]:
    """Everything a process needs, closed again on exit."""
    if not settings.redis_configured and fake_redis_server is None:
        fake_redis_server = redis_adapter.new_fake_server()
    engine = create_engine(
        settings.effective_database_url,
        pool_size=settings.database_pool_size,
        timeout=settings.database_timeout,
        pgbouncer=settings.database_pgbouncer,
    )
    redis = redis_adapter.connect(redis_adapter.target(settings), fake_redis_server)
    storage = build_storage(settings)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    deps = Deps(
        settings=settings,
        sessions=create_sessionmaker(engine),
        engine=engine,
        autocommit=autocommit,
        job_inserts=job_inserter(engine, autocommit, settings),
        storage=storage,
        publisher=EventPublisher(redis, settings.redis_namespace),
        queue=JobQueue(
            redis,
            settings.redis_namespace,
            group_cap=settings.max_running_per_group,
            scripts="arq_scripts" in settings.patches_on,
        ),
        providers=build_providers(settings),
        limiter=RateLimiter(redis, settings.redis_namespace),
        processes=media_processes(settings),
    )
    try:
        yield Runtime(settings, engine, redis, deps, fake_redis_server)
    finally:
        if deps.processes is not None:
            await deps.processes.aclose()
        for provider in deps.providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:  # providers holding HTTP clients
                await close()
        close_storage = getattr(storage, "close", None)
        if close_storage is not None:
            close_storage()
        await redis_adapter.close(redis)
        await engine.dispose()


def media_processes(settings: Settings) -> ProcessPool | None:
    """The pool processing jobs run their media work in (children start with the first
    job); None with ``process_isolation`` off. One child per job a worker runs at once, at
    most one per CPU: more would only share the same cores."""
    if not settings.process_isolation:
        return None
    memory = settings.process_memory_limit_mb * 1024 * 1024 or None
    return ProcessPool(
        size=min(settings.worker_concurrency, os.cpu_count() or 1),
        limits=Limits(memory_bytes=memory, cpu_seconds=cpu_seconds_for(settings.job_timeout)),
    )
