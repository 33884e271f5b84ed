"""The dependencies every use case receives, built once per process at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gql_media.adapters.events import EventPublisher
from gql_media.adapters.isolation import ProcessPool
from gql_media.adapters.providers import ImageProvider
from gql_media.adapters.queue import JobQueue
from gql_media.adapters.ratelimit import RateLimiter
from gql_media.adapters.storage import Storage
from gql_media.observability.metrics import Metrics
from gql_media.services.inserts import RowInserter
from gql_media.settings import Settings


@dataclass(frozen=True, slots=True)
class Deps:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    # the engine of ``sessions``, for the hot paths that run Core statements on a
    # connection (cheaper than a session); ``autocommit`` is the same engine where every
    # statement commits by itself, without BEGIN/COMMIT round trips: for a use case that
    # writes with a single statement
    engine: AsyncEngine
    autocommit: AsyncEngine
    job_inserts: RowInserter  # INSERT of a new job, batched while others are out
    storage: Storage
    publisher: EventPublisher
    queue: JobQueue
    providers: Mapping[str, ImageProvider]
    limiter: RateLimiter
    # where processing jobs run their media work; None: in threads (isolation off)
    processes: ProcessPool | None
    metrics: Metrics = field(default_factory=Metrics)  # its own registry, not the global one
