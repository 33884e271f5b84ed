"""The api's uvicorn WebSocket protocol: its inbox and write flag behave as the asyncio
Queue and Event they replace, and a socket served by it works end to end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from gql_media.api.patches import uvicorn_ws
from gql_media.api.patches.uvicorn_http import GuardedHttpProtocol, HttpLimits, Phase
from gql_media.api.patches.uvicorn_ws import (
    Flag,
    GuardedWebSocketProtocol,
    Inbox,
    LightWebSocketProtocol,
)

# the protections work with the light protocol (the uvicorn_ws patch) and without it
WS_PROTOCOLS = pytest.mark.parametrize(
    "ws_class", [LightWebSocketProtocol, GuardedWebSocketProtocol], ids=["light", "guarded"]
)


async def test_the_inbox_gives_events_in_order_and_wakes_its_reader() -> None:
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    assert inbox.empty()
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert (inbox.qsize(), await inbox.get(), await inbox.get()) == (2, "a", "b")
    reader = asyncio.create_task(inbox.get())
    loop.call_soon(inbox.put_nowait, "c")  # runs once the reader waits
    assert await reader == "c" and inbox.empty()


async def test_the_inbox_survives_a_canceled_reader_and_refuses_a_second_one() -> None:
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    canceled = asyncio.create_task(inbox.get())
    loop.call_soon(canceled.cancel)
    with pytest.raises(asyncio.CancelledError):
        await canceled
    reader = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    with pytest.raises(RuntimeError):
        await second
    inbox.put_nowait("d")
    assert await reader == "d"


async def test_the_flag_holds_writers_while_cleared_and_releases_them_all() -> None:
    flag = Flag(is_set=True)
    loop = asyncio.get_running_loop()
    assert await flag.wait()  # set: no wait
    flag.clear()
    assert not flag.is_set()
    writers = [asyncio.create_task(flag.wait()) for _ in range(2)]
    canceled = asyncio.create_task(flag.wait())
    loop.call_soon(canceled.cancel)
    with pytest.raises(asyncio.CancelledError):
        await canceled
    loop.call_soon(flag.set)
    assert await asyncio.gather(*writers) == [True, True]
    assert flag.is_set()


class Transport(asyncio.Transport):
    """What uvicorn's protocol writes, and whether it asked to close."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.aborted = asyncio.Event()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True
        self.aborted.set()

    def pause_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return len(self.written)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def resume_reading(self) -> None:
        pass


async def test_a_socket_is_served_through_the_light_protocol() -> None:
    """Handshake, messages both ways and the close, byte for byte through uvicorn's
    protocol; the handshake response is dropped once sent."""
    received: list[str] = []
    accepted, done = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": "graphql-transport-ws"})
        accepted.set()
        message = await receive()
        received.append(message["text"])
        await send({"type": "websocket.send", "text": message["text"].upper()})
        await send({"type": "websocket.close", "code": 1000})
        done.set()

    config = uvicorn.Config(app, ws=LightWebSocketProtocol, lifespan="off", log_config=None)
    config.load()
    protocol = LightWebSocketProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    # an uvicorn that renamed or added its queue or events would keep them again
    heavy = (asyncio.Queue, asyncio.Event)
    assert not [name for name, value in vars(protocol).items() if isinstance(value, heavy)]
    client = ClientProtocol(
        parse_uri("ws://127.0.0.1:8000/graphql"), subprotocols=["graphql-transport-ws"]
    )
    client.send_request(client.connect())
    protocol.data_received(b"".join(client.data_to_send()))
    await accepted.wait()
    client.receive_data(bytes(transport.written))
    transport.written.clear()
    [response] = client.events_received()
    assert isinstance(response, Response) and response.status_code == 101
    assert "response" not in vars(protocol)
    client.send_text(b"hello")
    protocol.data_received(b"".join(client.data_to_send()))
    await done.wait()
    client.receive_data(bytes(transport.written))
    frames = client.events_received()
    assert all(isinstance(f, Frame) for f in frames)
    assert [(f.opcode, f.data) for f in frames] == [
        (Opcode.TEXT, b"HELLO"),
        (Opcode.CLOSE, b"\x03\xe8"),
    ]
    assert received == ["hello"]
    protocol.connection_lost(None)


def light_protocol(
    app: Any, ws_class: type[GuardedWebSocketProtocol] = LightWebSocketProtocol, **attributes: Any
) -> GuardedWebSocketProtocol:
    config = uvicorn.Config(app, lifespan="off", log_config=None)
    config.load()
    protocol_class = type("Protocol", (ws_class,), attributes)
    protocol: GuardedWebSocketProtocol = protocol_class(
        config=config, server_state=ServerState(), app_state={}
    )
    return protocol


