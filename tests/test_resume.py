"""jobEvents(since:): a dashboard that reconnects gets what changed while it was away, then
the live stream, with nothing lost or sent twice across the boundary.

Changes are made to land at exact points of a replay through the api's pause points
(``gql_media.failpoints``): after the replay listens and before it reads, and after it read
its first page. A second socket, subscribed live, tells when the api has handed a change to
its subscribers. Nothing waits on time.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.dialects import postgresql

from gql_media.adapters import redis as redis_adapter
from gql_media.db.models import JobRow
from gql_media.domain import Principal
from gql_media.failpoints import REPLAY_PAGE, REPLAY_START, pausing
from gql_media.runtime import open_runtime
from gql_media.services import replay
from gql_media.services.jobs import JobFilter
from gql_media.settings import Settings
from tests.support import GraphQLWS, LiveServer, graphql_ws, start_server
from tests.test_security import secured
from tests.test_subscriptions import listening

RESUME = """
subscription Resume($filter: JobFilter, $since: DateTime) {
  jobEvents(filter: $filter, since: $since) { id status version updatedAt }
}
"""
LIVE = "subscription { jobEvents { id status version } }"
CREATE = """
mutation($input: GenerateImageInput!) {
  generateImage(input: $input) { job { id version updatedAt } userErrors { code } }
}
"""
CANCEL = (
    "mutation($id: ID!) { cancelJob(id: $id) { job { version updatedAt } userErrors { code } } }"
)
RETRY = "mutation($id: ID!) { retryJob(id: $id) { job { version updatedAt } userErrors { code } } }"

Event = tuple[str, int]
DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
# finished jobs of two owners, one changed every second back from now (over 5 hours)
SEED = text(
    """
    INSERT INTO jobs (id, kind, status, progress, version, provider, parameters, attempts,
                      max_attempts, run_after, created_at, updated_at, owner_id, priority)
    SELECT gen_random_uuid(), 'GENERATE_IMAGE', 'SUCCEEDED', 1, 3, 'mock', '{}', 1, 3,
           t, t, t, (CAST(:owners AS uuid[]))[1 + i % 2], 0
    FROM generate_series(1, 20000) AS i,
         LATERAL (SELECT CAST(:now AS timestamptz) - i * interval '1 second') AS s(t)
    """
)


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[LiveServer]:
    """An api without a worker: jobs wait in QUEUED, and change only as the test says."""
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        yield live


@pytest.fixture
async def api(settings_factory: Any) -> AsyncIterator[LiveServer]:
    async with served(settings_factory()) as live:
        yield live


async def create(api: LiveServer) -> dict[str, Any]:
    body = await api.graphql(CREATE, {"input": {"prompt": "a harbour", "provider": "mock"}})
    payload: dict[str, Any] = body["data"]["generateImage"]
    assert payload["userErrors"] == [], body
    return payload["job"]  # type: ignore[no-any-return]


async def change(api: LiveServer, mutation: str, job_id: str) -> dict[str, Any]:
    body = await api.graphql(mutation, {"id": job_id})
    [payload] = body["data"].values()
    assert payload["userErrors"] == [], body
    return payload["job"]  # type: ignore[no-any-return]


async def events_until(ws: GraphQLWS, op: str, last: Event) -> list[dict[str, Any]]:
    """jobEvents up to and including ``last``."""
    seen: list[dict[str, Any]] = []
    while True:
        payload = await ws.next_payload(op)
        assert payload is not None and "errors" not in payload, payload
        seen.append(payload["data"]["jobEvents"])
        if (seen[-1]["id"], seen[-1]["version"]) == last:
            return seen


def pairs(events: list[dict[str, Any]]) -> list[Event]:
    return [(event["id"], event["version"]) for event in events]


def once(hook: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``hook`` the first time, nothing after."""
    calls = 0

    async def run() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await hook()

    return run


async def refusal(ws: GraphQLWS, since: str, **variables: Any) -> str:
    """The code of the error a resume from ``since`` ends with."""
    payloads = await ws.collect(await ws.subscribe(RESUME, {"since": since, **variables}))
    assert len(payloads) == 1 and payloads[0]["data"] is None, payloads
    [error] = payloads[0]["errors"]
    return str(error["extensions"]["code"])


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def test_a_reconnect_gets_each_job_changed_since_once_at_its_newest(
    api: LiveServer,
) -> None:
    before = await create(api)
    await change(api, CANCEL, before["id"])
    a = await create(api)
    since = a["updatedAt"]  # the last event the dashboard saw
    b = await create(api)
    await change(api, CANCEL, a["id"])
    await change(api, RETRY, a["id"])  # a changed twice more: QUEUED at version 3
    async with graphql_ws(api.ws_url) as ws:
        op = await ws.subscribe(RESUME, {"since": since})
        replayed = await events_until(ws, op, (a["id"], 3))
        await change(api, CANCEL, b["id"])  # live from here
        live = await events_until(ws, op, (b["id"], 2))
    assert pairs(replayed) == [(b["id"], 1), (a["id"], 3)]  # in change order
    assert replayed[-1]["status"] == "QUEUED"
    assert [e["updatedAt"] for e in replayed] == sorted(e["updatedAt"] for e in replayed)
    assert pairs(live) == [(b["id"], 2)]


