"""The scheduler across processes: an api and two worker processes (two slots each) on real
PostgreSQL and Redis, keys made with the CLI, jobs of the `mock` provider that take a set
time. What the workers did is read off the jobs' events (``jobEvents``, as an admin): each
attempt's start and end, in the database's clock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import INTEGRATION, TEST_REDIS_URL, _admin
from tests.faults import gql_media_process
from tests.support import free_port, graphql_ws
from tests.test_processes import until_ready, ws_url

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not INTEGRATION, reason="needs PostgreSQL and Redis"),
]

SLOTS = 4  # two workers, two slots each
EVENTS = """subscription { jobEvents {
  id status version attempts priority group createdAt startedAt updatedAt error { code } } }"""
BATCH = """mutation($inputs: [GenerateImageInput!]!) {
  generateImages(inputs: $inputs) { jobs { id createdAt } userErrors { field code message } } }"""
FOLLOW = "subscription($id: ID!) { jobUpdated(id: $id) { status queuePosition } }"


TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class Attempt:
    job: str
    owner: str
    group: str | None
    start: datetime
    end: datetime | None = None


@dataclass
class Deployment:
    url: str
    keys: dict[str, str]
    admin: str
    http: httpx.AsyncClient
    events: list[dict[str, Any]] = field(default_factory=list)
    owner_of: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def ended(self, jobs: list[dict[str, Any]]) -> None:
        """Wait until every job of ``jobs`` has ended (its terminal event was recorded)."""
        waiting = {job["id"] for job in jobs}
        while True:
            waiting -= {e["id"] for e in self.events if e["status"] in TERMINAL}
            if not waiting:
                return
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), timeout=60)

    async def submit(self, owner: str, count: int, **fields: Any) -> list[dict[str, Any]]:
        inputs = [
            {"prompt": f"{owner} {i}", "provider": "mock", "width": 64, "height": 64, **fields}
            for i in range(count)
        ]
        response = await self.http.post(
            "/graphql",
            json={"query": BATCH, "variables": {"inputs": inputs}},
            headers={"Authorization": f"Bearer {self.keys[owner]}"},
        )
        answered = datetime.now(UTC).isoformat()  # the jobs wait in the scheduler by now
        payload = response.json()["data"]["generateImages"]
        assert payload["userErrors"] == [], payload
        for job in payload["jobs"]:
            self.owner_of[job["id"]] = owner
            job["answeredAt"] = answered
        jobs: list[dict[str, Any]] = payload["jobs"]
        return jobs

    def attempts(self) -> list[Attempt]:
        """Each attempt: from its RUNNING event to the job's next event that is not."""
        runs: list[Attempt] = []
        current: dict[str, Attempt] = {}
        newest: dict[str, int] = {}
        for event in self.events:
            job = event["id"]
            if event["version"] <= newest.get(job, 0):
                continue  # older than what was seen: versions order a job's changes
            newest[job] = event["version"]
            if event["status"] == "RUNNING" and job not in current:
                current[job] = Attempt(
                    job, self.owner_of.get(job, "?"), event["group"], when(event["startedAt"])
                )
                runs.append(current[job])
            elif event["status"] != "RUNNING" and job in current:
                current.pop(job).end = when(event["updatedAt"])
        return runs

    def started(self, job: str) -> datetime:
        """When the job's last attempt started, from its newest event that says (a busy
        dashboard may get a job's newest state only, not each change)."""
        return max(when(e["startedAt"]) for e in self.events if e["id"] == job and e["startedAt"])


def _keys(env: dict[str, str], *specs: tuple[str, list[str]]) -> dict[str, str]:
    made = {}
    for name, flags in specs:
        done = subprocess.run(
            # one database serves the session: the names are made unique
            [
                sys.executable,
                "-m",
                "gql_media",
                "keys",
                "create",
                "--name",
                f"{name}-{uuid.uuid4()}",
            ]
            + flags,
            env=env,
            capture_output=True,
            check=True,
        )
        made[name] = done.stdout.decode().strip()
    return made


