"""Live updates over WebSockets: jobUpdated and jobEvents, on both subscription protocols.

Jobs are created on an api without a worker, so they wait in QUEUED until a test starts a
worker (``running_worker``) next to it; a test waits on subscription messages, never on time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import connect

from gql_media.adapters.events import RESYNC, EventHub, EventPublisher, Subscriber
from gql_media.api.app import Api
from gql_media.domain import AssetSnapshot, JobError, JobKind, JobSnapshot, JobStatus
from gql_media.runtime import Runtime
from gql_media.settings import Settings
from gql_media.worker.main import running_worker
from tests.support import (
    JOB_FIELDS,
    GraphQLWS,
    LiveServer,
    graphql_ws,
    needs_patches,
    start_server,
)

FOLLOW = f"subscription Follow($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"
EVENTS = (
    "subscription Events($filter: JobFilter) { jobEvents(filter: $filter) { id status version } }"
)
CANCEL = """
mutation Cancel($id: ID!) { cancelJob(id: $id) { job { status version } userErrors { code } } }
"""
UNKNOWN = "job_" + "0" * 32
SLOW = {"provider": "mock", "extra": {"delayMs": 60_000, "steps": 600}}


@pytest.fixture
async def api(settings: Settings, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    """The api without a worker; tests start one with ``running_worker(runtime)``."""
    async with start_server(settings, fake_redis_server, with_worker=False) as live:
        yield live


async def create(server: LiveServer, **fields: Any) -> str:
    payload = await server.generate(**fields)
    assert payload["userErrors"] == [], payload
    return str(payload["job"]["id"])


def updates(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for payload in payloads:
        assert "errors" not in payload, payload
    return [payload["data"]["jobUpdated"] for payload in payloads]


def statuses(jobs: list[dict[str, Any]]) -> list[str]:
    """The distinct statuses in order (progress updates repeat RUNNING)."""
    return [status for status, _ in itertools.groupby(job["status"] for job in jobs)]


def assert_rising(jobs: list[dict[str, Any]]) -> None:
    versions = [job["version"] for job in jobs]
    assert versions == sorted(set(versions)), versions


async def until_running(ws: GraphQLWS, op: str) -> list[dict[str, Any]]:
    """Updates up to and including the first RUNNING one."""
    seen: list[dict[str, Any]] = []
    while (payload := await ws.next_payload(op)) is not None:
        seen += updates([payload])
        if seen[-1]["status"] == "RUNNING":
            return seen
    raise AssertionError(f"completed before RUNNING: {seen}")


async def assert_not_found(ws: GraphQLWS, job_id: str) -> None:
    payloads = await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id}))
    assert len(payloads) == 1, payloads
    [error] = payloads[0]["errors"]
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert payloads[0]["data"] is None


async def listening(ws: GraphQLWS, query: str, variables: dict[str, Any]) -> str:
    """Subscribe, and return once the server surely listens for it.

    The protocol has no acknowledgement of a subscription. A jobUpdated subscribed after it
    on the same connection starts after it and registers before reading the database, so
    by the time its answer arrives the first subscription is registered too.
    """
    op = await ws.subscribe(query, variables)
    await assert_not_found(ws, UNKNOWN)
    return op


# -- jobUpdated ---------------------------------------------------------------------------


async def test_snapshot_then_every_change_then_complete(api: LiveServer, runtime: Runtime) -> None:
    job_id = await create(api, **SLOW)
    async with graphql_ws(api.ws_url) as ws:
        op = await ws.subscribe(FOLLOW, {"id": job_id})
        [snapshot] = updates([await ws.next_payload(op) or {}])
        assert (snapshot["status"], snapshot["version"], snapshot["progress"]) == ("QUEUED", 1, 0)
        async with running_worker(runtime):
            running = await until_running(ws, op)
            canceled = (await api.graphql(CANCEL, {"id": job_id}))["data"]["cancelJob"]
            assert canceled["userErrors"] == []
            rest = updates(await ws.collect(op))
    seen = [snapshot, *running, *rest]
    assert statuses(seen) == ["QUEUED", "RUNNING", "CANCELED"]
    assert_rising(seen)
    assert seen[-1]["version"] == canceled["job"]["version"]
    progress = [job["progress"] for job in seen if job["status"] == "RUNNING"]
    assert progress == sorted(progress)


async def test_a_job_is_followed_to_success(api: LiveServer, runtime: Runtime) -> None:
    job_id = await create(api, provider="mock", numOutputs=2)
    async with graphql_ws(api.ws_url) as ws:
        op = await ws.subscribe(FOLLOW, {"id": job_id})
        [snapshot] = updates([await ws.next_payload(op) or {}])
        assert snapshot["status"] == "QUEUED"
        async with running_worker(runtime):
            rest = updates(await ws.collect(op))
    seen = [snapshot, *rest]
    assert_rising(seen)
    assert statuses(seen)[0] == "QUEUED" and statuses(seen)[-1] == "SUCCEEDED"
    final = seen[-1]
    assert final["progress"] == 1.0 and len(final["outputs"]) == 2
    body = await api.graphql(
        f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}", {"id": job_id}
    )
    assert body["data"]["job"] == final


async def test_a_finished_job_gives_its_snapshot_and_completes(server: LiveServer) -> None:
    job_id = await create(server, provider="mock")
    async with graphql_ws(server.ws_url) as ws:
        done = updates(await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id})))[-1]
        assert done["status"] == "SUCCEEDED"
        again = updates(await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id})))
    assert again == [done]


async def test_a_null_connection_init_payload_is_accepted(server: LiveServer) -> None:
    job_id = await create(server, provider="mock")
    async with connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as connection:  # type: ignore[list-item]
        ws = GraphQLWS(connection)
        await ws.send({"type": "connection_init", "payload": None})
        assert await ws.receive() == {"type": "connection_ack"}
        done = updates(await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id})))
    assert done[-1]["status"] == "SUCCEEDED"


async def test_unknown_ids_are_not_found_and_the_connection_survives(
    api: LiveServer, runtime: Runtime
) -> None:
    job_id = await create(api, provider="mock")
    async with graphql_ws(api.ws_url) as ws:
        for bad in [UNKNOWN, "nope", "", "job_zz", "med_" + "0" * 32]:
            await assert_not_found(ws, bad)
        async with running_worker(runtime):
            seen = updates(await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id})))
    assert seen[-1]["status"] == "SUCCEEDED"


async def test_invalid_operations_are_error_messages_with_codes(api: LiveServer) -> None:
    invalid = [
        ("subscription { jobUpdated(id: 1) { nope } }", None, "GRAPHQL_VALIDATION_FAILED"),
        ("subscription { jobUpdated(id: 1) { id } ", None, "GRAPHQL_PARSE_FAILED"),
        (EVENTS, {"filter": {"status": ["DONE"]}}, "GRAPHQL_VALIDATION_FAILED"),
        (EVENTS, {"filter": {"createdAfter": "yesterday"}}, "GRAPHQL_VALIDATION_FAILED"),
    ]
    async with graphql_ws(api.ws_url) as ws:
        for query, variables, code in invalid:
            op = await ws.subscribe(query, variables)
            message = await ws.receive()
            assert (message["id"], message["type"]) == (op, "error"), message
            assert [e["extensions"]["code"] for e in message["payload"]] == [code], message
            assert "Traceback" not in json.dumps(message)
        await assert_not_found(ws, UNKNOWN)  # the connection is still usable


async def test_two_subscribers_each_get_every_change(api: LiveServer, runtime: Runtime) -> None:
    job_id = await create(api, **SLOW)
    async with graphql_ws(api.ws_url) as one, graphql_ws(api.ws_url) as two:
        ops = [await ws.subscribe(FOLLOW, {"id": job_id}) for ws in (one, two)]
        seen: list[list[dict[str, Any]]] = [[], []]
        for ws, op, into in zip((one, two), ops, seen, strict=True):
            into += updates([await ws.next_payload(op) or {}])
        async with running_worker(runtime):
            for ws, op, into in zip((one, two), ops, seen, strict=True):
                into += await until_running(ws, op)
            await api.graphql(CANCEL, {"id": job_id})
            for ws, op, into in zip((one, two), ops, seen, strict=True):
                into += updates(await ws.collect(op))
    for jobs in seen:
        assert statuses(jobs) == ["QUEUED", "RUNNING", "CANCELED"]
        assert_rising(jobs)
    assert seen[0][-1] == seen[1][-1]


# -- the legacy graphql-ws protocol (subscriptions-transport-ws) --------------------------


class LegacyWS:
    """start / data / complete / stop, on a connection that graphql_ws already acknowledged."""

    def __init__(self, ws: GraphQLWS) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def start(self, query: str, variables: dict[str, Any] | None = None) -> str:
        op = f"legacy-{next(self._ids)}"
        payload = {"query": query, "variables": variables}
        await self.ws.send({"id": op, "type": "start", "payload": payload})
        return op

    async def stop(self, op: str) -> None:
        await self.ws.send({"id": op, "type": "stop"})

    async def next_payload(self, op: str) -> dict[str, Any] | None:
        while True:
            message = await self.ws.receive()
            if message.get("id") != op:
                continue
            if message["type"] == "data":
                payload: dict[str, Any] = message["payload"]
                return payload
            if message["type"] == "complete":
                return None
            raise AssertionError(f"unexpected message {message}")

    async def collect(self, op: str) -> list[dict[str, Any]]:
        payloads = []
        while (payload := await self.next_payload(op)) is not None:
            payloads.append(payload)
        return payloads


async def test_legacy_protocol_follows_a_job(api: LiveServer, runtime: Runtime) -> None:
    job_id = await create(api, **SLOW)
    async with graphql_ws(api.ws_url, protocol="graphql-ws") as ws:
        assert ws.connection.subprotocol == "graphql-ws"
        legacy = LegacyWS(ws)
        op = await legacy.start(FOLLOW, {"id": job_id})
        seen = updates([await legacy.next_payload(op) or {}])
        assert seen[0]["status"] == "QUEUED"
        async with running_worker(runtime):
            while seen[-1]["status"] != "RUNNING":
                seen += updates([await legacy.next_payload(op) or {}])
            await api.graphql(CANCEL, {"id": job_id})
            seen += updates(await legacy.collect(op))
        assert statuses(seen) == ["QUEUED", "RUNNING", "CANCELED"]
        assert_rising(seen)

        [missing] = await legacy.collect(await legacy.start(FOLLOW, {"id": UNKNOWN}))
        assert missing["data"] is None
        assert [e["extensions"]["code"] for e in missing["errors"]] == ["NOT_FOUND"]

        invalid = await legacy.start("subscription { jobUpdated(id: 1) { nope } }")
        message = await ws.receive()
        assert (message["id"], message["type"]) == (invalid, "error"), message
        assert message["payload"]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"

        # A stream that never ends on its own ends with stop.
        events = await legacy.start(EVENTS, {})
        [again] = updates(await legacy.collect(await legacy.start(FOLLOW, {"id": job_id})))
        assert again == seen[-1]
        await legacy.stop(events)
        assert await legacy.next_payload(events) is None


# -- jobEvents ----------------------------------------------------------------------------


async def events_until(ws: GraphQLWS, op: str, job_id: str, status: str) -> list[dict[str, Any]]:
    """jobEvents payloads up to ``job_id`` reaching ``status``."""
    seen: list[dict[str, Any]] = []
    while True:
        payload = await ws.next_payload(op)
        assert payload is not None and "errors" not in payload, payload
        seen.append(payload["data"]["jobEvents"])
        if (seen[-1]["id"], seen[-1]["status"]) == (job_id, status):
            return seen


async def test_job_events_deliver_only_matching_jobs(api: LiveServer, runtime: Runtime) -> None:
    async with (
        graphql_ws(api.ws_url) as by_provider,
        graphql_ws(api.ws_url) as by_status,
        graphql_ws(api.ws_url) as everything,
    ):
        mock_op = await listening(by_provider, EVENTS, {"filter": {"provider": "mock"}})
        done_op = await listening(by_status, EVENTS, {"filter": {"status": ["SUCCEEDED"]}})
        all_op = await listening(everything, EVENTS, {})
        canceled = await create(api, provider="mock")
        await api.graphql(CANCEL, {"id": canceled})
        seen_all = await events_until(everything, all_op, canceled, "CANCELED")
        # One job after the other, so every stream has all of a job's events before the next.
        async with running_worker(runtime):
            local = await create(api, provider="local")
            seen_all += await events_until(everything, all_op, local, "SUCCEEDED")
            mock = await create(api, provider="mock")
            seen_all += await events_until(everything, all_op, mock, "SUCCEEDED")
            seen_mock = await events_until(by_provider, mock_op, mock, "SUCCEEDED")
            seen_done = await events_until(by_status, done_op, mock, "SUCCEEDED")

    assert {e["id"] for e in seen_all} == {canceled, local, mock}
    assert {e["id"] for e in seen_mock} == {canceled, mock}
    assert [e["status"] for e in seen_mock if e["id"] == canceled][-1] == "CANCELED"
    assert [(e["id"], e["status"]) for e in seen_done] == [
        (local, "SUCCEEDED"),
        (mock, "SUCCEEDED"),
    ]
    for stream in (seen_all, seen_mock):
        for job_id in {e["id"] for e in stream}:
            assert_rising([e for e in stream if e["id"] == job_id])


async def test_a_query_over_the_legacy_protocol_is_a_client_error(server: LiveServer) -> None:
    async with graphql_ws(server.ws_url, protocol="graphql-ws") as ws:
        await ws.send({"id": "1", "type": "start", "payload": {"query": "{ providers { name } }"}})
        message = await ws.receive()
    assert message["type"] in ("data", "error"), message
    payload = message["payload"]
    error = payload["errors"][0] if "errors" in payload else payload
    assert error["extensions"]["code"] == "BAD_REQUEST", message


@needs_patches("shared_results")
async def test_subscribers_asking_the_same_share_one_rendering(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphql import OperationType
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

    runs: list[int] = []
    original = StrawberryGraphQLCoreExecutionContext.execute_operation

    def counted(self: Any, serially: bool | None = None) -> Any:
        if self.operation.operation is OperationType.SUBSCRIPTION:
            runs.append(self.root_value.version)
        return original(self, serially)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_operation", counted)
    document = f"subscription {{ jobEvents {{ {JOB_FIELDS} }} }}"
    sockets = [graphql_ws(server.ws_url) for _ in range(3)]
    clients = [await socket.__aenter__() for socket in sockets]
    try:
        ops = [await client.subscribe(document) for client in clients]
        job_id = (await server.generate(provider="mock", width=64, height=64))["job"]["id"]
        seen: list[list[dict[str, Any]]] = []
        for client, op in zip(clients, ops, strict=True):
            events: list[dict[str, Any]] = []
            while not events or events[-1]["status"] != "SUCCEEDED":
                payload = await client.next_payload(op)
                assert payload is not None
                event = payload["data"]["jobEvents"]
                assert event["id"] == job_id
                events.append(event)
            seen.append(events)
    finally:
        for socket in sockets:
            await socket.__aexit__(None, None, None)
    finals = [events[-1] for events in seen]
    assert finals[0] == finals[1] == finals[2]
    # each version was rendered once, whichever subscribers received it
    assert len(runs) == len(set(runs))
    delivered = {event["version"] for events in seen for event in events}
    assert delivered <= set(runs)


# -- events written straight to the socket (api.patches.direct_events) ---------------------


async def follow_and_watch(
    server: LiveServer, runtime: Runtime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A job made, followed over jobUpdated and jobEvents on a socket each, then run to
    success by a worker: both lists of updates, up to the end."""
    async with graphql_ws(server.ws_url) as watcher, graphql_ws(server.ws_url) as follower:
        events_op = await listening(watcher, EVENTS, {})
        job_id = await create(server, provider="mock", width=64, height=64)
        follow_op = await follower.subscribe(FOLLOW, {"id": job_id})
        followed = updates([await follower.next_payload(follow_op) or {}])  # QUEUED
        watched: list[dict[str, Any]] = []
        async with running_worker(runtime):
            followed += updates(await asyncio.wait_for(follower.collect(follow_op), timeout=20))
            while not watched or watched[-1]["status"] != "SUCCEEDED":
                payload = await asyncio.wait_for(watcher.next_payload(events_op), timeout=20)
                assert payload is not None and "errors" not in payload, payload
                watched.append(payload["data"]["jobEvents"])
    return followed, watched


