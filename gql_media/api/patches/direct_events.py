"""Subscription events written straight to the socket (the ``direct_events`` patch).

Why: over graphql-transport-ws, each event of each subscriber goes through its task,
strawberry's and graphql-core's async generators, and a message built and encoded for it.
``DirectEvents`` writes the shared, already encoded ``next`` message (``shared_results``)
straight to the socket (``uvicorn_ws``'s ``send_texts_now``) while the subscription's task
waits for events and the socket takes writes. Whatever it cannot send that way (an error, a
result that needs awaiting, a full socket, a terminal event that must end the operation)
goes the usual way. Off (or with either of those two off), every event goes the usual way.

Internals relied on (checked by ``tests/test_patches.py``): strawberry's graphql-transport-ws
handler (``BaseGraphQLTransportWSHandler``) runs each operation in its own task through
``run_operation(operation)``, keeps its running ones in ``operations`` (by ``operation.id``)
and its socket in ``websocket``, an adapter holding starlette's ``WebSocket`` as ``ws``;
starlette's ``WebSocket._send`` (see ``uvicorn_ws.protocol_of``); the ``next`` message's
shape, ``{"id":…,"type":"next","payload":…}``, is the protocol's.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gql_media.adapters.events import Subscriber
from gql_media.api.fanout import remember, shared_job
from gql_media.api.patches.uvicorn_ws import LightWebSocketProtocol, protocol_of
from gql_media.domain import JobSnapshot

if TYPE_CHECKING:
    from gql_media.api.context import Context
    from gql_media.api.patches.shared_results import SharedEventExecution

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DirectTarget:
    """Where the events of one graphql-transport-ws operation may be written directly."""

    protocol: LightWebSocketProtocol
    operations: dict[str, Any]  # the connection's running operations, by id
    operation: Any  # strawberry's: it runs while ``operations`` maps its id to it
    prefix: bytes  # the ``next`` message up to its payload: {"id":…,"type":"next","payload":
    executor: SharedEventExecution | None = None  # the subscription's, once it is built

    def is_open(self) -> bool:
        return self.operations.get(self.operation.id) is self.operation


# set by the transport handler in the task of each operation it runs
DIRECT_TARGET: ContextVar[DirectTarget | None] = ContextVar("direct_target", default=None)


def direct_target() -> DirectTarget | None:
    """The current operation's target, once its executor is known; None when its events
    cannot be written directly (another protocol, another server)."""
    target = DIRECT_TARGET.get()
    return target if target is not None and target.executor is not None else None


class DirectEvents:
    """``Subscriber.direct`` for one subscription. It takes each newer version of a job
    (terminal ones only if ``terminal_too``: the others end the operation, which its own
    path does) and, once the event loop has run what is ready, writes every version taken
    meanwhile, the newest of each job, in one write. ``seen`` (job id → version sent) is
    shared with the subscription's own path, which gets back, in order, whatever could not
    be written this way."""

    __slots__ = ("_context", "_loop", "_seen", "_subscriber", "_taken", "_target", "_terminal_too")

    def __init__(
        self,
        target: DirectTarget,
        subscriber: Subscriber,
        context: Context,
        seen: dict[str, int],
        terminal_too: bool,
    ) -> None:
        self._target = target
        self._subscriber = subscriber
        self._context = context  # the socket's: where its jobs' media are fetched
        self._seen = seen
        self._terminal_too = terminal_too
        self._loop = asyncio.get_running_loop()
        self._taken: dict[str, JobSnapshot] | None = None

    def __call__(self, snapshot: JobSnapshot) -> bool:
        taken = self._taken
        if taken is None:
            if snapshot.version <= self._seen.get(snapshot.id, 0):
                return True  # sent already: the usual path would drop it too
            if snapshot.status.terminal and not self._terminal_too:
                return False
            taken = self._taken = {}
            self._loop.call_soon(self._write)
        elif snapshot.status.terminal and not self._terminal_too:
            # after the ones taken: they go back to the reader first, in order
            self._write()
            return False
        current = taken.get(snapshot.id)
        if current is None or current.version < snapshot.version:
            taken.pop(snapshot.id, None)  # a job's newest version takes its latest place
            taken[snapshot.id] = snapshot
        return True

    def _write(self) -> None:
        taken, self._taken = self._taken, None
        if not taken:
            return
        target, seen = self._target, self._seen
        assert target.executor is not None
        messages: list[bytes] = []
        sent: list[JobSnapshot] = []
        left: list[JobSnapshot] = []
        for snapshot in taken.values():
            if left:
                left.append(snapshot)
                continue
            if snapshot.version <= seen.get(snapshot.id, 0):
                continue
            try:
                payload = target.executor.render_payload(shared_job(self._context, snapshot))
            except Exception:  # the reader's path meets it again, where errors are handled
                log.exception("could not render job %s for a subscriber", snapshot.id)
                payload = None
            if payload is None:  # an error, or a result to await: the reader's path has both
                left.append(snapshot)
                continue
            messages.append(target.prefix + payload + b"}")
            sent.append(snapshot)
        if messages and target.is_open() and target.protocol.send_texts_now(messages):
            for snapshot in sent:
                remember(seen, snapshot)
        else:
            left[:0] = sent
        for snapshot in left:
            self._subscriber.enqueue(snapshot)


def follow(handler: Any, operation: Any) -> None:
    """Called by the transport handler in ``operation``'s own task, as it starts: its
    subscription's events may be written directly when its socket is served by
    ``LightWebSocketProtocol``."""
    protocol = protocol_of(getattr(handler.websocket, "ws", None))
    if isinstance(protocol, LightWebSocketProtocol):
        DIRECT_TARGET.set(
            DirectTarget(
                protocol,
                handler.operations,
                operation,
                b'{"id":' + orjson.dumps(operation.id) + b',"type":"next","payload":',
            )
        )
