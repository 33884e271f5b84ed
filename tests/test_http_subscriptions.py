"""Subscriptions over HTTP against a running api with auth required: the graphql-sse client
under Node (distinct connections mode), Apollo's multipart format read with httpx, owners
kept apart, the end after a terminal state, a client that leaves, and the caps.

As in test_clients.py, jobs wait in QUEUED on an api without a worker until the client has
seen them; then a worker starts, so every state reaches the client.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gql_media.adapters import redis as redis_adapter
from gql_media.runtime import Runtime, open_runtime
from gql_media.services import auth
from gql_media.worker.main import running_worker
from tests.support import LiveServer, graphql_ws, start_server
from tests.test_clients import CLIENTS, NODE, STEPPED, assert_followed_to_success, needs_node

needs_graphql_sse = pytest.mark.skipif(
    not (CLIENTS / "node_modules" / "graphql-sse").exists(),
    reason="tests/clients/node_modules has no graphql-sse: run `npm ci` in tests/clients",
)

FOLLOW = """subscription($id: ID!) {
  jobUpdated(id: $id) { id status progress version outputs { url contentType } } }"""
EVENTS = "subscription { jobEvents { id status } }"
SSE = {"Accept": "text/event-stream"}
MULTIPART = {"Accept": "multipart/mixed;subscriptionSpec=1.0, application/json"}
TIMEOUT = 30.0


@dataclass
class Api:
    live: LiveServer
    runtime: Runtime
    alice: str
    bob: str

    def client(self, key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.live.url, headers=headers, timeout=TIMEOUT)

    async def generate(self, key: str) -> str:
        query = "mutation($i: GenerateImageInput!) { generateImage(input: $i) { job { id } } }"
        fields = {"prompt": "a quiet harbour", "width": 64, "height": 64, **STEPPED}
        body = {"query": query, "variables": {"i": fields}}
        async with self.client(key) as http:
            response = await http.post("/graphql", json=body)
        return str(response.json()["data"]["generateImage"]["job"]["id"])

    async def gauges(self) -> tuple[float, float]:
        """Subscriptions served (the event hub's subscribers) and HTTP streams open."""
        body = (await self.live.http.get("/metrics")).text
        return _gauge(body, "gql_media_active_subscriptions"), _gauge(
            body, "gql_media_active_http_streams"
        )

    async def until_gauges(self, expected: tuple[float, float]) -> None:
        """Wait for the gauges to read ``expected``; fails with the last reading."""
        seen = await self.gauges()
        try:
            async with asyncio.timeout(TIMEOUT):
                while seen != expected:
                    await asyncio.sleep(0.02)
                    seen = await self.gauges()
        except TimeoutError:
            raise AssertionError(f"gauges stay at {seen}, not {expected}") from None


def by_version(updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One update per version: a waiting job's place in line is sent again as it falls,
    with the version it has."""
    return list({update["version"]: update for update in updates}.values())


def _gauge(body: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert found, name
    return float(found.group(1))


@asynccontextmanager
async def running_api(settings_factory: Any, **overrides: Any) -> AsyncIterator[Api]:
    settings = settings_factory(
        auth="required", secret_key="test-secret", rate_limit_per_minute=0, **overrides
    )
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with open_runtime(settings, fake) as runtime:
        _, alice = await auth.create_key(runtime.deps, "alice")
        _, bob = await auth.create_key(runtime.deps, "bob")
        async with start_server(settings, fake, with_worker=False) as live:
            yield Api(live, runtime, alice, bob)


@pytest.fixture
async def api(settings_factory: Any) -> AsyncIterator[Api]:
    async with running_api(settings_factory) as running:
        yield running


# -- readers of the two formats -----------------------------------------------------------


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each event of a text/event-stream response; comments skipped."""
    event, data = "message", ""
    async for line in response.aiter_lines():
        if line == "":
            if data or event != "message":
                yield event, data
            event, data = "message", ""
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


async def multipart_payloads(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The ``payload`` of each part of a multipart subscription response (heartbeats, the
    empty parts, skipped); ends at the closing boundary."""
    assert response.headers["content-type"].startswith("multipart/mixed")
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["content-type"])
    assert boundary is not None
    delimiter = b"\r\n--" + boundary.group(1).encode()
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while delimiter in buffer:
            part, buffer = buffer.split(delimiter, 1)
            _, _, body = part.partition(b"\r\n\r\n")
            message = json.loads(body) if body.strip() else {}
            if "payload" in message:
                yield message["payload"]
        if buffer.startswith(b"--"):
            return  # the closing delimiter


@asynccontextmanager
async def stream(
    http: httpx.AsyncClient, accept: dict[str, str], query: str, variables: dict[str, Any]
) -> AsyncIterator[httpx.Response]:
    body = {"query": query, "variables": variables}
    async with http.stream("POST", "/graphql", json=body, headers=accept) as response:
        yield response


# -- the graphql-sse client ---------------------------------------------------------------


async def run_sse_client(api: Api, key: str, job_id: str) -> asyncio.subprocess.Process:
    assert NODE is not None
    return await asyncio.create_subprocess_exec(
        NODE,
        "sse.mjs",
        "--url",
        f"{api.live.url}/graphql",
        "--key",
        key,
        "--job",
        job_id,
        cwd=CLIENTS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@needs_node
@needs_graphql_sse
async def test_graphql_sse_client_follows_a_job_through_every_state(api: Api) -> None:
    job_id = await api.generate(api.alice)
    process = await run_sse_client(api, api.alice, job_id)
    try:
        assert process.stdout is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT))
        assert (first["id"], first["status"]) == (job_id, "QUEUED")
        async with running_worker(api.runtime):
            stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    rest = [json.loads(line) for line in stdout.decode().splitlines()]
    assert_followed_to_success(by_version([first, *rest]), outputs=2)
    await api.until_gauges((0, 0))


@needs_node
@needs_graphql_sse
async def test_graphql_sse_client_cannot_follow_a_strangers_job(api: Api) -> None:
    job_id = await api.generate(api.alice)
    process = await run_sse_client(api, api.bob, job_id)
    stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert (process.returncode, stdout) == (1, b"")
    assert '"code":"NOT_FOUND"' in stderr.decode(), stderr


# -- the multipart format and raw event streams -------------------------------------------


async def test_multipart_subscription_follows_a_job_and_ends(api: Api) -> None:
    job_id = await api.generate(api.alice)
    updates: list[dict[str, Any]] = []
    async with api.client(api.alice) as http:
        async with stream(http, MULTIPART, FOLLOW, {"id": job_id}) as response:
            assert response.status_code == 200
            payloads = multipart_payloads(response)
            first = await anext(payloads)
            assert first["data"]["jobUpdated"]["status"] == "QUEUED"
            assert await api.gauges() == (1, 1)
            async with running_worker(api.runtime):
                rest = [payload async for payload in payloads]  # ends after SUCCEEDED
    for payload in [first, *rest]:
        assert "errors" not in payload, payload
        updates.append(payload["data"]["jobUpdated"])
    assert_followed_to_success(by_version(updates), outputs=2)
    await api.until_gauges((0, 0))


async def test_neither_stream_shows_a_stranger_the_job(api: Api) -> None:
    job_id = await api.generate(api.alice)
    async with api.client(api.bob) as http:
        async with stream(http, MULTIPART, FOLLOW, {"id": job_id}) as response:
            payloads = [payload async for payload in multipart_payloads(response)]
        async with stream(http, SSE, FOLLOW, {"id": job_id}) as response:
            events = [event async for event in sse_events(response)]
    [refused] = payloads
    assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND" and not refused["data"]
    assert [name for name, _ in events] == ["next", "complete"]
    assert json.loads(events[0][1])["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # bob's dashboard sees none of alice's jobs; his own, yes
    async with api.client(api.bob) as http, stream(http, SSE, EVENTS, {}) as response:
        events_of_bob = sse_events(response)
        await api.until_gauges((1, 1))
        await api.generate(api.alice)
        own = await api.generate(api.bob)
        event, data = await anext(events_of_bob)
    assert event == "next" and json.loads(data)["data"]["jobEvents"]["id"] == own


async def test_a_stream_needs_a_key(api: Api) -> None:
    for key in (None, "gqlm_wrong"):
        async with api.client(key) as http:
            for accept in (SSE, MULTIPART):
                async with stream(http, accept, EVENTS, {}) as response:
                    await response.aread()
                assert response.status_code == 401, response.text
                assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_client_that_leaves_frees_its_subscription(api: Api) -> None:
    job_id = await api.generate(api.alice)
    for accept in (SSE, MULTIPART):
        async with api.client(api.alice) as http:
            async with stream(http, accept, FOLLOW, {"id": job_id}) as response:
                chunks = response.aiter_bytes()  # held: dropped, it would close the response
                await anext(chunks)
                await api.until_gauges((1, 1))
            # the client closed the connection while the job still waits
        await api.until_gauges((0, 0))


async def test_streams_past_the_caps_are_refused(settings_factory: Any) -> None:
    async with running_api(
        settings_factory, max_streams_per_key=2, max_subscriptions_per_key=3
    ) as api:
        async with api.client(api.alice) as http, api.client(api.bob) as other:
            async with stream(http, SSE, EVENTS, {}), stream(http, MULTIPART, EVENTS, {}):
                await api.until_gauges((2, 2))
                for accept in (SSE, MULTIPART):
                    async with stream(http, accept, EVENTS, {}) as third:
                        await third.aread()
                    assert third.status_code == 429
                    code = third.json()["errors"][0]["extensions"]["code"]
                    assert code == "TOO_MANY_SUBSCRIPTIONS"
                async with stream(other, SSE, EVENTS, {}):  # bob's own count
                    await api.until_gauges((3, 3))
                # a WebSocket operation of alice's counts with her streams
                payload = {"authorization": f"Bearer {api.alice}"}
                async with graphql_ws(api.live.ws_url, payload=payload) as ws:
                    await ws.subscribe(EVENTS)
                    refused = await ws.subscribe(EVENTS)
                    message = await ws.receive()
                    while message.get("id") != refused:
                        message = await ws.receive()
                    assert message["type"] == "error", message
                    assert message["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            await api.until_gauges((0, 0))
            async with stream(http, SSE, EVENTS, {}) as again:  # free again
                assert again.status_code == 200
                await api.until_gauges((1, 1))


async def test_a_subscription_without_a_stream_is_still_refused(api: Api) -> None:
    async with api.client(api.alice) as http:
        response = await http.post("/graphql", json={"query": EVENTS})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_a_revoked_keys_streams_end(settings_factory: Any) -> None:
    async with running_api(settings_factory, api_key_cache_seconds=0) as api:
        async with api.client(api.alice) as http, api.client(api.bob) as other:
            async with (
                stream(http, SSE, EVENTS, {}) as revoked,
                stream(http, MULTIPART, EVENTS, {}) as also_revoked,
                stream(other, SSE, EVENTS, {}) as kept,
            ):
                await api.until_gauges((3, 3))
                assert await auth.revoke_key(api.runtime.deps, "alice")
                # both streams end where they are: no more results, no `complete`
                assert [event async for event in sse_events(revoked)] == []
                assert [payload async for payload in multipart_payloads(also_revoked)] == []
                await api.until_gauges((1, 1))
                assert kept.status_code == 200
            async with stream(http, SSE, EVENTS, {}) as again:
                await again.aread()
            assert again.status_code == 401


async def watch_token(api: Api, key: str, job_id: str) -> str:
    mint = "mutation($id: ID!) { createWatchToken(jobId: $id) { token userErrors { code } } }"
    async with api.client(key) as http:
        response = await http.post("/graphql", json={"query": mint, "variables": {"id": job_id}})
    payload = response.json()["data"]["createWatchToken"]
    assert payload["userErrors"] == [] and payload["token"], payload
    return str(payload["token"])


async def test_a_watch_token_follows_its_job_over_both_streams(settings_factory: Any) -> None:
    """A browser's page holds a token, not the key: it streams its one job, nothing else,
    and its streams end with the key's."""
    async with running_api(settings_factory, api_key_cache_seconds=0) as api:
        job_id = await api.generate(api.alice)
        other = await api.generate(api.alice)
        token = await watch_token(api, api.alice, job_id)
        async with api.client(token) as http:
            async with stream(http, SSE, FOLLOW, {"id": other}) as response:
                events = [event async for event in sse_events(response)]
            assert json.loads(events[0][1])["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            async with stream(http, SSE, EVENTS, {}) as response:
                events = [event async for event in sse_events(response)]
            assert json.loads(events[0][1])["errors"][0]["extensions"]["code"] == "FORBIDDEN"
            async with (
                stream(http, SSE, FOLLOW, {"id": job_id}) as followed,
                stream(http, MULTIPART, FOLLOW, {"id": job_id}) as also_followed,
            ):
                events_of_token = sse_events(followed)  # kept: a dropped reader closes
                event, data = await anext(events_of_token)
                assert json.loads(data)["data"]["jobUpdated"]["id"] == job_id, (event, data)
                parts_of_token = multipart_payloads(also_followed)
                first = await anext(parts_of_token)
                assert first["data"]["jobUpdated"]["id"] == job_id, first
                await api.until_gauges((2, 2))
                assert await auth.revoke_key(api.runtime.deps, "alice")
                await api.until_gauges((0, 0))  # the minting key's revocation ends them