@contextlib.asynccontextmanager
async def deployment(
    postgres_url: str, tmp_path: Path, keys: list[tuple[str, list[str]]], **settings: str
) -> AsyncIterator[Deployment]:
    """Migrate, empty the tables, make the keys, start an api and two workers, and record
    every job event (as an admin) from before the first job is submitted."""
    assert TEST_REDIS_URL is not None
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GQL_MEDIA_")},
        "GQL_MEDIA_DATABASE_URL": postgres_url,
        "GQL_MEDIA_REDIS_URL": TEST_REDIS_URL,
        "GQL_MEDIA_REDIS_NAMESPACE": f"gql_media_sched_{uuid.uuid4().hex[:8]}",
        "GQL_MEDIA_DATA_DIR": str(tmp_path),
        "GQL_MEDIA_AUTH": "required",
        "GQL_MEDIA_SECRET_KEY": "scheduling-test-secret",
        "GQL_MEDIA_RATE_LIMIT_PER_MINUTE": "0",
        "GQL_MEDIA_WORKER_CONCURRENCY": str(SLOTS // 2),
        "GQL_MEDIA_WORKER_METRICS_PORT": "0",
        "GQL_MEDIA_RETRY_BASE_DELAY": "0.05",
        "GQL_MEDIA_MAX_ACTIVE_JOBS": "2000",
        **{f"GQL_MEDIA_{k.upper()}": v for k, v in settings.items()},
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "gql_media", "migrate"], env=env, capture_output=True, check=False
    )
    assert migrate.returncode == 0, migrate.stderr.decode()
    # the session's database: jobs an earlier test left waiting would run here too
    await _admin(postgres_url, "TRUNCATE jobs, media_assets, api_keys CASCADE")
    made = _keys(env, ("admin", ["--admin"]), *keys)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(
            gql_media_process(["api", "--port", str(port)], env, tmp_path / "api.log")
        )
        for n in range(2):
            stack.enter_context(gql_media_process(["worker"], env, tmp_path / f"worker{n}.log"))
        async with until_ready(url, api) as http:
            http.timeout = httpx.Timeout(30)
            d = Deployment(url, made, made["admin"], http)
            payload = {"authorization": f"Bearer {d.admin}"}
            async with graphql_ws(ws_url(url), payload=payload) as ws:
                op = await ws.subscribe(EVENTS)
                recorder = asyncio.create_task(_record(d, ws, op))
                try:
                    yield d
                finally:
                    recorder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await recorder


async def _record(d: Deployment, ws: Any, op: str) -> None:
    while (message := await ws.next_payload(op)) is not None:
        d.events.append(message["data"]["jobEvents"])
        d.changed.set()


def starts_between(d: Deployment, after: datetime, job: str, owner: str) -> int:
    """Starts of ``owner``'s jobs after ``after`` and before ``job`` started."""
    until = d.started(job)
    jobs = {e["id"] for e in d.events if d.owner_of.get(e["id"]) == owner}
    return sum(1 for j in jobs if after < d.started(j) < until)


async def test_priority_owners_and_groups_are_served_in_turn(
    postgres_url: str, tmp_path: Path
) -> None:
    """Behind 1,000 jobs of one owner's group u1: another owner's job, the same owner's
    group u2 and a priority 5 job each start at the next free slot: between the answer to
    their submission and their start, at most one start per busy slot comes first (the
    jobs handed to those slots before they arrived)."""
    keys: list[tuple[str, list[str]]] = [("alice", []), ("bob", [])]
    async with deployment(postgres_url, tmp_path, keys) as d:
        backlog = []
        for _ in range(10):
            backlog += await d.submit("alice", 100, group="u1", extra={"delayMs": 5})
        # the jobs that come after them, while the backlog runs
        late = [
            (await d.submit("bob", 1))[0],
            (await d.submit("alice", 1, group="u2"))[0],
            (await d.submit("alice", 1, group="u1", priority=5))[0],
        ]
        await d.ended(backlog + late)
    for job in late:
        before = starts_between(d, when(job["answeredAt"]), job["id"], "alice")
        assert before <= SLOTS, (job, before)
    # the backlog itself: first come, first served within its group (two workers claim
    # side by side: a start may pass another one dispatched just before it)
    starts = sorted((d.started(j["id"]), i) for i, j in enumerate(backlog))
    assert all(abs(rank - i) <= SLOTS for rank, (_, i) in enumerate(starts))


