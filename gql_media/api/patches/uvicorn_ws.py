"""uvicorn's sans-I/O WebSocket protocol, bounded (always on) and lighter (``uvicorn_ws``).

``GuardedWebSocketProtocol`` is a protection, on whatever ``GQL_MEDIA_PATCHES`` says: uvicorn
holds every message a paused socket is sent, for as long as the client likes; here, past
``max_send_buffer`` bytes unread the socket is closed with 4413, and a socket closed while
its client does not read is cut off after ``CLOSE_GRACE`` seconds (uvicorn's close waits for
the client). ``close_now`` closes a socket at once (revoked keys, ``api.sockets``). No public
uvicorn setting bounds what waits for a client.

``LightWebSocketProtocol`` (the ``uvicorn_ws`` patch) is lighter per socket: an api holds
thousands of idle subscribed sockets; uvicorn gives each an asyncio.Queue for incoming
messages (three deques and an Event with a fourth), an asyncio.Event for write flow control
(a fifth) and keeps the handshake response: about 5 KB a socket, more than the rest of
uvicorn's share. Here the queue and the flag hold a list or a future only while something
waits, and the response goes once sent. ``send_texts_now`` writes several messages in one
write (``direct_events``). Off, the guarded protocol serves, with uvicorn's own queue and
event.

Internals relied on (``uvicorn.protocols.websockets.websockets_sansio_impl``,
checked by ``tests/test_patches.py``): ``WebSocketsSansIOProtocol`` with its ``send``,
``handle_ping``, ``keepalive_timeout``; its attributes ``queue`` (put_nowait, get),
``writable`` (set, clear, is_set, wait), ``response``, ``conn`` (websockets'
``ServerProtocol``: ``send_text``, ``send_close``, ``data_to_send``), ``transport``,
``loop``, ``close_timer``, ``close_sent``, ``handshake_complete``, ``disconnected``,
``read_paused``, ``initial_response``; ``uvicorn.protocols.utils.ClientDisconnected``.
Starlette's ``WebSocket._send`` (the ASGI send it was given) finds the protocol behind a
socket (``protocol_of``): uvicorn's ``send`` is that protocol's bound method.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.websockets import WebSocket
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState


class Inbox:
    """The incoming ASGI events of one socket, in order (``asyncio.Queue``'s put_nowait,
    get and empty). One task reads them, the ASGI app's."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("a socket's events are read by one task at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Flag:
    """``asyncio.Event``'s set, clear, is_set and wait, with no waiter list while nothing
    waits (a socket's writes wait only while its transport's buffer is full)."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self, is_set: bool = False) -> None:
        self._is_set = is_set
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> bool:
        if self._is_set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


SEND_BUFFER_FULL_CLOSE = 4413  # the client left more than max_send_buffer bytes unread
CLOSE_GRACE = 10.0  # seconds a closed socket's unread bytes wait for its client


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with a bounded send buffer and a close that
    does not wait for the client. Pass it (or the subclass ``server_options`` makes) as
    uvicorn's ``ws``."""

    # bytes a socket may have unsent (in its transport and in sends waiting to write)
    # before it is closed with 4413
    max_send_buffer = 1024 * 1024
    waiting_bytes = 0  # of messages whose send waits for the transport (set while any do)
    drop_response = False  # the uvicorn_ws patch: let the handshake response go once sent

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.send":
            if self.close_sent and self.handshake_complete:  # maybe by close_now: gone
                raise ClientDisconnected
            if not self.writable.is_set():
                await self._wait_to_send(message)
        await super().send(message)
        if self.drop_response and self.handshake_complete and "response" in self.__dict__:
            del self.response  # read only until the handshake is answered
        if message["type"] == "websocket.close" and self.close_timer is not None:
            self._abort_later()  # uvicorn's timer would close(), which waits for the client

    async def _wait_to_send(self, message: Any) -> None:
        """Wait, counted, until the transport takes writes; close the socket instead when
        what its client has not read would pass ``max_send_buffer``."""
        size = len(message.get("text") or message.get("bytes") or b"")
        if self.unsent_bytes() + size > self.max_send_buffer:
            self.close_now(SEND_BUFFER_FULL_CLOSE, "SEND_BUFFER_FULL")
        if self.close_sent or self.disconnected:
            raise ClientDisconnected
        self.waiting_bytes += size
        try:
            await self.writable.wait()
        finally:
            self.waiting_bytes -= size
        if self.close_sent or self.disconnected:  # closed meanwhile: drop the message
            raise ClientDisconnected

    def unsent_bytes(self) -> int:
        """Bytes written for this socket that its client has not taken yet."""
        return self.waiting_bytes + self.transport.get_write_buffer_size()

    def handle_ping(self) -> None:
        super().handle_ping()  # the pong goes out at once: a client may ping without reading
        if self.unsent_bytes() > self.max_send_buffer:
            self.close_now(SEND_BUFFER_FULL_CLOSE, "SEND_BUFFER_FULL")

    def close_now(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` without waiting for the transport: the close frame
        goes after what is buffered, waiting sends fail (freeing their messages) and the
        application sees a disconnect. A client that does not read the close within
        ``CLOSE_GRACE`` seconds is cut off, and its buffer freed."""
        if not self.handshake_complete or self.close_sent or self.disconnected:
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        try:
            self.conn.send_close(code, reason)
        except InvalidState:  # the client is closing already
            pass
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:  # to read the client's closing reply
            self.read_paused = False
            self.transport.resume_reading()
        self.writable.set()  # waiting sends see close_sent and give up
        self._abort_later()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()  # closes the transport, which waits to flush first
        if self.close_sent and not self.disconnected:
            self._abort_later()

    def _abort_later(self) -> None:
        """Cut the connection off in ``CLOSE_GRACE`` seconds unless it ends before: a
        transport only closes once its buffer is flushed, which a client that does not
        read never lets happen."""
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(CLOSE_GRACE, self.transport.abort)


class LightWebSocketProtocol(GuardedWebSocketProtocol):
    """The guarded protocol with the lighter inbox and write flag, without the handshake
    response once it is sent, and with ``send_texts_now`` (the ``uvicorn_ws`` patch)."""

    drop_response = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag(is_set=True)  # type: ignore[assignment]

    def send_texts_now(self, texts: list[bytes]) -> bool:
        """Write text messages (UTF-8) as ``send`` would, in one write, when that needs no
        waiting: the socket is open and its transport takes writes. False, having written
        nothing, otherwise; the caller then sends them the usual way."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        try:
            for text in texts:
                self.conn.send_text(text)
        except InvalidState:  # the connection is closing: send would fail the same way
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True


def protocol_of(websocket: WebSocket | None) -> GuardedWebSocketProtocol | None:
    """The protocol behind a starlette ``WebSocket`` whose ASGI ``send`` uvicorn handed over
    unwrapped, if ours; None behind anything else (another server, a middleware)."""
    protocol = getattr(getattr(websocket, "_send", None), "__self__", None)
    return protocol if isinstance(protocol, GuardedWebSocketProtocol) else None
