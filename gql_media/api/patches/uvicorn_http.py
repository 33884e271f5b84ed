"""uvicorn's httptools protocol with the time and size limits uvicorn lacks (a protection,
always on).

Why: uvicorn waits for a request's headers and body as long as the client likes (only an
idle keep-alive connection times out), so half-sent requests held every file descriptor.
Here headers must arrive within a time and a size, a body within a time that grows with
its size and without long pauses, and connections past a cap are refused or take the
place of the slowest. uvicorn has no public setting for any of these (``limit_concurrency``
answers 503 to every new connection past a count, busy or not), so this stays on whatever
``GQL_MEDIA_PATCHES`` says; the README's Security section describes it.

Internals relied on (``uvicorn.protocols.http.httptools_impl``, checked by
``tests/test_patches.py``): ``HttpToolsProtocol`` and its callbacks ``connection_made``,
``connection_lost``, ``data_received``, ``on_message_begin``, ``on_headers_complete``,
``on_body``, ``on_message_complete``, ``on_response_complete``,
``handle_websocket_upgrade``; its attributes ``connections`` (the server's set),
``transport``, ``loop``, ``pipeline``, ``flow.read_paused`` and ``cycle`` (with
``response_started``, ``response_complete``, ``disconnected``, ``message_event``); and the
module's ``STATUS_LINE`` table.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gql_media.errors import ErrorCode


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
        self._tail = b""  # the last bytes of the headers so far (a split blank line)
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
            # counted up to the blank line that ends them, before the parser sees them:
            # headers that arrive whole in one read would be parsed, and their request
            # started, before a count made after parsing could refuse them
            self._received += _header_bytes(self._tail, data)
            self._tail = data[-3:]
            if self._received > self.limits.max_header_bytes:
                self._too_large()
                return
        super().data_received(data)
        if self._phase is Phase.HEADERS and self._received > self.limits.max_header_bytes:
            self._too_large()  # a request pipelined behind one this read completed

    def _too_large(self) -> None:
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
        self._tail = b""
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


def _header_bytes(tail: bytes, data: bytes) -> int:
    """How many bytes of ``data`` belong to headers whose last bytes so far were ``tail``:
    up to and with the blank line that ends them, or all of it."""
    if tail:  # the blank line may have begun in the last read
        split = (tail + data[:3]).find(b"\r\n\r\n")
        if split >= 0:
            return split + 4 - len(tail)
    end = data.find(b"\r\n\r\n")
    return len(data) if end < 0 else end + 4
