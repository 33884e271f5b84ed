"""The api's uvicorn WebSocket protocol: its inbox and write flag behave as the asyncio
Queue and Event they replace, and a socket served by it works end to end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from gql_media.api.protocols import Flag, Inbox, LightWebSocketProtocol


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

    def pause_reading(self) -> None:
        pass

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
