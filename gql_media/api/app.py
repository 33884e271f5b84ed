"""The Starlette application: GraphQL over HTTP and WebSocket, media files and health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

from cross_web import HTTPException
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from gql_media.adapters.events import EventHub
from gql_media.api.context import Context, media_base_url
from gql_media.api.schema import build_schema
from gql_media.errors import ErrorCode
from gql_media.runtime import Runtime, open_runtime
from gql_media.services.catchup import run_catch_up
from gql_media.settings import Settings

log = logging.getLogger(__name__)


class GraphQLView(GraphQL[Context, None]):
    """Strawberry's ASGI view, answering malformed requests with JSON errors that have codes."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            build_schema(settings),
            connection_init_wait_timeout=timedelta(seconds=10),
        )
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as exc:
            response = JSONResponse(
                {
                    "errors": [
                        {"message": exc.reason, "extensions": {"code": ErrorCode.BAD_REQUEST}}
                    ]
                },
                status_code=exc.status_code,
            )
        await response(scope, receive, send)

    def parse_json(self, data: str | bytes) -> Any:
        parsed = super().parse_json(data)
        if not isinstance(parsed, dict | list):  # strawberry assumes an object (or a batch)
            raise HTTPException(400, "Expected a JSON object")
        return parsed

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        state = request.state
        return Context(
            deps=state.runtime.deps,
            hub=state.hub,
            request=request,
            response=response,
            media_base_url=media_base_url(self.settings.public_url, request),
        )


class MediaFiles(StaticFiles):
    """Stored media with long-lived caching: a URL's content never changes once published."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    checks: dict[str, str] = {}
    try:
        async with runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await runtime.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        await runtime.deps.storage.check()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


async def index(request: Request) -> Response:
    return RedirectResponse("/graphql")


def create_app(
    settings: Settings,
    *,
    background: Callable[[Runtime], AbstractAsyncContextManager[Any]] | None = None,
    fake_redis_server: Any | None = None,
) -> Starlette:
    """The api. ``background`` runs beside it for the app's lifetime (the embedded worker)."""
    storage_dir = settings.effective_storage_dir

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            runtime = await stack.enter_async_context(open_runtime(settings, fake_redis_server))
            await runtime.deps.storage.check()
            hub = EventHub(
                runtime.redis, settings.redis_namespace, queue_size=settings.subscriber_queue_size
            )
            await hub.start()
            stack.push_async_callback(hub.stop)
            if settings.event_catchup_interval:
                catching_up = asyncio.create_task(
                    run_catch_up(runtime.deps, hub, settings.event_catchup_interval),
                    name="gql-media-event-catch-up",
                )
                stack.push_async_callback(_cancel, catching_up)
            if background is not None:
                await stack.enter_async_context(background(runtime))
            yield {"runtime": runtime, "hub": hub}

    view = GraphQLView(settings)
    return Starlette(
        debug=settings.debug,
        routes=[
            Route("/", index),
            Route("/graphql", view, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", view),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Mount("/media", MediaFiles(directory=storage_dir, check_dir=False), name="media"),
        ],
        lifespan=lifespan,
    )
