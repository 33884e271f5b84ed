"""Slow and greedy clients, attacking a running api over raw sockets: requests sent by
halves, more connections than the api holds, more WebSockets and subscriptions than a key
may have, a revoked key's open sockets, and a WebSocket client that never reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from gql_media.adapters import redis as redis_adapter
from gql_media.runtime import open_runtime
from gql_media.services import auth
from tests.support import LiveServer, graphql_ws, start_server
from tests.test_security import secured

SLOW = {"header_timeout": 0.5, "body_timeout": 0.5, "body_idle_timeout": 0.5}


@asynccontextmanager
async def running(settings_factory: Any, **overrides: Any) -> AsyncIterator[LiveServer]:
    settings = settings_factory(**overrides)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        yield live


async def raw(live: LiveServer, data: bytes = b"") -> tuple[asyncio.StreamReader, Any]:
    """A plain TCP connection to the api that has sent ``data``."""
    host, port = live.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


def error_code(response: bytes) -> tuple[int, str]:
    """The status and the error code of one raw HTTP response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body)["errors"][0]["extensions"]["code"]


CONTINUE = b"\r\nExpect: 100-continue\r\n\r\n"
GRAPHQL_HEAD = (
    b"POST /graphql HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n"
)


async def test_half_sent_requests_are_cut_off_while_others_are_served(
    settings_factory: Any,
) -> None:
    async with running(settings_factory, **SLOW, body_min_rate=1_000_000) as live:
        halves = {
            "request line": b"POST /graph",
            "headers": b"POST /graphql HTTP/1.1\r\nHost: api\r\nContent-Ty",
            "body": GRAPHQL_HEAD + b'{"query": "{ __typ',
            "upload": (
                b"POST /uploads HTTP/1.1\r\nHost: api\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" + b"\0" * 4000
            ),
            "second request": (
                b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\nPOST /graphql HTTP/1.1\r\nHost"
            ),
        }
        slow = {name: await raw(live, data) for name, data in halves.items()}
        silent = await raw(live)
        served = await live.graphql("{ __typename }")  # meanwhile, a whole request is served
        assert served == {"data": {"__typename": "Query"}}
        received = {name: await reader.read() for name, (reader, _) in slow.items()}
        assert await silent[0].read() == b""  # sent nothing: closed without a word
        first, _, second = received.pop("second request").partition(b"HTTP/1.1 408")
        assert first.startswith(b"HTTP/1.1 200") and error_code(b"HTTP/1.1 408" + second) == (
            408,
            "REQUEST_TIMEOUT",
        )
        for name, response in received.items():
            assert error_code(response) == (408, "REQUEST_TIMEOUT"), name
        for _, writer in [*slow.values(), silent]:
            writer.close()


async def test_a_body_must_keep_a_minimum_rate(settings_factory: Any) -> None:
    """Bytes that keep coming, but too slowly for the body's size, are cut off too."""
    async with running(
        settings_factory, body_timeout=0.5, body_min_rate=100, body_idle_timeout=30
    ) as live:
        reader, writer = await raw(live, GRAPHQL_HEAD + b"{")

        async def drip() -> None:  # ten bytes a second: never idle, never enough
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        response = await reader.read()
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await dripping
        assert error_code(response) == (408, "REQUEST_TIMEOUT")
        writer.close()


