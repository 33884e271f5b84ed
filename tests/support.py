"""Test helpers: a live uvicorn server and a graphql-transport-ws client."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect

from gql_media.api.app import create_app
from gql_media.api.protocols import server_options
from gql_media.client import PARAMETER_FIELDS
from gql_media.runtime import Runtime
from gql_media.settings import Settings
from gql_media.worker.main import running_worker

# GQL_MEDIA_TEST_PATCHES=none runs the tests with the api's speed patches off (the settings
# factory passes it on as GQL_MEDIA_PATCHES); a test of a patch itself needs it on
TEST_PATCHES = os.environ.get("GQL_MEDIA_TEST_PATCHES", "all")


@contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The statements ``engine`` sends while the block runs, with their parameters."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def needs_patches(*names: str) -> pytest.MarkDecorator:
    """Skip a test of these patches' own doings when the run has them off."""
    from gql_media.settings import Settings

    on = Settings(patches=TEST_PATCHES).patches_on
    missing = [name for name in names if name not in on]
    return pytest.mark.skipif(bool(missing), reason=f"patches off: {', '.join(missing)}")


GENERATE = """
mutation Generate($input: GenerateImageInput!) {
  generateImage(input: $input) {
    job { id status progress version outputs { id url contentType width height byteSize sha256 } }
    userErrors { field code message }
  }
}
"""

# every field of a job's typed parameters
PARAMETERS = PARAMETER_FIELDS
JOB_FIELDS = """
id kind status progress version prompt provider model attempts maxAttempts
parameters {
  ... on GenerateImageParameters { negativePrompt width height numOutputs seed outputFormat }
  ... on ProcessImageParameters { mediaId }
  ... on ProcessVideoParameters { mediaId }
}
error { code message retryable }
outputs { id url contentType width height byteSize sha256 }
createdAt startedAt finishedAt updatedAt
"""


async def open_slots(deps: Any, slots: int = 8) -> None:
    """Register worker slots with the scheduler, as a running worker does, for tests that
    watch jobs reach arq's queue without running a worker."""
    await deps.queue.register_worker("test-slots", slots, ttl=3600)


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``condition`` holds, checking it again every few milliseconds."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    http: httpx.AsyncClient
    app: Any = None  # the Starlette app being served

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a GraphQL request; returns the whole response body."""
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def generate(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("prompt", "a lighthouse at dusk")
        body = await self.graphql(GENERATE, {"input": fields})
        assert "errors" not in body, body
        payload: dict[str, Any] = body["data"]["generateImage"]
        return payload


@asynccontextmanager
async def start_server(
    settings: Settings,
    fake_redis_server: Any,
    *,
    with_worker: bool,
    port: int | None = None,
    background: Callable[[Runtime], AbstractAsyncContextManager[Any]] | None = None,
) -> AsyncIterator[LiveServer]:
    """``background`` replaces the in-process worker (to reach the server's Runtime)."""
    app = create_app(
        settings,
        background=background or (running_worker if with_worker else None),
        fake_redis_server=fake_redis_server,
    )
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        **server_options(settings),  # as the api serves
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield LiveServer(url=url, http=http, app=app)
    finally:
        server.should_exit = True
        await task


class GraphQLWS:
    """A minimal graphql-transport-ws client for tests."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self._ids = itertools.count(1)

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await self.connection.recv())
        return message

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        op_id = str(next(self._ids))
        await self.send(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
        return op_id

    async def next_payload(self, op_id: str) -> dict[str, Any] | None:
        """The payload of the next ``next`` message for ``op_id``; None once it completes."""
        while True:
            message = await self.receive()
            if message.get("id") != op_id:
                continue
            if message["type"] == "next":
                payload: dict[str, Any] = message["payload"]
                return payload
            if message["type"] == "complete":
                return None
            raise AssertionError(f"unexpected message {message}")

    async def collect(self, op_id: str) -> list[dict[str, Any]]:
        """Every payload until the server completes the operation."""
        payloads = []
        while (payload := await self.next_payload(op_id)) is not None:
            payloads.append(payload)
        return payloads


@asynccontextmanager
async def graphql_ws(
    url: str,
    protocol: str = "graphql-transport-ws",
    payload: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[GraphQLWS]:
    """An acknowledged connection; ``options`` go to websockets' ``connect``."""
    async with connect(url, subprotocols=[protocol], **options) as connection:  # type: ignore[list-item]
        client = GraphQLWS(connection)
        await client.send({"type": "connection_init", "payload": payload or {}})
        ack = await client.receive()
        assert ack["type"] == "connection_ack", ack
        yield client


async def statuses_until(pubsub: Any, job_id: str, last: str) -> list[str]:
    """The statuses of ``job_id``'s events on ``pubsub`` (subscribed to the events
    channel), read until one is ``last``; 10 s at most."""
    statuses: list[str] = []
    async with asyncio.timeout(10):
        while last not in statuses:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            event = json.loads(message["data"]) if message is not None else {}
            if event.get("id") == job_id:
                statuses.append(event["status"])
    return statuses