def assert_whole_run(followed: list[dict[str, Any]], watched: list[dict[str, Any]]) -> None:
    assert statuses(followed) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert statuses(watched) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert_rising(followed)
    assert_rising(watched)
    assert watched[-1]["version"] == followed[-1]["version"]


@needs_patches("uvicorn_ws", "shared_results", "direct_events")
async def test_changes_go_straight_to_waiting_sockets_in_order(
    api: LiveServer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gql_media.api.patches.uvicorn_ws import LightWebSocketProtocol

    written: list[bytes] = []
    send_texts_now = LightWebSocketProtocol.send_texts_now

    def recording(self: LightWebSocketProtocol, texts: list[bytes]) -> bool:
        sent = send_texts_now(self, texts)
        if sent:
            written.extend(texts)
        return sent

    monkeypatch.setattr(LightWebSocketProtocol, "send_texts_now", recording)
    followed, watched = await follow_and_watch(api, runtime)
    assert_whole_run(followed, watched)
    direct = [orjson.loads(text) for text in written]
    # the same messages as the usual path sends
    assert {m["type"] for m in direct} == {"next"} and all(m["id"] for m in direct)
    by_field = {
        field: [m["payload"]["data"][field] for m in direct if field in m["payload"]["data"]]
        for field in ("jobUpdated", "jobEvents")
    }
    # a dashboard's changes after it subscribed, and a follower's between its first
    # snapshot and its last (which ends the operation, so goes its own way)
    assert by_field["jobEvents"] and by_field["jobEvents"][-1] == watched[-1]
    assert all(update in followed[1:-1] for update in by_field["jobUpdated"])
    assert all(event in watched for event in by_field["jobEvents"])


@needs_patches("uvicorn_ws", "shared_results", "direct_events")
async def test_changes_a_socket_cannot_take_at_once_go_the_usual_way(
    api: LiveServer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gql_media.api.patches.uvicorn_ws import LightWebSocketProtocol

    refused: list[int] = []

    def full(self: LightWebSocketProtocol, texts: list[bytes]) -> bool:
        refused.append(len(texts))
        return False  # as when the transport's buffer is full

    monkeypatch.setattr(LightWebSocketProtocol, "send_texts_now", full)
    assert_whole_run(*await follow_and_watch(api, runtime))
    assert refused


@needs_patches("uvicorn_ws", "shared_results", "direct_events")
@pytest.mark.parametrize("declining", ["none", "raise"])
async def test_changes_that_cannot_be_rendered_at_once_keep_their_order(
    api: LiveServer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, declining: str
) -> None:
    from gql_media.api.patches.shared_results import SharedEventExecution

    render_payload = SharedEventExecution.render_payload
    declined: list[int] = []

    def every_other(self: SharedEventExecution, event: Any) -> bytes | None:
        if event.version % 2:
            declined.append(event.version)
            if declining == "raise":
                raise RuntimeError("a bug while rendering")
            return None  # as for a result with errors, or one to await
        return render_payload(self, event)

    monkeypatch.setattr(SharedEventExecution, "render_payload", every_other)
    assert_whole_run(*await follow_and_watch(api, runtime))
    assert declined


async def test_a_completed_dashboard_gets_no_more_changes(server: LiveServer) -> None:
    """Changes written directly stop with the operation: they go out only while the
    subscription's task waits for them and while the connection still runs it."""
    async with graphql_ws(server.ws_url) as ws:
        dashboard = await listening(ws, EVENTS, {})
        first = await create(server, provider="mock", width=64, height=64)
        while (payload := await ws.next_payload(dashboard)) is not None:
            event = payload["data"]["jobEvents"]
            if (event["id"], event["status"]) == (first, "SUCCEEDED"):
                break
        await ws.send({"id": dashboard, "type": "complete"})
        # the server reads a connection's messages in order: once this answers, it has
        # ended the dashboard's operation
        await assert_not_found(ws, UNKNOWN)
        second = await create(server, provider="mock", width=64, height=64)
        follow = await ws.subscribe(FOLLOW, {"id": second})
        after: list[dict[str, Any]] = []
        while True:
            message = await asyncio.wait_for(ws.receive(), timeout=20)
            after.append(message)
            if message.get("id") == follow and message["type"] == "complete":
                break
    assert [m for m in after if m.get("id") == dashboard] == []
    assert any(m.get("id") == follow and m["type"] == "next" for m in after)


def test_an_event_carries_the_whole_snapshot_back_unchanged() -> None:
    """Events are the snapshot's dataclasses written by orjson; the api reads them back."""
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # no microseconds
    snapshot = JobSnapshot(
        id="job_1",
        kind=JobKind.PROCESS_IMAGE,
        status=JobStatus.FAILED,
        progress=0.25,
        version=7,
        prompt="a ünïcode prompt",
        provider="mock",
        model=None,
        parameters={"nested": {"list": [1, 2.5, None, "x"]}},
        attempts=2,
        max_attempts=3,
        error=JobError("PROVIDER_ERROR", "it broke", True),
        created_at=created,
        updated_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        started_at=datetime(2026, 1, 2, 3, 4, 5, 1),  # naive, as SQLite returns them
        outputs=(
            AssetSnapshot(
                "a1",
                "k/0.png",
                "image/png",
                64,
                48,
                123,
                "0" * 64,
                "thumb",
                None,
                {"codecs": ["h264"]},
                created,
            ),
        ),
        result={"duration": 1.5},
        owner="ab" * 16,
        webhook_url="https://example.test/hook",
    )
    decoded = orjson.loads(snapshot.to_json())
    assert decoded["status"] == "FAILED" and decoded["kind"] == "PROCESS_IMAGE"
    assert decoded["created_at"] == created.isoformat()
    assert JobSnapshot.from_dict(decoded) == snapshot


def test_alike_subscribers_are_asked_once_per_event() -> None:
    """Many dashboards with the same filter: an event is tested against the filter once, and
    each of them still receives it; a subscriber with another filter is asked on its own."""
    asked: list[str] = []

    def wanting(name: str, status: JobStatus) -> Any:
        def wanted(job: JobSnapshot) -> bool:
            asked.append(name)
            return job.status is status

        return wanted

    hub = EventHub(redis=None, namespace="unit")  # type: ignore[arg-type]
    running = [
        hub.subscribe(None, wanting("running", JobStatus.RUNNING), alike="running")
        for _ in range(3)
    ]
    failed = hub.subscribe(None, wanting("failed", JobStatus.FAILED), alike="failed")
    alone = hub.subscribe(None, wanting("alone", JobStatus.RUNNING))
    created = datetime(2026, 1, 1, tzinfo=UTC)
    job = JobSnapshot(
        "job_1",
        JobKind.GENERATE_IMAGE,
        JobStatus.RUNNING,
        0.0,
        2,
        "p",
        "mock",
        None,
        {},
        1,
        3,
        None,
        created,
        created,
    )
    hub.dispatch(job)
    assert sorted(asked) == ["alone", "failed", "running"]
    assert all(s._pending == {"job_1": job} for s in [*running, alone])
    assert not failed._pending
    with pytest.raises(TypeError):  # refused when subscribing, not later in the dispatcher
        hub.subscribe(None, wanting("list", JobStatus.RUNNING), alike=["unhashable"])


async def test_changes_published_together_reach_redis_together(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker finishing several jobs at once sends their events together; each subscriber
    still gets its job's event, and a later change follows in order."""
    namespace = runtime.settings.redis_namespace
    hub = EventHub(runtime.redis, namespace)
    await hub.start()
    try:
        await hub.wait_listening()
        created = datetime(2026, 1, 1, tzinfo=UTC)
        jobs = [
            JobSnapshot(
                f"job_{n}", JobKind.GENERATE_IMAGE, JobStatus.RUNNING, 0.0, 2, "p", "mock",
                None, {}, 1, 3, None, created, created,
            )
            for n in range(5)
        ]  # fmt: skip
        subscribers = [hub.subscribe(job.id) for job in jobs]
        publisher = EventPublisher(runtime.redis, namespace)
        round_trips: list[str] = []
        pipeline, publish = runtime.redis.pipeline, runtime.redis.publish

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            round_trips.append("pipeline")
            return pipeline(*args, **kwargs)

        async def counted_publish(*args: Any, **kwargs: Any) -> Any:
            round_trips.append("publish")
            return await publish(*args, **kwargs)

        monkeypatch.setattr(runtime.redis, "pipeline", counted_pipeline)
        monkeypatch.setattr(runtime.redis, "publish", counted_publish)

        # two go at once (as many as may be out), the three published meanwhile share one
        await asyncio.gather(*(publisher.publish(job) for job in jobs))
        assert round_trips == ["publish", "publish", "pipeline"]
        assert [await s.get() for s in subscribers] == jobs

        done = dataclasses.replace(jobs[0], status=JobStatus.SUCCEEDED, version=3)
        await publisher.publish(done)
        assert round_trips == ["publish", "publish", "pipeline", "publish"]
        assert await subscribers[0].get() == done
    finally:
        await hub.stop()


async def test_the_hub_decodes_only_the_events_of_jobs_its_subscribers_follow(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most events on an api concern jobs nobody there follows: their JSON is read for the
    job's id, and the rest is not decoded; a subscriber to every job gets all of them."""
    namespace = runtime.settings.redis_namespace
    hub = EventHub(runtime.redis, namespace)
    decoded: list[str] = []
    from_dict = JobSnapshot.from_dict

    def counted(data: dict[str, Any]) -> JobSnapshot:
        decoded.append(data["id"])
        return from_dict(data)

    monkeypatch.setattr(JobSnapshot, "from_dict", staticmethod(counted))
    await hub.start()
    try:
        await hub.wait_listening()
        publisher = EventPublisher(runtime.redis, namespace)
        followed = hub.subscribe("followed")
        for job_id in ("other", "followed"):
            await publisher.publish(_version(job_id, 1))
        assert await followed.get() == _version("followed", 1)  # "other" came before it
        assert decoded == ["followed"]
        everything = hub.subscribe(None)
        for job_id in ("other", "followed"):
            await publisher.publish(_version(job_id, 2))
        assert [await everything.get(), await everything.get()] == [
            _version("other", 2),
            _version("followed", 2),
        ]
        assert decoded == ["followed", "other", "followed"]
    finally:
        await hub.stop()


def _version(job_id: str, version: int) -> JobSnapshot:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return JobSnapshot(
        id=job_id,
        kind=JobKind.GENERATE_IMAGE,
        status=JobStatus.RUNNING,
        progress=0.0,
        version=version,
        prompt="p",
        provider="mock",
        model=None,
        parameters={},
        attempts=1,
        max_attempts=3,
        error=None,
        created_at=created,
        updated_at=created,
    )


async def test_an_inbox_gives_the_newest_snapshot_of_each_job_oldest_job_first() -> None:
    inbox = Subscriber(maxsize=8, predicate=None)
    a1, b1, a2 = _version("a", 1), _version("b", 1), _version("a", 2)
    for snapshot in (a1, b1, a2, a1):  # the late a1 is older than what is pending
        inbox.offer(snapshot)
    assert [await inbox.get(), await inbox.get()] == [a2, b1]
    assert inbox.dropped == 0


async def test_a_full_inbox_drops_its_oldest_job() -> None:
    inbox = Subscriber(maxsize=2, predicate=None)
    a, b, c = _version("a", 1), _version("b", 1), _version("c", 1)
    for snapshot in (a, b, c):
        inbox.offer(snapshot)
    assert inbox.dropped == 1
    assert [await inbox.get(), await inbox.get()] == [b, c]


async def test_an_inbox_gives_a_resync_before_what_is_pending() -> None:
    inbox = Subscriber(maxsize=8, predicate=lambda job: job.id != "skipped")
    a = _version("a", 1)
    inbox.offer(_version("skipped", 1))
    inbox.offer(a)
    inbox.request_resync()
    assert await inbox.get() is RESYNC
    assert await inbox.get() == a


async def test_a_waiting_reader_wakes_for_each_snapshot_and_survives_cancellation() -> None:
    inbox = Subscriber(maxsize=8, predicate=None)
    loop = asyncio.get_running_loop()
    a1, a2 = _version("a", 1), _version("a", 2)
    for snapshot in (a1, a2):
        reader = asyncio.create_task(inbox.get())
        loop.call_soon(inbox.accept, snapshot)  # runs once the reader waits
        assert await reader == snapshot
    canceled = asyncio.create_task(inbox.get())
    loop.call_soon(canceled.cancel)
    with pytest.raises(asyncio.CancelledError):
        await canceled
    reader = asyncio.create_task(inbox.get())
    loop.call_soon(inbox.request_resync)
    assert await reader is RESYNC


async def test_graphql_websockets_skip_the_http_middleware_and_others_do_not() -> None:
    """The app hands a GraphQL WebSocket straight to its endpoint (with the route's scope,
    also under a root path); other WebSockets and HTTP pass the middleware and router."""
    passed: list[tuple[str, str]] = []
    reached: list[dict[str, Any]] = []

    class Recording:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            passed.append((scope["type"], scope["path"]))
            await self.app(scope, receive, send)

    class Endpoint:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            reached.append(dict(scope))

    endpoint = Endpoint()

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    route = WebSocketRoute("/graphql", endpoint)
    app = Api(route, routes=[route], middleware=[Middleware(Recording)])

    def scope(path: str, root_path: str = "") -> dict[str, Any]:
        return {"type": "websocket", "path": root_path + path, "root_path": root_path}

    await app(scope("/graphql"), receive, send)
    await app(scope("/graphql", root_path="/api"), receive, send)
    assert passed == []
    assert [s["endpoint"] for s in reached] == [endpoint, endpoint]
    assert all(s["app"] is app and s["router"] is app.router for s in reached)
    await app(scope("/elsewhere"), receive, send)
    assert passed == [("websocket", "/elsewhere")] and len(reached) == 2
    assert sent[-1]["type"] == "websocket.close"
