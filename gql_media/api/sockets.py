"""The GraphQL WebSockets and HTTP streams open on one api process, by owner: caps and
revocation.

An owner is the API key a socket or stream authenticated with, or the client's address
when auth is off. Each owner may hold ``max_sockets_per_key`` sockets (past it a socket is
closed with 4429 ``TOO_MANY_SOCKETS`` instead of acknowledged) and ``max_streams_per_key``
HTTP streams (graphql-sse or multipart; one operation each), running
``max_subscriptions_per_key`` operations together, ``max_subscriptions_per_connection`` on
one socket (past any of these an operation gets an error ``TOO_MANY_SUBSCRIPTIONS``; a
stream is answered 429 with it).
Every process counts its own sockets: with N api processes behind a load balancer an
owner may hold up to N times as many.

Keys are checked again while their sockets and streams stay open: every
``api_key_cache_seconds`` (at least every ``MIN_RECHECK`` seconds) one query asks which of
the keys behind this process's sockets and streams are still live; the sockets of a revoked
key (those opened with its watch tokens too) are closed with 4403, and its streams ended; at
the same checks the sockets of watch tokens past their expiry are closed with 4403, reason
WATCH_TOKEN_EXPIRED. A watch token's sockets are counted apart from its key's, per key and
job, so a browser holding a token cannot use up its backend's sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sized
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from graphql import GraphQLError
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from gql_media.api.patches.uvicorn_ws import protocol_of
from gql_media.domain import Principal
from gql_media.errors import ErrorCode
from gql_media.services.auth import Authenticator
from gql_media.settings import Settings

if TYPE_CHECKING:
    from gql_media.api.context import Context

log = logging.getLogger(__name__)

TOO_MANY_SOCKETS_CLOSE = 4429
REVOKED_CLOSE = 4403
MIN_RECHECK = 0.5  # seconds between checks of open sockets' keys, at the least


class SocketRefused(Exception):
    """A socket that may not be acknowledged: closed with ``close_code``."""

    def __init__(self, close_code: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.code = code
        self.message = message


@dataclass(slots=True, eq=False)
class OpenSocket:
    owner: Hashable
    digest: str | None  # the hash of its key, checked again while it is open
    close: Callable[[int, str], None]
    operations: Sized = ()  # the running operations of its protocol handler, by id
    expires_at: float | None = None  # a watch token's expiry (Unix seconds)


@dataclass(slots=True, eq=False)
class OpenStream:
    """An HTTP stream (``api.streams``), counted for ``owner`` while it is open."""

    owner: Hashable
    digest: str | None  # the hash of its key, checked again while it is open
    close: Callable[[], None]  # ends the stream


class OpenSockets:
    """The acknowledged GraphQL WebSockets of this process, by owner."""

    def __init__(self, settings: Settings) -> None:
        self._max_sockets = settings.max_sockets_per_key
        self._max_operations = settings.max_subscriptions_per_key
        self._max_per_socket = settings.max_subscriptions_per_connection
        self._max_streams = settings.max_streams_per_key
        self._recheck = max(settings.api_key_cache_seconds, MIN_RECHECK)
        self._sockets: dict[int, OpenSocket] = {}  # by id() of the starlette WebSocket
        self._owners: dict[Hashable, dict[int, OpenSocket]] = {}
        self._streams: dict[Hashable, int] = {}  # open HTTP streams, by owner
        self._open_streams: set[OpenStream] = set()

    def admit(self, websocket: HTTPConnection, owner: Hashable, digest: str | None) -> None:
        """Count ``websocket`` for ``owner`` until ``discard``; SocketRefused past the cap."""
        if id(websocket) in self._sockets:
            return
        held = self._owners.setdefault(owner, {})
        if self._max_sockets and len(held) >= self._max_sockets:
            raise SocketRefused(
                TOO_MANY_SOCKETS_CLOSE,
                ErrorCode.TOO_MANY_SOCKETS,
                f"{len(held)} WebSockets are open for this key (or address), the most allowed",
            )
        assert isinstance(websocket, WebSocket)
        entry = held[id(websocket)] = OpenSocket(owner, digest, _closer(websocket))
        if isinstance(owner, WatchOwner):
            entry.expires_at = owner.expires_at
        self._sockets[id(websocket)] = entry

    def follow(self, websocket: HTTPConnection, operations: Sized) -> None:
        """Count ``operations`` (its handler's, by id) as the socket's running ones."""
        entry = self._sockets.get(id(websocket))
        if entry is not None:
            entry.operations = operations

    def discard(self, websocket: HTTPConnection) -> None:
        entry = self._sockets.pop(id(websocket), None)
        if entry is not None:
            held = self._owners[entry.owner]
            del held[id(websocket)]
            if not held:
                del self._owners[entry.owner]

    def refusal(self, websocket: HTTPConnection, running: Sized) -> GraphQLError | None:
        """Why an operation may not start on ``websocket``, whose handler runs ``running``:
        the socket runs ``max_subscriptions_per_connection`` operations, or its owner's
        sockets run ``max_subscriptions_per_key`` together; None when it may."""
        if len(running) >= self._max_per_socket:
            limit, per = self._max_per_socket, "WebSocket"
        elif self._max_operations and self._running(websocket) >= self._max_operations:
            limit, per = self._max_operations, "key"
        else:
            return None
        return GraphQLError(
            f"this {per} runs the most operations it may ({limit}); complete some first",
            extensions={"code": ErrorCode.TOO_MANY_SUBSCRIPTIONS.value},
        )

    def _running(self, websocket: HTTPConnection) -> int:
        entry = self._sockets.get(id(websocket))
        if entry is None:
            return 0
        return self._owner_running(entry.owner)

    def _owner_running(self, owner: Hashable) -> int:
        sockets = self._owners.get(owner, {}).values()
        return sum(len(s.operations) for s in sockets) + self._streams.get(owner, 0)

    def open_stream(self, stream: OpenStream) -> GraphQLError | None:
        """Count ``stream`` for its owner until ``close_stream``; the error that refuses
        it instead when the owner holds ``max_streams_per_key`` streams or runs
        ``max_subscriptions_per_key`` operations over its sockets and streams."""
        owner = stream.owner
        streams = self._streams.get(owner, 0)
        if self._max_streams and streams >= self._max_streams:
            limit, per = self._max_streams, "key (or address) holds the most HTTP streams"
        elif self._max_operations and self._owner_running(owner) >= self._max_operations:
            limit, per = self._max_operations, "key runs the most operations"
        else:
            self._streams[owner] = streams + 1
            self._open_streams.add(stream)
            return None
        return GraphQLError(
            f"this {per} it may ({limit}); end some first",
            extensions={"code": ErrorCode.TOO_MANY_SUBSCRIPTIONS.value},
        )

    def close_stream(self, stream: OpenStream) -> None:
        if stream not in self._open_streams:
            return
        self._open_streams.discard(stream)
        owner = stream.owner
        left = self._streams.get(owner, 0) - 1
        if left > 0:
            self._streams[owner] = left
        else:
            self._streams.pop(owner, None)

    @property
    def streams(self) -> int:
        """HTTP streams open on this process."""
        return sum(self._streams.values())

    @asynccontextmanager
    async def rechecking(self, auth: Authenticator) -> AsyncIterator[None]:
        """Close the sockets of revoked keys, checking for as long as this is entered."""
        if not auth.required:
            yield
            return
        task = asyncio.create_task(self._recheck_keys(auth), name="gql-media-socket-keys")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _recheck_keys(self, auth: Authenticator) -> None:
        while True:
            await asyncio.sleep(self._recheck)
            now = time.time()
            for entry in [e for e in self._sockets.values() if e.expires_at is not None]:
                if entry.expires_at is not None and entry.expires_at <= now:
                    entry.close(REVOKED_CLOSE, ErrorCode.WATCH_TOKEN_EXPIRED.value)
            digests = {entry.digest for entry in self._sockets.values() if entry.digest}
            digests.update(stream.digest for stream in self._open_streams if stream.digest)
            if not digests:
                continue
            try:
                live = await auth.live_digests(digests)
            except Exception:  # the database is down: keep what is open, try again
                log.warning("could not check the keys of open WebSockets", exc_info=True)
                continue
            # only the keys asked about: one opened meanwhile was checked as it opened
            gone = digests - live
            revoked = [e for e in self._sockets.values() if e.digest in gone]
            for entry in revoked:
                entry.close(REVOKED_CLOSE, ErrorCode.UNAUTHENTICATED.value)
            for stream in [s for s in self._open_streams if s.digest in gone]:
                stream.close()


def _closer(websocket: WebSocket) -> Callable[[int, str], None]:
    """Close ``websocket`` at once, even while its client does not read (then a send would
    wait for the client)."""
    protocol = protocol_of(websocket)
    if protocol is not None:
        return protocol.close_now

    async def closing(code: int, reason: str) -> None:
        with contextlib.suppress(Exception):  # closed already
            await websocket.close(code, reason)

    def close(code: int, reason: str) -> None:  # another server: its own close, in a task
        task = asyncio.create_task(closing(code, reason))
        _CLOSING.add(task)  # held until done
        task.add_done_callback(_CLOSING.discard)

    return close


_CLOSING: set[asyncio.Task[None]] = set()


def sockets_of(context: Context) -> OpenSockets:
    """The process's open sockets, from a socket's context (the app's lifespan state)."""
    sockets: OpenSockets = context.request.state.sockets
    return sockets


@dataclass(frozen=True, slots=True)
class WatchOwner:
    """The owner of a watch token's sockets: its key and job (not the key itself)."""

    key_id: Hashable
    job_id: Hashable
    expires_at: float = field(compare=False)


def owner_of(connection: HTTPConnection, principal: Principal) -> Hashable:
    """The key's id (with the job for a watch token), or the client's address when there
    is no key (auth is off)."""
    if principal.scope is not None:
        scope = principal.scope
        return WatchOwner(principal.key_id, scope.job_id, scope.expires_at)
    if principal.key_id is not None:
        return ("key", principal.key_id)
    client = connection.client
    return ("address", client.host if client is not None else None)