async def test_a_job_changed_at_the_moment_itself_is_replayed(api: LiveServer) -> None:
    """Jobs made together share one moment: resuming from it loses none of them."""
    first = await create(api)
    async with graphql_ws(api.ws_url) as ws:
        op = await ws.subscribe(RESUME, {"since": first["updatedAt"]})
        later = await create(api)
        seen = await events_until(ws, op, (later["id"], 1))
    assert pairs(seen) == [(first["id"], 1), (later["id"], 1)]


async def test_changes_at_one_moment_are_ordered_by_id_across_pages(
    settings_factory: Any,
) -> None:
    """Two machines may stamp changes with the same moment: the replay orders them by id,
    and a page boundary between them loses none and repeats none."""
    settings = settings_factory(max_page_size=2)
    async with served(settings) as api:
        jobs = [await create(api) for _ in range(5)]
        moment = datetime.now(UTC) - timedelta(seconds=1)
        async with open_runtime(settings) as runtime:
            async with runtime.deps.sessions.begin() as session:
                await session.execute(update(JobRow).values(updated_at=moment))
        last = max(job["id"] for job in jobs)
        async with graphql_ws(api.ws_url) as ws:
            op = await ws.subscribe(RESUME, {"since": iso(moment)})
            replayed = await events_until(ws, op, (last, 1))
    assert [job_id for job_id, _ in pairs(replayed)] == sorted(job["id"] for job in jobs)


async def test_changes_during_the_replay_are_neither_lost_nor_sent_twice(
    settings_factory: Any,
) -> None:
    """Pages of two jobs, and an inbox of one job between reads: the replay holds what
    changes meanwhile, however many jobs. With no clock skew allowed, the replay ends at its
    start: what changes after it comes live only."""
    async with (
        served(
            settings_factory(max_page_size=2, subscriber_queue_size=1, resume_clock_skew=0)
        ) as api,
        graphql_ws(api.ws_url) as watcher,
        graphql_ws(api.ws_url) as ws,
    ):
        j1, j2, j3, j4 = [await create(api) for _ in range(4)]
        ids = {"j1": j1["id"], "j2": j2["id"], "j3": j3["id"], "j4": j4["id"]}
        watching = await listening(watcher, LIVE, {})

        async def handed_out(event: Event) -> None:
            """Once the watcher has it, every subscriber of the api has it."""
            await events_until(watcher, watching, event)

        async def after_listening() -> None:
            # listened to, and also read by the replay: the live copy must be dropped
            await change(api, CANCEL, ids["j2"])
            await handed_out((ids["j2"], 2))

        async def after_first_page() -> None:
            # j1 was read at version 1 (the first page: j1, j3); j4 not yet; j5 is new
            await change(api, CANCEL, ids["j1"])
            await change(api, CANCEL, ids["j4"])
            ids["j5"] = (await create(api))["id"]
            await handed_out((ids["j5"], 1))

        with (
            pausing(REPLAY_START, once(after_listening)),
            pausing(REPLAY_PAGE, once(after_first_page)),
        ):
            op = await ws.subscribe(RESUME, {"since": j1["updatedAt"]})
            replayed = await events_until(ws, op, (ids["j2"], 2))
        await change(api, CANCEL, ids["j3"])  # the last: whatever came twice came before
        live = await events_until(ws, op, (ids["j3"], 2))
    name = {job_id: label for label, job_id in ids.items()}
    seen = [(name[job_id], version) for job_id, version in pairs(replayed + live)]
    assert seen[:3] == [("j1", 1), ("j3", 1), ("j2", 2)], seen  # the replay, in change order
    assert sorted(seen[3:]) == [("j1", 2), ("j3", 2), ("j4", 2), ("j5", 1)], seen
    assert len(set(seen)) == len(seen), seen


