"""The api's view of itself: ``/metrics``, ``/readyz``, and a middleware that counts HTTP
requests and open WebSockets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gql_media.domain import SYSTEM
from gql_media.errors import GqlMediaError
from gql_media.observability.metrics import ApiMetrics
from gql_media.runtime import Runtime
from gql_media.services import queue_info, stats

log = logging.getLogger(__name__)

READY_TIMEOUT = 2.0  # seconds each readiness check may take
SAMPLE_TIMEOUT = 2.0  # seconds the database and Redis get to answer a scrape


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: every metric of this process in Prometheus's text format."""
    runtime: Runtime = request.state.runtime
    metrics = runtime.deps.metrics
    await metrics.api.refresh(lambda: _sample(runtime, metrics.api))
    metrics.api.subscriptions.set(request.state.hub.subscriber_count)
    metrics.api.http_streams.set(request.state.sockets.streams)
    return Response(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _sample(runtime: Runtime, api: ApiMetrics) -> None:
    """Jobs per status and kind, and the queue's length, read side by side; what cannot be
    read now is left out (jobs) or NaN (queue depth) rather than shown stale."""
    await asyncio.gather(
        _count_jobs(runtime, api), _measure_queue(runtime, api), _measure_load(runtime, api)
    )


async def _count_jobs(runtime: Runtime, api: ApiMetrics) -> None:
    try:
        async with asyncio.timeout(SAMPLE_TIMEOUT):
            api.set_job_counts(await stats.job_counts(runtime.deps))
    except Exception as exc:
        log.warning("metrics: could not count jobs: %s", _describe(exc))
        api.jobs.clear()


async def _measure_queue(runtime: Runtime, api: ApiMetrics) -> None:
    try:
        async with asyncio.timeout(SAMPLE_TIMEOUT):
            api.queue_depth.set(await stats.queue_depth(runtime.deps))
    except Exception as exc:
        log.warning("metrics: could not read the queue's length: %s", _describe(exc))
        api.queue_depth.set(float("nan"))


async def _measure_load(runtime: Runtime, api: ApiMetrics) -> None:
    try:
        async with asyncio.timeout(SAMPLE_TIMEOUT):
            summary = await queue_info.summary(runtime.deps, SYSTEM)
    except Exception as exc:
        log.warning("metrics: could not read the queue's load: %s", _describe(exc))
        api.set_queue_load([])
        return
    now = datetime.now(UTC)
    api.set_queue_load(
        [
            (
                load.priority,
                load.queued,
                load.running,
                (now - load.oldest_queued_at).total_seconds() if load.oldest_queued_at else None,
            )
            for load in summary.priorities
        ]
    )


class CachedProbe:
    """``probe`` run at most once every ``interval`` seconds: callers meanwhile get its last
    outcome (returned, or its error raised again), so frequent readiness checks stay cheap."""

    def __init__(self, probe: Callable[[], Awaitable[None]], interval: float) -> None:
        self._probe = probe
        self._interval = interval
        self._lock = asyncio.Lock()
        self._at: float | None = None
        self._error: Exception | None = None

    async def __call__(self) -> None:
        async with self._lock:  # one probe at a time; who waited reuses its outcome
            now = time.monotonic()
            if self._at is None or now - self._at >= self._interval:
                try:
                    await self._probe()
                    self._error = None
                except Exception as exc:
                    self._error = exc
                self._at = time.monotonic()
            if self._error is not None:
                raise self._error.with_traceback(None)


async def readyz(request: Request) -> Response:
    """GET /readyz: 200 when the database and Redis answer and storage takes a write (a
    small file written and deleted, at most every GQL_MEDIA_STORAGE_PROBE_INTERVAL), 503
    when any does not; each check's status, reason and latency, every check bounded by
    READY_TIMEOUT."""
    runtime: Runtime = request.state.runtime
    storage_probe: CachedProbe = request.state.storage_probe
    database, redis, storage = await asyncio.gather(
        _check(lambda: _ping_database(runtime)),
        _check(runtime.redis.ping),
        _check(storage_probe),
    )
    checks = {"database": database, "redis": redis, "storage": storage}
    ready = all(check["status"] == "ok" for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


async def _ping_database(runtime: Runtime) -> None:
    async with runtime.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _check(probe: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"status": "ok"}
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await probe()
    except Exception as exc:  # any failure means not ready
        result = {"status": "error", "error": _describe(exc)}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, GqlMediaError):  # ours: its code and what went wrong
        return f"{exc.code.value}: {exc.message}"
    return type(exc).__name__


class ObserveRequests:
    """ASGI middleware: counts HTTP requests by route template and status, and the
    WebSockets being served. Costs a label lookup per request and nothing per message on a
    WebSocket."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = _api_metrics(scope)
        if api is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(api, scope, receive, send)
        else:
            api.websockets.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                api.websockets.dec()

    async def _http(self, api: ApiMetrics, scope: Scope, receive: Receive, send: Send) -> None:
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            api.count_request(scope["method"], _route(scope), status)


def _api_metrics(scope: Scope) -> ApiMetrics | None:
    """The metrics of the app serving ``scope``; None outside an HTTP or WebSocket request
    or before the lifespan has built them."""
    if scope["type"] not in ("http", "websocket"):
        return None
    runtime: Runtime | None = scope.get("state", {}).get("runtime")
    return runtime.deps.metrics.api if runtime is not None else None


def _route(scope: Scope) -> str:
    """The path template that matched (``/media/{key:path}``), never the raw path, so that
    the number of series stays bounded."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"
