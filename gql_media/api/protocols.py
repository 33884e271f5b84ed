"""uvicorn's WebSocket protocol (websockets' sans-I/O implementation), lighter per socket.

An api holds thousands of idle subscribed sockets; uvicorn gives each an asyncio.Queue for
incoming messages (three deques and an Event with a fourth), an asyncio.Event for
write flow control (a fifth) and keeps the handshake response: about 5 KB a socket, more
than the rest of uvicorn's share. Here the queue and the flag hold a list or a future only
while something waits, and the response goes once sent. Behaviour is uvicorn's.
"""

from __future__ import annotations

import asyncio
from typing import Any

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


class LightWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the lighter inbox and write flag, and
    without the handshake response once it is sent. Pass it as uvicorn's ``ws``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag(is_set=True)  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and "response" in self.__dict__:
            del self.response  # read only until the handshake is answered

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


def protocol_of(send: Any) -> LightWebSocketProtocol | None:
    """The protocol behind an ASGI ``send`` that uvicorn handed over unwrapped, if ours."""
    protocol = getattr(send, "__self__", None)
    return protocol if isinstance(protocol, LightWebSocketProtocol) else None
