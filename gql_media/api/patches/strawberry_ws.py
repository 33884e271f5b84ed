"""Strawberry's WebSocket protocol handlers, with our caps (always on) and lighter
(the ``strawberry_ws`` patch).

The caps of ``api.sockets.OpenSockets`` are a protection, on whatever ``GQL_MEDIA_PATCHES``
says: a socket past its key's cap is closed (4429) instead of acknowledged, and an
operation past the socket's or the key's cap gets an ``error`` message
(TOO_MANY_SUBSCRIPTIONS). Strawberry has no public hook that sees each operation start or
can close with a code of ours, so the handlers are subclassed. An operation that finds its
socket closed (the client left, or was cut off) is not logged as an error. A
graphql-transport-ws ``connection_init`` whose payload is ``null`` (the protocol allows
it; strawberry closes with 4400) counts as an empty one: no params, so no key.

The ``strawberry_ws`` patch: strawberry's graphql-transport-ws handler keeps its canceled
connection_init timeout task, which holds a CancelledError with its traceback and frames
for the life of every connection, a few KB each; here it is let go once the init has come.
Off, it is kept, as strawberry keeps it. The handler also starts ``direct_events`` for each
operation, when that patch is on.

Internals relied on (checked by ``tests/test_patches.py``):
``strawberry.subscriptions.protocols.graphql_transport_ws.handlers``'s
``BaseGraphQLTransportWSHandler`` (``handle_connection_init``, ``handle_subscribe``,
``handle_task_exception``, ``run_operation``, ``send_message``, ``operations``,
``connection_init_received``, ``connection_acknowledged``, ``view``,
``connection_init_timeout_task``, ``websocket``, ``context``) and
``strawberry.subscriptions.protocols.graphql_ws.handlers``' ``BaseGraphQLWSHandler``
(``handle_connection_init``, ``handle_start``, ``send_message``, ``tasks``,
``connection_acknowledged``); their message types; the view's
``graphql_transport_ws_handler_class`` and ``graphql_ws_handler_class``;
``strawberry.http.exceptions.WebSocketDisconnected``.
"""

from __future__ import annotations

from typing import Any, cast

from starlette.websockets import WebSocketDisconnected as StarletteDisconnected
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import ErrorMessage, StartMessage

from gql_media.api.context import Context
from gql_media.api.patches import direct_events, enabled
from gql_media.api.sockets import SocketRefused, sockets_of
from gql_media.api.trusted import DocumentRefused, TrustedDocuments, refusal_payload
from gql_media.settings import Settings


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler with the caps of ``OpenSockets``."""

    release_init_task = False  # the strawberry_ws patch
    direct_events = False  # the direct_events patch

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if message.get("payload", {}) is None:
            # the protocol allows a null payload (strawberry closes with 4400): no params,
            # so no key, as an empty payload
            message = ConnectionInitMessage(type="connection_init", payload={})
        try:
            await super().handle_connection_init(message)
        except SocketRefused as refused:
            await self.websocket.close(code=refused.close_code, reason=refused.code.value)
            return
        if self.release_init_task and self.connection_init_received:
            self.connection_init_timeout_task = None
        sockets_of(self.context).follow(self.context.request, self.operations)

    async def handle_task_exception(self, error: Exception) -> None:
        # an operation that finds its socket closed (the client left, or was cut off) is
        # not an error of the api's
        if not isinstance(error, WebSocketDisconnected | StarletteDisconnected):
            await super().handle_task_exception(error)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and message["id"] not in self.operations:
            refused = sockets_of(self.context).refusal(self.context.request, self.operations)
            if refused is not None:
                await self.send_message(
                    {"id": message["id"], "type": "error", "payload": [refused.formatted]}
                )
                return
            try:
                message = trusted_message(self.view, message)
            except DocumentRefused as error:
                await self.send_message(
                    {"id": message["id"], "type": "error", "payload": [refusal_payload(error)]}
                )
                return
        await super().handle_subscribe(message)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        if self.direct_events:  # in the operation's own task
            direct_events.follow(self, operation)
        await super().run_operation(operation)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """Strawberry's graphql-ws handler, with the caps of ``OpenSockets``."""

    async def handle_connection_init(self, message: LegacyInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketRefused as refused:
            payload = {"message": refused.message, "extensions": {"code": refused.code.value}}
            await self.send_message(cast(Any, {"type": "connection_error", "payload": payload}))
            await self.websocket.close(code=refused.close_code, reason=refused.code.value)
            return
        sockets_of(self.context).follow(self.context.request, self.tasks)

    async def handle_start(self, message: StartMessage) -> None:
        if self.connection_acknowledged and message["id"] not in self.tasks:
            refused = sockets_of(self.context).refusal(self.context.request, self.tasks)
            if refused is not None:
                await self.send_message(
                    ErrorMessage(type="error", id=message["id"], payload=refused.formatted)
                )
                return
            try:
                message = trusted_message(self.view, message)
            except DocumentRefused as error:
                payload = cast(Any, refusal_payload(error))
                await self.send_message(
                    ErrorMessage(type="error", id=message["id"], payload=payload)
                )
                return
        await super().handle_start(message)


def trusted_message(view: Any, message: Any) -> Any:
    """``message`` with the text of the trusted document its payload names by id
    (``api.trusted``), when the view has a manifest."""
    trusted: TrustedDocuments | None = getattr(view, "trusted", None)
    payload = message.get("payload")
    if trusted is None or not isinstance(payload, dict):
        return message
    resolved = trusted.resolve(payload)
    return message if resolved is payload else {**message, "payload": resolved}


def transport_handler(settings: Settings) -> type[TransportWSHandler]:
    """The graphql-transport-ws handler class for ``settings``' patches."""
    return type(
        "TransportWSHandler",
        (TransportWSHandler,),
        {
            "release_init_task": enabled(settings, "strawberry_ws"),
            "direct_events": enabled(settings, "direct_events"),
        },
    )