async def test_caps_are_never_exceeded_and_hold_back_no_one_else(
    postgres_url: str, tmp_path: Path
) -> None:
    """bob's key may run 2 jobs at once and every group 3. bob's two long jobs hold his
    share; his short ones, each failing once and retried (every attempt counts), wait for
    them. At no moment do more run than the caps allow, and carol's jobs, on the other
    slots, all end before bob's long ones do."""
    keys = [("bob", ["--max-running", "2"]), ("carol", [])]
    async with deployment(postgres_url, tmp_path, keys, max_running_per_group="3") as d:
        long = await d.submit("bob", 2, extra={"delayMs": 4000})
        retried = {"delayMs": 30, "fail": "transient", "failAttempts": 1}
        short = await d.submit("bob", 6, extra=retried)
        carol = await d.submit("carol", 12, group="g", extra={"delayMs": 30})
        carol += await d.submit("carol", 12, group="h", extra={"delayMs": 30})
        await d.ended(long + short + carol)
    attempts = d.attempts()
    unended = [a for a in attempts if a.end is None]
    assert not unended, [[e for e in d.events if e["id"] == a.job] for a in unended]
    ends = {a.job: a.end for a in attempts if a.end}
    final = {e["id"]: e for e in d.events if e["status"] in TERMINAL}
    assert {final[j["id"]]["attempts"] for j in short} == {2}  # each failed once, then ran

    def most_at_once(runs: list[Attempt]) -> int:
        edges = sorted([(a.start, 1) for a in runs] + [(a.end, -1) for a in runs if a.end])
        level = peak = 0
        for _, step in edges:  # an end at the same instant as a start comes first
            level += step
            peak = max(peak, level)
        return peak

    by_group: dict[tuple[str, str | None], list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_group[(a.owner, a.group)].append(a)
    assert most_at_once([a for a in attempts if a.owner == "bob"]) <= 2
    assert max(most_at_once(runs) for runs in by_group.values()) <= 3
    assert most_at_once(attempts) <= SLOTS
    # bob at his cap held back none of carol's jobs
    assert max(ends[j["id"]] for j in carol) < min(ends[j["id"]] for j in long)
    assert min(d.started(j["id"]) for j in short) >= min(ends[j["id"]] for j in long)


async def test_deadlines_end_waiting_and_running_jobs(postgres_url: str, tmp_path: Path) -> None:
    async with deployment(postgres_url, tmp_path, [("alice", [])]) as d:
        soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
        running = await d.submit("alice", 1, priority=10, deadline=soon, extra={"delayMs": 30000})
        # about 6.7 s of work on the three other slots, ahead of the next job
        await d.submit("alice", 100, extra={"delayMs": 200})
        waiting = await d.submit("alice", 1, deadline=soon)
        await d.ended(running + waiting)
    final = {e["id"]: e for e in d.events if e["status"] == "FAILED"}
    assert final[running[0]["id"]]["error"] == {"code": "DEADLINE_EXCEEDED"}
    assert final[waiting[0]["id"]]["error"] == {"code": "DEADLINE_EXCEEDED"}
    assert any(e["id"] == running[0]["id"] and e["status"] == "RUNNING" for e in d.events)
    assert final[waiting[0]["id"]]["startedAt"] is None  # it never started


async def test_a_follower_sees_its_place_fall_as_workers_run(
    postgres_url: str, tmp_path: Path
) -> None:
    async with deployment(
        postgres_url, tmp_path, [("alice", [])], queue_position_interval="0.1"
    ) as d:
        jobs = await d.submit("alice", 40, extra={"delayMs": 100})
        payload = {"authorization": f"Bearer {d.keys['alice']}"}
        async with graphql_ws(ws_url(d.url), payload=payload) as ws:
            op = await ws.subscribe(FOLLOW, {"id": jobs[-1]["id"]})
            seen = []
            while (message := await ws.next_payload(op)) is not None:
                seen.append(message["data"]["jobUpdated"])
    places = [s["queuePosition"] for s in seen if s["status"] == "QUEUED"]
    assert places == sorted(places, reverse=True) and len(set(places)) >= 3, places
    assert seen[-1]["status"] == "SUCCEEDED"
