"""The Starlette application: GraphQL over HTTP and WebSocket, media files and health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any, cast

import orjson
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Match, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from gql_media.adapters.events import EventHub
from gql_media.adapters.providers.replicate_api import WEBHOOK_PATH
from gql_media.api.context import Context
from gql_media.api.dashboard import dashboard_routes
from gql_media.api.downloads import media_route, static_files
from gql_media.api.errors import error_response, unauthenticated
from gql_media.api.fanout import SharedJobs
from gql_media.api.graphiql import GRAPHIQL_ASSETS, offline_graphiql
from gql_media.api.negotiation import finish, is_request_error, mark_request_error, refused_status
from gql_media.api.observability import CachedProbe, ObserveRequests, metrics_endpoint, readyz
from gql_media.api.patches.strawberry_http import HTTPException, ReadingView
from gql_media.api.patches.strawberry_ws import LegacyWSHandler, transport_handler
from gql_media.api.positions import QueuePositions
from gql_media.api.schema import build_schema
from gql_media.api.security import connection_key, header, origin_allowed
from gql_media.api.sockets import (
    REVOKED_CLOSE,
    OpenSockets,
    SocketRefused,
    owner_of,
    sockets_of,
)
from gql_media.api.streams import (
    PROTOCOLS,
    TRANSPORTS,
    is_stream,
    serve_stream,
    without_streams,
)
from gql_media.api.trusted import DocumentRefused, refusal_payload, trusted_documents
from gql_media.api.uploads import upload_route
from gql_media.api.webhooks_in import replicate_webhook
from gql_media.domain import decimal
from gql_media.errors import CredentialRefused, ErrorCode
from gql_media.runtime import Runtime, open_runtime
from gql_media.services.auth import Authenticator, bearer
from gql_media.services.catchup import run_catch_up
from gql_media.settings import Settings

log = logging.getLogger(__name__)


class GraphQLView(ReadingView):
    """Strawberry's ASGI view, answering malformed requests with JSON errors that have codes."""

    graphql_ws_handler_class = LegacyWSHandler
    stream_transport_classes_by_protocol = TRANSPORTS

    def __init__(self, settings: Settings) -> None:
        self.trusted = trusted_documents(settings)
        super().__init__(
            build_schema(settings),
            connection_init_wait_timeout=timedelta(seconds=settings.connection_init_timeout),
            multipart_uploads_enabled=True,
            # strawberry checks a WebSocket handshake's Origin on its own as well: the origins
            # allowed to call the api from a browser may also open its WebSockets
            allowed_origins=settings.cors_origins,
            subscription_protocols=PROTOCOLS,
        )
        self.max_subscriptions_per_connection = settings.max_subscriptions_per_connection
        self.graphql_transport_ws_handler_class = transport_handler(settings)
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not origin_allowed(scope, self.settings):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 4403, "reason": "Forbidden origin"})
            else:
                await error_response(ErrorCode.FORBIDDEN_ORIGIN, "this origin is not allowed", 403)(
                    scope, receive, send
                )
            return
        if scope["type"] == "websocket":
            websocket = WebSocket(scope, receive=receive, send=send)
            try:
                await self.run(websocket)
            finally:
                websocket.state.sockets.discard(websocket)
            return
        auth: Authenticator = scope["state"]["auth"]
        try:
            found = await auth.identify(bearer(header(scope, b"authorization")))
        except CredentialRefused as exc:  # a watch token that is forged or expired
            await error_response(exc.code, exc.message, 401)(scope, receive, send)
            return
        if found is None:
            # GraphiQL's page is the one thing served without a key; it is answered here,
            # so no document can run without a principal
            page = self._ide_page(scope)
            await (page if page is not None else unauthenticated())(scope, receive, send)
            return
        principal, digest = found  # digest: the key's hash, by which streams are rechecked
        scope["state"]["principal"] = principal
        refused = self._refused_body(scope)
        if refused is not None:
            await refused(scope, receive, send)
        elif is_stream(accept := header(scope, b"accept")):
            await serve_stream(scope, receive, send, (principal, digest), self._respond)
        else:
            await self._respond(without_streams(scope, accept), receive, send)

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._answer(scope, receive)
        if response is not None:
            await response(scope, receive, send)

    def _body_limit(self, scope: Scope) -> tuple[int, ErrorCode]:
        """How many bytes the request may carry, and the code of a refusal."""
        if _is_multipart(scope):
            return self.settings.max_upload_bytes + MULTIPART_SLACK, ErrorCode.MEDIA_TOO_LARGE
        return self.settings.max_body_bytes, ErrorCode.REQUEST_TOO_LARGE

    def _refused_body(self, scope: Scope) -> Response | None:
        """The answer to a request refused before its body is read, or None."""
        if _is_multipart(scope) and not _has_preflight_header(scope):
            # A form post is a "simple" request a hostile page can send cross-site; a custom
            # header makes browsers ask first (CORS preflight), which such a page fails.
            return error_response(
                ErrorCode.PREFLIGHT_REQUIRED,
                "multipart requests need the header GraphQL-Require-Preflight: 1",
                400,
            )
        limit, code = self._body_limit(scope)
        declared = decimal(header(scope, b"content-length"))
        if (declared is not None and declared > limit) or len(scope["query_string"]) > limit:
            return _too_large(code, limit)
        return None

    async def _answer(self, scope: Scope, receive: Receive) -> Response | None:
        """Run the request with its body capped; None when the client left mid-body."""
        limit, code = self._body_limit(scope)
        request = Request(scope, receive=_capped(receive, limit))
        try:
            return finish(request, await self.run(request))
        except BodyTooLarge:
            return _too_large(code, limit)
        except ClientDisconnect:
            return None  # the client left (or was cut off) mid-body: nobody to answer
        except DocumentRefused as exc:  # a document id the manifest lacks
            return JSONResponse({"errors": [refusal_payload(exc)]})
        except HTTPException as exc:
            status, headers = refused_status(scope["method"], exc.__cause__)
            error = {"message": exc.reason, "extensions": {"code": ErrorCode.BAD_REQUEST}}
            response = JSONResponse(
                {"errors": [error]},
                status_code=status if exc.status_code == 400 else exc.status_code,
                headers=headers,
            )
            return finish(request, response)
        finally:
            await request.close()  # removes the spooled files of a multipart request

    def _ide_page(self, scope: Scope) -> Response | None:
        """GraphiQL's page for a GET that asks for HTML and carries no document (decided on
        the parsed query string, as strawberry decides whether to run one); else None."""
        if not self.graphql_ide or scope["method"] != "GET":
            return None
        if "text/html" not in header(scope, b"accept"):
            return None
        if "query" in QueryParams(scope.get("query_string", b"")):
            return None
        return HTMLResponse(self.graphql_ide_html)

    @property
    def graphql_ide_html(self) -> str:
        """Strawberry's GraphiQL page with its assets served from the package, not a CDN."""
        return offline_graphiql(super().graphql_ide_html)

    async def process_result(self, request: Request, result: ExecutionResult) -> Any:
        processed = await super().process_result(request, result)
        if is_request_error(result.data, result.errors):
            mark_request_error(request, cast(dict[str, Any], processed))
        return processed

    def encode_json(self, data: object) -> str:
        """orjson, several times faster than json for every response and every WebSocket
        message; text, since WebSocket clients expect text frames."""
        try:
            return orjson.dumps(data).decode()
        except TypeError:
            return str(super().encode_json(data))

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        state = request.state
        return Context(
            deps=state.runtime.deps,
            hub=state.hub,
            positions=state.positions,
            shared_jobs=state.shared_jobs,
            request=request,
            response=response,
            public_url=self.settings.public_url,
            auth=state.auth,
            caller=getattr(state, "principal", None),
            stream=getattr(state, "stream", False),
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """The API key (or watch token) comes in the connection_init payload (browsers
        cannot set headers on a WebSocket), or in the upgrade request's Authorization
        header; a missing, wrong or revoked one closes the socket with 4403 (reason
        WATCH_TOKEN_INVALID or WATCH_TOKEN_EXPIRED for such a token)."""
        key = connection_key(context.connection_params) or bearer(
            context.request.headers.get("authorization")
        )
        try:
            found = await context.auth.identify(key)
        except CredentialRefused as exc:
            raise SocketRefused(REVOKED_CLOSE, exc.code, exc.message) from exc
        if found is None:
            raise ConnectionRejectionError()
        context.caller, digest = found
        # counted for its owner while open; past the caps SocketRefused closes it
        sockets_of(context).admit(context.request, owner_of(context.request, found[0]), digest)
        return cast(UnsetType, UNSET)


MULTIPART_SLACK = 1 << 20  # the operations, map and part headers around the file
PREFLIGHT_HEADERS = (b"graphql-require-preflight", b"apollo-require-preflight", b"x-requested-with")


class BodyTooLarge(Exception):
    """The request body went past its cap while it streamed in."""


def _is_multipart(scope: Scope) -> bool:
    return header(scope, b"content-type").lower().startswith("multipart/form-data")


def _has_preflight_header(scope: Scope) -> bool:
    return any(header(scope, name).strip() for name in PREFLIGHT_HEADERS)


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises BodyTooLarge once more than ``limit`` body bytes arrived, so
    an oversized upload is refused while it streams, not after."""
    received = 0

    async def capped() -> Any:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge
        return message

    return capped


def _too_large(code: ErrorCode, limit: int) -> JSONResponse:
    """A request body past its cap (comments and whitespace count), refused before it is
    parsed: uploads by GQL_MEDIA_MAX_UPLOAD_BYTES, the rest by GQL_MEDIA_MAX_BODY_BYTES."""
    return error_response(code, f"the request is larger than {limit} bytes", 413)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _lifespan(
    settings: Settings,
    background: Callable[[Runtime], AbstractAsyncContextManager[Any]] | None,
    fake_redis_server: Any | None,
) -> Callable[[Starlette], AbstractAsyncContextManager[dict[str, Any]]]:
    """What the api holds while it serves (the runtime, the event hub, the catch-up, auth,
    the open sockets, the storage probe), as the app's state."""

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
            auth = Authenticator(runtime.deps)
            if not auth.required:
                log.warning(
                    "auth is off (GQL_MEDIA_AUTH=off): anyone who can reach this api can use "
                    "it and see every job"
                )
            sockets = OpenSockets(settings)
            await stack.enter_async_context(sockets.rechecking(auth))
            positions = QueuePositions(
                runtime.deps, settings.queue_position_interval, settings.queue_position_batch
            )
            sending = asyncio.create_task(positions.run(), name="gql-media-queue-positions")
            stack.push_async_callback(_cancel, sending)
            yield {
                "runtime": runtime,
                "hub": hub,
                "positions": positions,
                "auth": auth,
                "shared_jobs": SharedJobs(),
                "sockets": sockets,
                "storage_probe": CachedProbe(
                    runtime.deps.storage.probe_write, settings.storage_probe_interval
                ),
            }

    return lifespan


def create_app(
    settings: Settings,
    *,
    background: Callable[[Runtime], AbstractAsyncContextManager[Any]] | None = None,
    fake_redis_server: Any | None = None,
) -> Starlette:
    """The api. ``background`` runs beside it for the app's lifetime (the embedded worker)."""
    view = GraphQLView(settings)
    graphql_ws = WebSocketRoute("/graphql", view)
    app = Api(
        graphql_ws,
        debug=settings.debug,
        routes=[
            *dashboard_routes(),
            Route("/graphql", view, methods=["GET", "POST"]),
            graphql_ws,
            upload_route(),
            Route(WEBHOOK_PATH, replicate_webhook, methods=["POST"]),
            Mount("/graphiql-assets", static_files(GRAPHIQL_ASSETS), name="graphiql"),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            media_route(settings),
        ],
        middleware=[Middleware(ObserveRequests), *_middleware(settings)],
        lifespan=_lifespan(settings, background, fake_redis_server),
    )
    app.graphql_view = view
    return app


class Api(Starlette):
    """Starlette, handing the GraphQL WebSockets straight to the view (counted by
    ObserveRequests): every layer between them is a suspended frame for the socket's whole
    life, about 2.5 KB a socket, and the error, exception and CORS middleware act on HTTP."""

    def __init__(self, graphql_ws: WebSocketRoute, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.graphql_view: GraphQLView | None = None  # the view serving /graphql
        self._graphql_ws_route = graphql_ws
        self._graphql_ws: ASGIApp = ObserveRequests(graphql_ws.app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            match, child_scope = self._graphql_ws_route.matches(scope)
            if match is Match.FULL:
                scope["app"] = self
                scope["router"] = self.router
                scope.update(child_scope)
                await self._graphql_ws(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _middleware(settings: Settings) -> list[Middleware]:
    """CORS for the origins allowed to call the api from a browser (none by default)."""
    if not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=settings.cors_allow_headers,
            max_age=600,
        )
    ]