async def test_a_resume_too_far_back_or_malformed_is_refused_with_a_code(
    settings_factory: Any,
) -> None:
    now = datetime.now(UTC)
    async with (
        served(settings_factory(resume_max_age=600, resume_max_jobs=2)) as api,
        graphql_ws(api.ws_url) as ws,
    ):
        first = await create(api)
        second = await create(api)
        assert await refusal(ws, iso(now - timedelta(seconds=660))) == "SINCE_TOO_OLD"
        assert await refusal(ws, iso(now + timedelta(hours=1))) == "INVALID_ARGUMENT"
        assert await refusal(ws, iso(now + timedelta(seconds=2))) == "INVALID_ARGUMENT"
        assert await refusal(ws, "2026-12-06T12:00:00") == "INVALID_ARGUMENT"  # no offset
        assert await refusal(ws, "0001-01-01T00:00:00+01:00") == "INVALID_ARGUMENT"
        assert await refusal(ws, "9999-12-31T23:59:59-05:00") == "INVALID_ARGUMENT"
        op = await ws.subscribe(RESUME, {"since": "yesterday"})  # no DateTime at all
        message = await ws.receive()
        assert (message["id"], message["type"]) == (op, "error"), message
        assert message["payload"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert await refusal(ws, iso(now), filter={"provider": "x\x00"}) == "INVALID_ARGUMENT"
        # two jobs changed since: as many as a resume may replay
        op = await ws.subscribe(RESUME, {"since": first["updatedAt"]})
        both = await events_until(ws, op, (second["id"], 1))
        assert pairs(both) == [(first["id"], 1), (second["id"], 1)]
        await create(api)  # three: too many
        assert await refusal(ws, first["updatedAt"]) == "SINCE_TOO_OLD"
        # a since a little ahead (another machine's clock) is taken
        ahead = iso(datetime.now(UTC) + timedelta(seconds=0.5))
        op = await ws.subscribe(RESUME, {"since": ahead})
        fourth = await create(api)
        assert pairs(await events_until(ws, op, (fourth["id"], 1))) == [(fourth["id"], 1)]
        # what counts is what the resume would send: of the three jobs, one is CANCELED
        await change(api, CANCEL, first["id"])
        canceled = {"status": ["CANCELED"]}
        op = await ws.subscribe(RESUME, {"since": first["updatedAt"], "filter": canceled})
        [event] = await events_until(ws, op, (first["id"], 2))
    assert event["status"] == "CANCELED"


async def test_a_resume_shows_only_the_keys_own_jobs(settings_factory: Any) -> None:
    since = iso(datetime.now(UTC) - timedelta(seconds=1))
    async with secured(settings_factory) as api:
        keys = api.keys
        alice = (await api.generate(keys.alice))["job"]["id"]
        bob = (await api.generate(keys.bob))["job"]["id"]
        seen: dict[str, set[str]] = {}
        for name, key in (("bob", keys.bob), ("admin", keys.admin)):
            async with graphql_ws(api.live.ws_url, payload={"apiKey": key}) as ws:
                op = await ws.subscribe(RESUME, {"since": since})
                ids: set[str] = set()
                while not ({alice, bob} <= ids or (name == "bob" and bob in ids)):
                    payload = await ws.next_payload(op)
                    assert payload is not None and "errors" not in payload, payload
                    ids.add(payload["data"]["jobEvents"]["id"])
                # then a new job of bob's, live: alice's jobs never came in between
                last = (await api.generate(keys.bob))["job"]["id"]
                while last not in ids:
                    payload = await ws.next_payload(op)
                    assert payload is not None and "errors" not in payload, payload
                    ids.add(payload["data"]["jobEvents"]["id"])
                seen[name] = ids
    assert alice not in seen["bob"] and bob in seen["bob"]
    assert {alice, bob} <= seen["admin"]


async def test_the_replay_reads_an_index_in_change_order(
    settings_factory: Any, backend: str
) -> None:
    """On PostgreSQL, behind 20,000 jobs of two keys, a replay's count and pages read the
    jobs in change order from an index, a key's own or everyone's."""
    if backend != "postgres":
        pytest.skip("the plans of PostgreSQL")
    owner = uuid.uuid4()
    now = datetime.now(UTC)
    principals = [
        Principal(owner, False, max_priority=None),
        Principal(None, True, max_priority=None),
    ]
    async with open_runtime(settings_factory()) as runtime:
        async with runtime.deps.sessions.begin() as session:
            await session.execute(SEED, {"owners": [owner, uuid.uuid4()], "now": now})
            await session.execute(text("ANALYZE jobs"))
        within = replay.window(now - timedelta(seconds=600), now)  # 600 jobs
        after = (now - timedelta(seconds=300), uuid.uuid4())  # and a page of them read
        used = []
        for principal in principals:
            for stmt in (
                replay.count_statement(JobFilter(), principal, within, 5001),
                replay.page_statement(JobFilter(), principal, within, after, 100),
            ):
                sql = stmt.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True})
                async with runtime.deps.sessions() as session:
                    plan = "\n".join((await session.execute(text(f"EXPLAIN {sql}"))).scalars())
                used.append(re.findall(r"ix_jobs_\w+", plan))
    assert used == [
        ["ix_jobs_owner_id_updated_at_id"],
        ["ix_jobs_owner_id_updated_at_id"],
        ["ix_jobs_updated_at_id"],
        ["ix_jobs_updated_at_id"],
    ], used