async def test_oversized_headers_are_refused(settings_factory: Any) -> None:
    async with running(settings_factory, max_header_bytes=4096) as live:
        reader, writer = await raw(live, b"GET /healthz HTTP/1.1\r\nHost: api\r\n")
        for _ in range(10):  # 10 KB of headers, and more would follow
            writer.write(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        await writer.drain()
        assert error_code(await reader.read()) == (431, "HEADERS_TOO_LARGE")
        writer.close()


@pytest.mark.parametrize("size", [4097, 70_000])
async def test_oversized_headers_in_one_read_are_refused(settings_factory: Any, size: int) -> None:
    """Headers that arrive whole, in one write, are refused before the request starts."""
    async with running(settings_factory, max_header_bytes=4096) as live:
        head = b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Filler: "
        filler = b"a" * (size - len(head) - 4)
        reader, writer = await raw(live, head + filler + b"\r\n\r\n")
        assert error_code(await reader.read()) == (431, "HEADERS_TOO_LARGE")
        writer.close()
    async with running(settings_factory, max_header_bytes=4096) as live:
        head = b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Filler: "
        fits = head + b"a" * (4096 - len(head) - 4) + b"\r\n\r\n"  # exactly the limit
        reader, writer = await raw(live, fits)
        assert (await reader.readline()).startswith(b"HTTP/1.1 200"), "the limit itself fits"
        writer.close()


async def test_past_the_connection_cap_ready_clients_take_the_place_of_slow_ones(
    settings_factory: Any,
) -> None:
    async with running(settings_factory, max_connections=6, header_timeout=60) as live:
        held = [await raw(live, b"GET /heal") for _ in range(6)]
        ready = []
        for _ in range(3):  # each takes the place of the one that waited longest, and stays
            reader, writer = await raw(live, b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            ready.append(writer)
        evicted = [await reader.read() for reader, _ in held[:3]]
        assert all(error_code(answer) == (503, "TOO_MANY_CONNECTIONS") for answer in evicted)
        for writer in [*ready, *(writer for _, writer in held)]:
            writer.close()


async def test_past_the_connection_cap_new_clients_are_refused_when_all_are_busy(
    settings_factory: Any,
) -> None:
    async with running(settings_factory, max_connections=6, body_timeout=60) as live:
        busy = []
        for _ in range(6):  # bodies under way: the api reads them (it asked for more)
            reader, writer = await raw(live, GRAPHQL_HEAD.replace(b"\r\n\r\n", CONTINUE))
            assert await reader.readline() == b"HTTP/1.1 100 Continue\r\n"
            busy.append((reader, writer))
        reader, writer = await raw(live)
        assert error_code(await reader.read()) == (503, "TOO_MANY_CONNECTIONS")
        writer.close()
        for _, writer in busy:
            writer.close()


FOLLOW_UNKNOWN = 'subscription { jobUpdated(id: "job_00000000000000000000000000000000") { id } }'


async def refused_close(url: str, payload: dict[str, Any]) -> tuple[int, str]:
    """The close code and reason of a socket refused after its connection_init."""
    async with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_websocket_messages_are_capped(settings_factory: Any) -> None:
    async with running(settings_factory, ws_max_message_bytes=64 * 1024) as live:
        subprotocols = [Subprotocol("graphql-transport-ws")]
        async with connect(live.ws_url, subprotocols=subprotocols, max_size=None) as ws:
            init = {"type": "connection_init", "payload": {"padding": "x" * 100_000}}
            await ws.send(json.dumps(init))  # before any key is checked
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_sockets_per_key_are_capped(settings_factory: Any) -> None:
    async with secured(settings_factory, max_sockets_per_key=2) as api:
        url, alice, bob = api.live.ws_url, {"apiKey": api.keys.alice}, {"apiKey": api.keys.bob}
        async with graphql_ws(url, payload=alice), graphql_ws(url, payload=alice):
            assert await refused_close(url, alice) == (4429, "TOO_MANY_SOCKETS")
            async with connect(url, subprotocols=[Subprotocol("graphql-ws")]) as legacy:
                await legacy.send(json.dumps({"type": "connection_init", "payload": alice}))
                error = json.loads(await legacy.recv())
                with pytest.raises(ConnectionClosed):
                    await legacy.recv()
            assert error["type"] == "connection_error"
            assert error["payload"]["extensions"]["code"] == "TOO_MANY_SOCKETS"
            async with graphql_ws(url, payload=bob) as other:  # another key has its own
                op = await other.subscribe(FOLLOW_UNKNOWN)
                assert (await other.next_payload(op)) is not None
        async with graphql_ws(url, payload=alice):  # closed ones are counted off
            pass


async def test_sockets_per_address_are_capped_when_auth_is_off(settings_factory: Any) -> None:
    async with running(settings_factory, max_sockets_per_key=1) as live:
        async with graphql_ws(live.ws_url):
            assert await refused_close(live.ws_url, {}) == (4429, "TOO_MANY_SOCKETS")
        async with graphql_ws(live.ws_url):
            pass


async def test_operations_per_key_are_capped_across_its_sockets(settings_factory: Any) -> None:
    async with secured(
        settings_factory, max_subscriptions_per_key=3, max_subscriptions_per_connection=2
    ) as api:
        url, alice = api.live.ws_url, {"apiKey": api.keys.alice}
        async with graphql_ws(url, payload=alice) as first, graphql_ws(url, payload=alice) as two:
            held = [await first.subscribe("subscription { jobEvents { id } }") for _ in range(2)]
            over = await first.subscribe(FOLLOW_UNKNOWN)  # past the socket's own cap
            message = await first.receive()
            assert message["id"] == over and message["type"] == "error"
            [error] = message["payload"]
            assert error["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            assert "WebSocket" in error["message"]
            await two.subscribe("subscription { jobEvents { id } }")
            over = await two.subscribe(FOLLOW_UNKNOWN)
            message = await two.receive()
            assert message["id"] == over and message["type"] == "error"
            assert message["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            async with graphql_ws(url, payload={"apiKey": api.keys.bob}) as bob:
                op = await bob.subscribe(FOLLOW_UNKNOWN)  # another key has its own
                assert (await bob.next_payload(op)) is not None
            await first.send({"id": held[0], "type": "complete"})
            while True:  # the completed one frees its place (once the server ends it)
                op = await two.subscribe(FOLLOW_UNKNOWN)
                message = await two.receive()
                if message["type"] == "next":
                    break
                assert message["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_revoked_keys_open_sockets_are_closed(settings_factory: Any) -> None:
    async with secured(settings_factory, api_key_cache_seconds=1) as api:
        url = api.live.ws_url
        async with (
            graphql_ws(url, payload={"apiKey": api.keys.alice}) as alice,
            graphql_ws(url, payload={"apiKey": api.keys.bob}) as bob,
        ):
            await alice.subscribe("subscription { jobEvents { id } }")
            async with open_runtime(api.settings) as runtime:
                assert await auth.revoke_key(runtime.deps, "alice")
            with pytest.raises(ConnectionClosed) as closed:
                await alice.receive()  # bounded by the key cache time, then a check
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4403, "UNAUTHENTICATED")
            op = await bob.subscribe(FOLLOW_UNKNOWN)  # other keys' sockets stay open
            assert (await bob.next_payload(op)) is not None


# ten pages of the jobs with the longest prompts: about 600 KB a result
BIG_RESULT = "{ %s }" % " ".join(  # noqa: UP031
    f"a{i}: jobs(first: 30) {{ edges {{ node {{ prompt }} }} }}" for i in range(10)
)


async def active_websockets(live: LiveServer) -> float:
    metrics = (await live.http.get("/metrics")).text
    [line] = [x for x in metrics.splitlines() if x.startswith("gql_media_active_websockets ")]
    return float(line.split()[1])


async def test_a_socket_that_does_not_read_is_closed_past_its_send_buffer(
    settings_factory: Any,
) -> None:
    async with running(
        settings_factory,
        ws_max_send_buffer_bytes=64 * 1024,
        rate_limit_per_minute=0,
        max_active_jobs=0,
    ) as live:
        for _ in range(30):
            await live.generate(prompt="a long prompt " * 140)
        host, port = live.url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        async with graphql_ws(live.ws_url, sock=sock, max_queue=1) as ws:
            for _ in range(20):  # megabytes of results, none of them read
                await ws.subscribe(BIG_RESULT)
            while await active_websockets(live):  # the server gives up on the socket
                await asyncio.sleep(0.05)
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # what was written before the close, then the close
                    await ws.connection.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4413, "SEND_BUFFER_FULL")


class _HeldKeyCheck:
    """An authenticator whose check of open sockets' keys waits until released, with every
    key it is asked about live."""

    required = True

    def __init__(self) -> None:
        self.asked: asyncio.Queue[set[str]] = asyncio.Queue()
        self.answer = asyncio.Event()

    async def live_digests(self, digests: Any) -> set[str]:
        await self.asked.put(set(digests))
        await self.answer.wait()
        return set(digests)


async def test_a_socket_opened_while_keys_are_checked_is_not_closed_as_revoked(
    settings_factory: Any,
) -> None:
    """A key's socket that opens while the api checks the keys of the open ones (a query
    that did not ask about its key) stays open: only keys asked about and found gone close
    their sockets."""
    from starlette.websockets import WebSocket

    from gql_media.api.sockets import OpenSockets

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        return None

    def websocket() -> WebSocket:
        return WebSocket({"type": "websocket", "path": "/graphql", "headers": []}, receive, send)

    sockets = OpenSockets(settings_factory(auth="required", api_key_cache_seconds=0))
    closed: list[tuple[str, int, str]] = []
    alice, bob = websocket(), websocket()
    sockets.admit(alice, "alice", "digest-a")
    check = _HeldKeyCheck()
    async with sockets.rechecking(check):  # type: ignore[arg-type]
        assert await check.asked.get() == {"digest-a"}
        sockets.admit(bob, "bob", "digest-b")  # opens while that check is out
        for name, entry in (
            ("alice", sockets._sockets[id(alice)]),
            ("bob", sockets._sockets[id(bob)]),
        ):
            entry.close = lambda code, reason, name=name: closed.append((name, code, reason))
        check.answer.set()
        assert await check.asked.get() == {"digest-a", "digest-b"}  # the next check ran
    assert closed == []
