"""GraphQL subscriptions over HTTP: the graphql-sse protocol's distinct connections mode
(``Accept: text/event-stream``, GET or POST) and Apollo's multipart subscriptions
(``Accept: multipart/mixed;subscriptionSpec=1.0``).

Strawberry's view serves both (its ``graphql-sse`` and ``multipart-subscription``
protocols, ``strawberry.http.streaming``): the operation runs through the same schema,
context and principal as any request, and a subscription's events come from the same hub
and shared results as a WebSocket's. What the api adds: a stream is counted for its owner
while it is open, beside the owner's WebSockets (``OpenSockets.open_stream``: the caps
``max_streams_per_key`` and ``max_subscriptions_per_key``), which the metrics show; a stream
past a cap is answered 429 TOO_MANY_SUBSCRIPTIONS before anything runs, and the streams of
a key revoked while they are open are ended as its sockets are closed. The stream ends
when its operation completes (a job's terminal state), or when the client leaves:
Starlette's streaming response watches for the disconnect and closes the subscription.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection
from starlette.types import Message, Receive, Scope, Send
from strawberry.http.streaming import MultipartSubscriptionTransport, SSETransport
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)

from gql_media.api.errors import error_response, unauthenticated
from gql_media.api.security import header
from gql_media.api.sockets import OpenSockets, OpenStream, owner_of
from gql_media.domain import Principal
from gql_media.errors import ErrorCode
from gql_media.services.auth import Authenticator, bearer, hash_key

# what strawberry's view serves: the two WebSocket protocols and the two HTTP streams
PROTOCOLS = (
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
    GRAPHQL_SSE_PROTOCOL,
)
# the transports strawberry picks a stream's by, from the Accept header; they hold no
# state (their heartbeat interval only), so one of each serves every request
_TRANSPORTS = (MultipartSubscriptionTransport(), SSETransport())

ASGIResponder = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_stream(accept: str) -> bool:
    """Whether strawberry's view answers a request with this Accept header as a stream
    (parsed only when it names a stream's media type: every request asks)."""
    lowered = accept.lower()
    if "text/event-stream" not in lowered and "multipart/mixed" not in lowered:
        return False
    return any(transport.accepts(accept) for transport in _TRANSPORTS)


async def serve_stream(
    scope: Scope, receive: Receive, send: Send, principal: Principal, respond: ASGIResponder
) -> None:
    """Answer a streaming request with ``respond``, counted for its owner while it lasts
    (429 TOO_MANY_SUBSCRIPTIONS past the owner's caps), and ended when its key is revoked:
    the response then stops where it is (a client sees the stream end without ``complete``).
    """
    state = scope["state"]
    sockets: OpenSockets = state["sockets"]
    authenticator: Authenticator = state["auth"]
    key = bearer(header(scope, b"authorization"))
    digest = hash_key(key) if key and authenticator.required else None
    started = False

    async def tracked(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    ended = False

    def end() -> None:
        nonlocal ended
        ended = True
        responding.cancel()

    stream = OpenStream(owner_of(HTTPConnection(scope), principal.key_id), digest, end)
    refused = sockets.open_stream(stream)
    if refused is not None:
        response = error_response(ErrorCode.TOO_MANY_SUBSCRIPTIONS, refused.message, 429)
        await response(scope, receive, send)
        return
    state["stream"] = True  # subscriptions may run (see ``refuse_subscription_over_http``)
    responding = asyncio.ensure_future(respond(scope, receive, tracked))
    try:
        await responding
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not ended or (current is not None and current.cancelling()):
            raise  # the server is stopping, or the client left
        if started:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await unauthenticated()(scope, receive, send)
    finally:
        responding.cancel()
        sockets.close_stream(stream)