@WS_PROTOCOLS
async def test_a_socket_whose_client_does_not_read_is_closed_past_its_send_buffer(
    monkeypatch: pytest.MonkeyPatch, ws_class: type[GuardedWebSocketProtocol]
) -> None:
    """Sends wait while the transport is full, counted; past ``max_send_buffer`` the
    socket is closed with 4413, the waiting sends fail and the app sees the disconnect."""
    outcome: list[Any] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        protocol.pause_writing()  # as the transport does once its buffer is full
        waiting = [
            asyncio.create_task(send({"type": "websocket.send", "text": "x" * 600}))
            for _ in range(3)
        ]
        outcome.extend(await asyncio.gather(*waiting, return_exceptions=True))
        outcome.append(await receive())
        done.set()

    monkeypatch.setattr(uvicorn_ws, "CLOSE_GRACE", 0.0)
    protocol = light_protocol(app, ws_class, max_send_buffer=1024)
    transport = Transport()
    protocol.connection_made(transport)
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/graphql"))
    client.send_request(client.connect())
    protocol.data_received(b"".join(client.data_to_send()))
    await done.wait()
    assert [type(result) for result in outcome[:3]] == [ClientDisconnected] * 3
    assert outcome[3] == {
        "type": "websocket.disconnect",
        "code": 4413,
        "reason": "SEND_BUFFER_FULL",
    }
    client.receive_data(bytes(transport.written))
    [response, close] = client.events_received()
    assert isinstance(close, Frame) and close.opcode is Opcode.CLOSE
    assert close.data[:2] == (4413).to_bytes(2, "big")
    assert protocol.waiting_bytes == 0 and protocol.close_timer is not None
    await transport.aborted.wait()  # the client has not read the close in time: cut off
    protocol.connection_lost(None)


@WS_PROTOCOLS
async def test_a_socket_closed_for_a_missing_pong_is_cut_off_if_it_does_not_read(
    monkeypatch: pytest.MonkeyPatch, ws_class: type[GuardedWebSocketProtocol]
) -> None:
    """uvicorn closes a socket whose pong is late, and a transport only closes once its
    buffer is flushed: a client that does not read is cut off after the grace instead."""
    accepted, done = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        accepted.set()
        await receive()  # the disconnect
        done.set()

    monkeypatch.setattr(uvicorn_ws, "CLOSE_GRACE", 0.0)
    protocol = light_protocol(app, ws_class)
    transport = Transport()
    protocol.connection_made(transport)
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/graphql"))
    client.send_request(client.connect())
    protocol.data_received(b"".join(client.data_to_send()))
    await accepted.wait()
    protocol.keepalive_timeout()
    assert transport.closed and protocol.close_timer is not None
    await transport.aborted.wait()
    protocol.connection_lost(None)
    await done.wait()


async def test_the_guarded_http_protocol_follows_uvicorns_parser_callbacks() -> None:
    """Headers, then body, are timed from uvicorn's callbacks; a late body is answered 408
    and the application sees a disconnect; a WebSocket upgrade leaves no timer behind."""
    received: list[Any] = []
    first, done = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(await receive())
        first.set()
        received.append(await receive())
        done.set()

    config = uvicorn.Config(app, ws=LightWebSocketProtocol, lifespan="off", log_config=None)
    config.load()
    limits = HttpLimits(
        header_timeout=30,
        max_header_bytes=4096,
        body_timeout=30,
        body_min_rate=1,
        body_idle_timeout=30,
        max_connections=10,
    )
    protocol_class = type("Protocol", (GuardedHttpProtocol,), {"limits": limits, "waiting": {}})
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    assert protocol._phase is Phase.HEADERS and protocol._timer is not None
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: a\r\n")
    assert protocol._phase is Phase.HEADERS and protocol._request_seen
    protocol.data_received(b"Content-Length: 10\r\n\r\n12345")
    assert protocol._phase is Phase.BODY and protocol._received == 5
    await first.wait()
    protocol._began -= 60  # the body's time has run out
    protocol._check()
    await done.wait()
    assert transport.written.startswith(b"HTTP/1.1 408") and transport.closed
    assert b'"code":"REQUEST_TIMEOUT"' in transport.written
    assert received == [
        {"type": "http.request", "body": b"12345", "more_body": True},
        {"type": "http.disconnect"},
    ]
    protocol.connection_lost(None)
    assert protocol._timer is None

    upgraded = protocol_class(config=config, server_state=ServerState(), app_state={})
    upgrading = Transport()
    upgraded.connection_made(upgrading)
    upgraded.data_received(
        b"GET /graphql HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert upgraded._phase is Phase.IDLE and upgraded._timer is None
    assert isinstance(upgrading.protocol, LightWebSocketProtocol)
    upgrading.protocol.connection_lost(None)
