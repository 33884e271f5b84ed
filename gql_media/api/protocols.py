"""uvicorn's protocols, patched: the one module that uses uvicorn's internals.

``LightWebSocketProtocol`` is uvicorn's WebSocket protocol (websockets' sans-I/O
implementation), lighter per socket: an api holds thousands of idle subscribed sockets;
uvicorn gives each an asyncio.Queue for incoming messages (three deques and an Event with a
fourth), an asyncio.Event for write flow control (a fifth) and keeps the handshake
response: about 5 KB a socket, more than the rest of uvicorn's share. Here the queue and the
flag hold a list or a future only while something waits, and the response goes once sent.
It also bounds what waits for a client that does not read (uvicorn holds every message a
paused socket is sent, for as long as the client likes): past ``max_send_buffer`` bytes
the socket is closed with 4413.

``GuardedHttpProtocol`` is uvicorn's httptools protocol with the time and size limits
uvicorn lacks: it waits for a request's headers and body as long as the client likes (only
an idle keep-alive connection times out), so half-sent requests held every file
descriptor. Here headers must arrive within a time and a size, a body within a time that
grows with its size and without long pauses, and connections past a cap are refused.

``server_options`` is how the api runs uvicorn, for ``gql-media serve``/``api`` and tests.
Without these classes (``http="httptools"``, ``ws="websockets-sansio"``) the api works the
same, without the limits.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from gql_media.errors import ErrorCode
from gql_media.settings import Settings


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


class LightWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the lighter inbox and write flag, without
    the handshake response once it is sent, and with a bounded send buffer. Pass it (or
    the subclass ``server_options`` makes) as uvicorn's ``ws``."""

    # bytes a socket may have unsent (in its transport and in sends waiting to write)
    # before it is closed with 4413
    max_send_buffer = 1024 * 1024
    waiting_bytes = 0  # of messages whose send waits for the transport (set while any do)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag(is_set=True)  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.send":
            if self.close_sent and self.handshake_complete:  # maybe by close_now: gone
                raise ClientDisconnected
            if not self.writable.is_set():
                await self._wait_to_send(message)
        await super().send(message)
        if self.handshake_complete and "response" in self.__dict__:
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


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long and how much a client may take to send a request, and how many
    connections a process holds (see ``Settings``)."""

    header_timeout: float
    max_header_bytes: int
    body_timeout: float
    body_min_rate: int
    body_idle_timeout: float
    max_connections: int


class Phase(enum.Enum):
    IDLE = "idle"  # between requests (uvicorn's keep-alive timeout) or while the app works
    HEADERS = "headers"  # the request line and headers are due
    BODY = "body"  # the body is due


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``limits`` on slow and greedy clients:

    - a request's line and headers must arrive within ``header_timeout`` seconds of the
      connection or of the request's first byte, and within ``max_header_bytes`` bytes;
    - its body within ``body_timeout`` seconds plus one second per ``body_min_rate``
      bytes received, and with no pause over ``body_idle_timeout`` seconds (time while the
      api itself does not read does not count);
    - past ``max_connections`` (HTTP and WebSocket) a new connection takes the place of
      the one that has waited longest for a request (half sent, not begun, or idle between
      requests), or is answered 503 ``TOO_MANY_CONNECTIONS`` when every other is busy:
      clients that send their requests are served while slow ones hold the rest.

    Late requests are answered 408 ``REQUEST_TIMEOUT`` (a connection that sent nothing is
    closed silently), headers too large 431 ``HEADERS_TOO_LARGE``; the application sees a
    disconnect. One timer per connection follows the phase it is in."""

    limits: HttpLimits  # set on the subclass server_options makes
    # a server's connections waiting for a request, longest waiting first (its own dict)
    waiting: dict[GuardedHttpProtocol, None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = Phase.IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._began = 0.0  # when the phase began (less time the api did not read)
        self._last = 0.0  # when body bytes last arrived
        self._checked = 0.0  # when the timer last looked
        self._received = 0  # bytes of the headers, then of the body
        self._request_seen = False  # a byte of the current request arrived

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._answer(503, ErrorCode.TOO_MANY_CONNECTIONS, "the server has too many connections")
            return
        self._enter(Phase.HEADERS)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request; False if none does."""
        oldest = next(iter(self.waiting), None)
        if oldest is None:
            return False
        if oldest._request_seen:
            oldest._answer(503, ErrorCode.TOO_MANY_CONNECTIONS, "a ready client needed the place")
        else:  # nothing sent: closed as an idle keep-alive connection is
            oldest._idle()
            oldest.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._idle()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is Phase.HEADERS:
            self._received += len(data)
        super().data_received(data)
        if self._phase is Phase.HEADERS and self._received > self.limits.max_header_bytes:
            self._answer(
                431,
                ErrorCode.HEADERS_TOO_LARGE,
                f"the request line and headers take more than {self.limits.max_header_bytes} bytes",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_seen = True
        if self._phase is not Phase.HEADERS:  # a request on a kept-alive connection
            self._enter(Phase.HEADERS)

    def on_headers_complete(self) -> None:
        self._enter(Phase.BODY)  # until on_message_complete, maybe at once
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._received += len(body)
        self._last = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._idle()
        self._request_seen = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a request waiting behind this one starts now
        super().on_response_complete()
        if not pipelined and self._phase is Phase.IDLE and not self.transport.is_closing():
            self.waiting[self] = None  # idle until the next request (or keep-alive's end)

    def handle_websocket_upgrade(self) -> None:
        self._idle()  # the WebSocket protocol takes over the connection
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().handle_websocket_upgrade()

    def _enter(self, phase: Phase) -> None:
        now = self.loop.time()
        self._phase, self._began, self._last, self._checked = phase, now, now, now
        self._received = 0
        self.waiting.pop(self, None)
        if phase is Phase.HEADERS:
            self.waiting[self] = None  # the newest to wait
        self._arm(self._deadline())

    def _idle(self) -> None:
        self._phase = Phase.IDLE
        self.waiting.pop(self, None)

    def _deadline(self) -> float:
        limits = self.limits
        if self._phase is Phase.HEADERS:
            return self._began + limits.header_timeout
        allowed = limits.body_timeout + self._received / limits.body_min_rate
        return min(self._began + allowed, self._last + limits.body_idle_timeout)

    def _arm(self, when: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return  # it looks again in time
            timer.cancel()
        self._timer = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._phase is Phase.IDLE or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the api is not reading: the client cannot send
            self._began += now - self._checked
            self._last += now - self._checked
        self._checked = now
        deadline = self._deadline()
        if now < deadline:
            self._arm(deadline)
        elif self._phase is Phase.HEADERS and not self._request_seen:
            self.transport.close()  # nothing sent: as uvicorn's keep-alive timeout does
        else:
            what = "headers" if self._phase is Phase.HEADERS else "body"
            self._answer(408, ErrorCode.REQUEST_TIMEOUT, f"the request {what} came too slowly")

    def _answer(self, status: int, code: ErrorCode, message: str) -> None:
        """Answer ``status`` with an error ``code`` unless a response is under way, and
        close the connection; the application, if it has the request, sees a disconnect."""
        cycle = self.cycle  # the previous request's while the next one's headers come
        answer = cycle is None or not cycle.response_started
        answer = answer or (self._phase is Phase.HEADERS and cycle.response_complete)
        self._idle()
        if answer:
            body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
            self.transport.write(
                STATUS_LINE[status]
                + b"content-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + body
            )
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the api (host, port and logging aside)."""
    limits = HttpLimits(
        header_timeout=settings.header_timeout,
        max_header_bytes=settings.max_header_bytes,
        body_timeout=settings.body_timeout,
        body_min_rate=settings.body_min_rate,
        body_idle_timeout=settings.body_idle_timeout,
        max_connections=settings.max_connections or default_max_connections(settings),
    )
    return {
        "http": type("HttpProtocol", (GuardedHttpProtocol,), {"limits": limits, "waiting": {}}),
        "ws": type(
            "WebSocketProtocol",
            (LightWebSocketProtocol,),
            {"max_send_buffer": settings.ws_max_send_buffer_bytes},
        ),
        # job updates are small JSON: compressing costs ~40 KB per socket and CPU per
        # message for little gain
        "ws_per_message_deflate": False,
        "ws_max_size": settings.ws_max_message_bytes,  # uvicorn's default: 16 MiB
    }


def default_max_connections(settings: Settings) -> int:
    """The open-file limit, less what a process keeps open besides its clients: its
    database pool (twice: it may overflow), Redis, logs and files being processed."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 10_000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(64, soft - 2 * settings.database_pool_size - 100)
