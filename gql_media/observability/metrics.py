"""Prometheus metrics of one process, each ``Metrics`` on a registry of its own.

Nothing here is global: two apps (or an app and a worker) in one process keep their counts
apart, and the embedded ``gql-media serve`` shows its worker's metrics on the api's
``/metrics`` because api and worker share the process's one ``Metrics``.

Workers record job and provider figures as they happen. The api's figures that live
elsewhere (jobs per status in the database, the queue's length in Redis) are read when
scraped, at most once a second however often that is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from gql_media.domain import JobKind, JobStatus

log = logging.getLogger(__name__)

# A job waits milliseconds while workers idle and minutes when they are busy.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class WorkerMetrics:
    """What workers record while they run jobs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_seconds = Histogram(
            "gql_media_job_queue_seconds",
            "Seconds from a job being due (created, or its retry's backoff over) to a worker "
            "claiming it",
            ["kind", "provider"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.run_seconds = Histogram(
            "gql_media_job_run_seconds",
            "Seconds from a worker claiming a job to the end of that attempt, by outcome",
            ["kind", "provider", "outcome"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.provider_seconds = Histogram(
            "gql_media_provider_seconds",
            "Seconds one call to an image provider took, failed calls included",
            ["provider"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.provider_errors = Counter(
            "gql_media_provider_errors",
            "Job attempts that ended in a provider or processing error, by error code",
            ["provider", "code"],
            registry=registry,
        )

    def attempt(self, kind: str, provider: str, due: datetime, started: datetime | None) -> Attempt:
        """Record how long a just claimed job waited; the result times the attempt."""
        if started is not None:
            waited = (_aware(started) - _aware(due)).total_seconds()
            self.queue_seconds.labels(kind, provider).observe(max(waited, 0.0))
        return Attempt(self, kind, provider)

    @contextlib.contextmanager
    def provider_call(self, provider: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.provider_seconds.labels(provider).observe(time.perf_counter() - started)

    def provider_error(self, provider: str, code: str) -> None:
        self.provider_errors.labels(provider, code).inc()


class Attempt:
    """One run of a job on a worker, timed from its claim."""

    __slots__ = ("_metrics", "_kind", "_provider", "_started")

    def __init__(self, metrics: WorkerMetrics, kind: str, provider: str) -> None:
        self._metrics = metrics
        self._kind = kind
        self._provider = provider
        self._started = time.perf_counter()

    def ended(self, outcome: str) -> None:
        elapsed = time.perf_counter() - self._started
        self._metrics.run_seconds.labels(self._kind, self._provider, outcome).observe(elapsed)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ApiMetrics:
    """What an api process records and samples."""

    def __init__(self, registry: CollectorRegistry, max_age: float = 1.0) -> None:
        self.jobs = Gauge(
            "gql_media_jobs",
            "Jobs by status and kind, counted in the database when scraped",
            ["status", "kind"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "gql_media_queue_depth",
            "Entries on the arq queue (ZCARD): due jobs, deferred retries and webhooks",
            registry=registry,
        )
        self.queue_jobs = Gauge(
            "gql_media_queue_jobs",
            "Jobs waiting (QUEUED) and running by priority, counted in the database when scraped",
            ["priority", "status"],
            registry=registry,
        )
        self.queue_oldest_wait = Gauge(
            "gql_media_queue_oldest_wait_seconds",
            "How long the longest waiting due job of each priority has waited",
            ["priority"],
            registry=registry,
        )
        self.websockets = Gauge(
            "gql_media_active_websockets",
            "WebSocket connections this api process is serving",
            registry=registry,
        )
        self.http_streams = Gauge(
            "gql_media_active_http_streams",
            "GraphQL operations streamed over HTTP (graphql-sse, multipart) this api process "
            "is serving",
            registry=registry,
        )
        self.subscriptions = Gauge(
            "gql_media_active_subscriptions",
            "GraphQL subscriptions (jobUpdated, jobEvents) this api process is serving",
            registry=registry,
        )
        self.http_requests = Counter(
            "gql_media_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self._max_age = max_age
        self._sampled_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, sample: Callable[[], Awaitable[None]]) -> None:
        """Run ``sample`` unless it ran less than ``max_age`` seconds ago; concurrent scrapes
        share one run."""
        async with self._lock:
            now = time.monotonic()
            if self._sampled_at is not None and now - self._sampled_at < self._max_age:
                return
            try:
                await sample()
            finally:
                self._sampled_at = time.monotonic()

    def set_job_counts(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Every status and kind, 0 where the database has none."""
        values = {(status.value, kind.value): 0 for status in JobStatus for kind in JobKind}
        values.update(counts)
        for (status, kind), count in values.items():
            self.jobs.labels(status, kind).set(count)

    def set_queue_load(self, loads: Sequence[tuple[int, int, int, float | None]]) -> None:
        """(priority, queued, running, oldest wait in seconds) for the priorities that have
        unfinished jobs; the others' series go."""
        self.queue_jobs.clear()
        self.queue_oldest_wait.clear()
        for priority, queued, running, oldest in loads:
            self.queue_jobs.labels(str(priority), "QUEUED").set(queued)
            self.queue_jobs.labels(str(priority), "RUNNING").set(running)
            self.queue_oldest_wait.labels(str(priority)).set(oldest or 0.0)

    def count_request(self, method: str, route: str, status: int) -> None:
        method = method if method in HTTP_METHODS else "OTHER"
        self.http_requests.labels(method, route, str(status)).inc()


class Metrics:
    """The metrics of one process. Api series are registered on first use, so a worker's
    endpoint shows only what a worker records."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.worker = WorkerMetrics(self.registry)
        self._api: ApiMetrics | None = None

    @property
    def api(self) -> ApiMetrics:
        if self._api is None:
            self._api = ApiMetrics(self.registry)
        return self._api

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


@contextlib.asynccontextmanager
async def serving(metrics: Metrics, host: str, port: int) -> AsyncIterator[None]:
    """Serve ``metrics`` over HTTP on ``host:port`` while the block runs (port 0: not at all).

    prometheus_client's server answers from a thread of its own, so a scrape never waits on
    the event loop, however busy the jobs keep it. A port already taken (another worker on
    the same host) is logged and the worker runs on without it.
    """
    server: tuple[WSGIServer, Thread] | None = None
    if port:
        try:
            server = start_http_server(port, host, registry=metrics.registry)
        except OSError as exc:
            log.warning("worker metrics are not served on %s:%d: %s", host, port, exc)
        else:
            log.info("worker metrics at http://%s:%d/metrics", host, port)
    try:
        yield
    finally:
        if server is not None:
            httpd, thread = server
            await asyncio.to_thread(httpd.shutdown)  # waits out its poll interval
            httpd.server_close()
            thread.join()
