"""A small graphql-transport-ws client, light enough to hold thousands of sockets per loop.

No keep-alive task per socket (the server's pings are answered) and no per-message work
beyond parsing; permessage-deflate is negotiated by default, as browsers do, because it
changes what a connection costs the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

PROTOCOL = Subprotocol("graphql-transport-ws")
FOLLOW = "subscription($id: ID!) { jobUpdated(id: $id) { id status version updatedAt } }"
EVENTS = (
    "subscription($filter: JobFilter) { jobEvents(filter: $filter) "
    "{ id status version createdAt startedAt updatedAt } }"
)
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})

# (message, perf_counter at receipt, wall clock at receipt)
Handler = Callable[[dict[str, Any], float, float], None]


class GraphQLSocket:
    """One connection; ``listen`` hands every message to a handler with its receipt times."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    @classmethod
    async def open(
        cls, url: str, key: str | None = None, compression: bool = True, timeout: float = 30
    ) -> GraphQLSocket:
        connection = await connect(
            url,
            subprotocols=[PROTOCOL],
            compression="deflate" if compression else None,
            ping_interval=None,
            open_timeout=timeout,
            max_queue=64,
        )
        socket = cls(connection)
        try:
            payload = {"Authorization": f"Bearer {key}"} if key else {}
            await socket.send({"type": "connection_init", "payload": payload})
            async with asyncio.timeout(timeout):
                ack = orjson.loads(await connection.recv())
            if ack.get("type") != "connection_ack":
                raise ConnectionError(f"connection refused: {ack}")
        except BaseException:
            await connection.close()
            raise
        return socket

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(orjson.dumps(message).decode())

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any]) -> None:
        await self.send(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )

    async def listen(self, handler: Handler) -> None:
        """Hand each message to ``handler`` until the connection closes."""
        try:
            async for raw in self.connection:
                now, wall = time.perf_counter(), time.time()
                message = orjson.loads(raw)
                if message.get("type") == "ping":
                    await self.send({"type": "pong"})
                    continue
                handler(message, now, wall)
        except ConnectionClosed:
            pass

    async def close(self) -> None:
        await self.connection.close()


def field_of(message: dict[str, Any]) -> dict[str, Any] | None:
    """The job in a ``next`` message (whatever the subscription field), else None."""
    if message.get("type") != "next":
        return None
    data = (message.get("payload") or {}).get("data") or {}
    for value in data.values():
        if isinstance(value, dict):
            return value
    return None


def age_ms(stamp: str, wall: float) -> float:
    """Milliseconds from a server timestamp (ISO 8601) to the wall-clock time ``wall``."""
    return (wall - datetime.fromisoformat(stamp).timestamp()) * 1000
