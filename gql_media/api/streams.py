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
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import HTTPConnection
from starlette.types import Message, Receive, Scope, Send
from strawberry.http.parse_content_type import parse_content_type
from strawberry.http.streaming import (
    HTTPStreamTransport,
    MultipartSubscriptionTransport,
    SSETransport,
)
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)

from gql_media.api.errors import error_response, unauthenticated
from gql_media.api.negotiation import q_weight
from gql_media.api.sockets import OpenSockets, OpenStream, owner_of
from gql_media.domain import Principal
from gql_media.errors import ErrorCode

# what strawberry's view serves: the two WebSocket protocols and the two HTTP streams
PROTOCOLS = (
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
    GRAPHQL_SSE_PROTOCOL,
)


class MultipartStreams(MultipartSubscriptionTransport):
    """Strawberry's multipart subscriptions, asked by every request whether its Accept
    header wants them: only a header that names the media type is parsed (strawberry parses
    each one with ``email.message``, about 2% of a small request's CPU)."""

    def accepts(self, accept: str) -> bool:
        return "multipart/mixed" in accept.lower() and super().accepts(accept)


class EventStreams(SSETransport):
    """Strawberry's server-sent events, with the same check first as ``MultipartStreams``."""

    def accepts(self, accept: str) -> bool:
        return "text/event-stream" in accept.lower() and super().accepts(accept)


# the view's stream transports (``stream_transport_classes_by_protocol``)
TRANSPORTS: Mapping[str, type[HTTPStreamTransport]] = {
    MULTIPART_SUBSCRIPTION_PROTOCOL: MultipartStreams,
    GRAPHQL_SSE_PROTOCOL: EventStreams,
}
# the transports strawberry picks a stream's by, from the Accept header; they hold no
# state (their heartbeat interval only), so one of each serves every request
_MULTIPART, _SSE = MultipartStreams(), EventStreams()

ASGIResponder = Callable[[Scope, Receive, Send], Awaitable[None]]


STREAM_TYPES = ("text/event-stream", "multipart/mixed")
# what a client that may also take a single JSON answer names (wildcards match it too)
JSON_TYPES = (
    "application/json",
    "application/graphql-response+json",
    "application/graphql+json",
    "application/*",
    "*/*",
)


def is_stream(accept: str) -> bool:
    """Whether a request with this Accept header is answered as a stream: it asks for
    Apollo's multipart subscriptions (``subscriptionSpec``: Apollo adds it for subscriptions
    only), or for server-sent events with a weight above every JSON type it names. urql
    names server-sent events, and JSON as highly, for every query: those get one JSON
    answer; graphql-sse's client, and urql for a subscription, name only streams. Parsed
    only when it names a stream's media type (every request asks)."""
    if not _names_a_stream(accept):
        return False
    if _MULTIPART.accepts(accept):
        return True
    if not _SSE.accepts(accept):
        return False
    stream = json = 0.0
    for part in accept.split(","):
        media_type, params = parse_content_type(part)
        media_type = media_type.lower()
        if media_type == "text/event-stream":
            stream = max(stream, q_weight(params))
        elif media_type in JSON_TYPES:
            json = max(json, q_weight(params))
    return stream > json


def without_streams(scope: Scope, accept: str) -> Scope:
    """``scope`` with the stream types taken out of its Accept header, for a request
    ``is_stream`` answers with JSON: strawberry's view would stream for any of them."""
    if not _names_a_stream(accept):
        return scope
    kept = [
        part
        for part in accept.split(",")
        if parse_content_type(part)[0].lower() not in STREAM_TYPES and part.strip()
    ]
    value = ",".join(kept) or "application/json"
    headers = [(name, v) for name, v in scope["headers"] if name != b"accept"]
    return {**scope, "headers": [*headers, (b"accept", value.encode("latin-1"))]}


def _names_a_stream(accept: str) -> bool:
    lowered = accept.lower()
    return "text/event-stream" in lowered or "multipart/mixed" in lowered


async def serve_stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    caller: tuple[Principal, str | None],
    respond: ASGIResponder,
) -> None:
    """Answer a streaming request of ``caller`` (its principal, and the hash of the API key
    behind it, by which it is checked again) with ``respond``, counted for its owner while it lasts
    (429 TOO_MANY_SUBSCRIPTIONS past the owner's caps), and ended when its key is revoked:
    the response then stops where it is (a client sees the stream end without ``complete``).
    """
    state = scope["state"]
    sockets: OpenSockets = state["sockets"]
    principal, digest = caller  # digest: the hash of the key (behind a token) to recheck
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

    stream = OpenStream(owner_of(HTTPConnection(scope), principal), digest, end)
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
