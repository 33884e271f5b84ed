"""Redis through Sentinel: the settings, and a failover under load. The primary is
SIGKILLed while jobs are being submitted and run and a dashboard subscription is open; the
sentinels promote a replica that lost the primary's last writes; every accepted job then
succeeds exactly once, new submissions work, and the subscriptions carry on."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio.sentinel import MasterNotFoundError, SentinelConnectionPool
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from gql_media.adapters import redis as redis_adapter
from gql_media.db.models import AssetRow, JobRow
from gql_media.domain import JOB_ID_PREFIX, decode_id
from gql_media.settings import Settings
from tests.conftest import INTEGRATION
from tests.faults import worker_env, worker_process
from tests.sentinels import MASTER, SentinelDeployment, missing_binaries
from tests.support import GENERATE, GraphQLWS, LiveServer, free_port, graphql_ws, start_server

MISSING = missing_binaries()


def needs_sentinel(test: Any) -> Any:
    """Marks of the tests that start Redis and sentinel processes."""
    for mark in (
        pytest.mark.integration,
        pytest.mark.skipif(not INTEGRATION, reason="needs PostgreSQL and Redis"),
        pytest.mark.skipif(
            bool(MISSING),
            reason=f"needs {', '.join(MISSING)} "
            "(Debian: apt-get install redis-server redis-sentinel)",
        ),
    ):
        test = mark(test)
    return test


JOB = {"provider": "mock", "width": 64, "height": 64, "extra": {"delayMs": 300, "steps": 3}}
EVENTS = "subscription { jobEvents { id status version attempts } }"
FOLLOW = "subscription($id: ID!) { jobUpdated(id: $id) { id status version attempts } }"
SUCCEEDED_RUN = re.compile(r"job (\S+): succeeded in ")


def test_sentinel_settings_name_the_sentinels_and_exclude_a_url() -> None:
    settings = Settings(
        redis_sentinels="10.0.0.1:26380, sentinel-b ,[::1]:26381",  # type: ignore[arg-type]
        redis_sentinel_master="media",
        redis_password="secret",  # type: ignore[arg-type]
        redis_db=2,
    )
    assert settings.redis_sentinel_addresses == [
        ("10.0.0.1", 26380),
        ("sentinel-b", 26379),
        ("::1", 26381),
    ]
    assert settings.redis_configured and not settings.embedded
    target = redis_adapter.target(settings)
    assert isinstance(target, redis_adapter.SentinelTarget)
    assert (target.master, target.password, target.db) == ("media", "secret", 2)

    both = {"redis_url": "redis://r:6379/0", "redis_sentinels": "s:26379"}
    for values, says in [
        (both, "not both"),
        ({"redis_sentinels": "s:port"}, "not a sentinel address"),
        ({"redis_sentinels": "s:0"}, "not a sentinel address"),
        ({"redis_password": "p"}, "GQL_MEDIA_REDIS_PASSWORD: used with GQL_MEDIA_REDIS_SENTINELS"),
        ({"redis_url": "redis://r", "redis_db": 1}, "GQL_MEDIA_REDIS_DB"),
    ]:
        with pytest.raises(ValidationError, match=says):
            Settings(**values)


async def test_a_sentinel_client_connects_at_its_first_command() -> None:
    """Building the client sends nothing; its first command asks the sentinels."""
    settings = Settings(redis_sentinels=[f"127.0.0.1:{free_port()}"])
    client = redis_adapter.connect(redis_adapter.target(settings))
    try:
        assert isinstance(client.connection_pool, SentinelConnectionPool)
        with pytest.raises(MasterNotFoundError):
            await client.ping()
    finally:
        await redis_adapter.close(client)


@dataclass
class Load:
    """Jobs submitted one after another, and every refusal."""

    server: LiveServer
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def submit(self) -> str | None:
        body = await self.server.graphql(GENERATE, {"input": {**JOB, "prompt": "a failover"}})
        if "errors" in body:
            self.refused += [error["extensions"]["code"] for error in body["errors"]]
            return None
        payload = body["data"]["generateImage"]
        assert payload["userErrors"] == [], payload
        job_id: str = payload["job"]["id"]
        self.accepted.append(job_id)
        return job_id

    async def run(self) -> None:
        while True:
            await self.submit()
            await asyncio.sleep(0.05)  # the pace of the load, not a wait for anything

    async def until_accepted(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.accepted) < count:
                await asyncio.sleep(0.02)


@dataclass
class Stream:
    """What one subscription delivered: each job's (status, version) in order."""

    seen: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    async def read(self, ws: GraphQLWS, op: str, name: str) -> None:
        while (payload := await ws.next_payload(op)) is not None:
            assert "errors" not in payload, payload
            job = payload["data"][name]
            self.seen.setdefault(job["id"], []).append((job["status"], job["version"]))

    def statuses(self, job_id: str) -> set[str]:
        return {status for status, _ in self.seen.get(job_id, [])}

    async def until_any(
        self, job_ids: list[str], status: str, *, start: int, timeout: float = 30.0
    ) -> None:
        """Until one of ``job_ids[start:]`` (the list grows meanwhile) was seen in ``status``."""
        async with asyncio.timeout(timeout):
            while not any(status in self.statuses(job_id) for job_id in job_ids[start:]):
                await asyncio.sleep(0.05)

    async def until(self, job_ids: list[str], status: str, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while any(status not in self.statuses(job_id) for job_id in job_ids):
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(coroutine: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _worker_env(settings: Settings) -> dict[str, str]:
    names = [
        "database_url",
        "redis_sentinels",
        "redis_sentinel_master",
        "redis_namespace",
        "data_dir",
        "reconcile_interval",
        "reconcile_after",
        "worker_poll_delay",
        "worker_concurrency",
        "progress_interval",
    ]
    return worker_env(**{name: getattr(settings, name) for name in names})


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[SentinelDeployment]:
    cluster = SentinelDeployment(tmp_path / "redis")
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.timeout(180)
@needs_sentinel
async def test_a_failover_loses_no_job_and_subscriptions_resume(
    deployment: SentinelDeployment, settings_factory: Any, tmp_path: Path
) -> None:
    settings: Settings = settings_factory(
        redis_url=None,
        redis_sentinels=deployment.sentinel_addresses,
        redis_sentinel_master=MASTER,
        # what the failover lost is found at once, not once overdue by this
        reconcile_after=600.0,
        worker_concurrency=4,
        progress_interval=0.0,
    )
    log = tmp_path / "worker.log"
    events, followed = Stream(), Stream()
    async with (
        start_server(settings, None, with_worker=False) as server,
        graphql_ws(server.ws_url) as dashboard,
        graphql_ws(server.ws_url) as follower,
        contextlib.AsyncExitStack() as background,
    ):
        with worker_process(_worker_env(settings), log):
            load = Load(server)
            op = await dashboard.subscribe(EVENTS)
            await background.enter_async_context(running(events.read(dashboard, op, "jobEvents")))
            first = await load.submit()  # the stream is open once it shows a job
            assert first is not None
            await events.until([first], "SUCCEEDED")
            async with running(load.run()):
                marker = await _hold_replication(deployment, load, settings)
                # a job the promoted replica will never have heard of, followed from now on
                lost = load.accepted[-1]
                op = await follower.subscribe(FOLLOW, {"id": lost})
                await background.enter_async_context(
                    running(followed.read(follower, op, "jobUpdated"))
                )
                await _kill_primary(deployment, marker)
                # the api hears from the new master: a job submitted since starts live
                await events.until_any(load.accepted, "RUNNING", start=len(load.accepted))
                after = len(load.accepted)
                await load.until_accepted(after + 8)
            newcomers = load.accepted[after:]

            await _until_all_succeeded(settings, load.accepted)
            # every job's end reaches the dashboard, and what was submitted after the
            # failover is followed live through Redis, its start included
            await events.until(load.accepted, "SUCCEEDED")
            assert all("RUNNING" in events.statuses(job_id) for job_id in newcomers)
            await followed.until([lost], "SUCCEEDED")

    assert set(load.refused) <= {"SERVICE_UNAVAILABLE"}, load.refused
    versions = await _check_database(settings, load.accepted)
    for job_id in load.accepted:
        delivered = [version for _, version in events.seen[job_id]]
        assert delivered == sorted(set(delivered)), (job_id, delivered)
        assert delivered[-1] == versions[job_id]
    # one successful run per job, whichever worker connection started it
    runs = Counter(SUCCEEDED_RUN.findall(log.read_text()))
    assert {job_id: runs[job_id] for job_id in load.accepted} == dict.fromkeys(load.accepted, 1)


async def _hold_replication(deployment: SentinelDeployment, load: Load, settings: Settings) -> str:
    """Once some jobs ran, hold back replication while a marker key is written and more jobs
    are submitted; returns the marker's key."""
    await load.until_accepted(len(load.accepted) + 8)
    assert deployment.link is not None
    deployment.link.hold()  # the replica lags from here
    primary = deployment.primary.client()
    marker = f"{settings.redis_namespace}:lost-write"
    try:
        await primary.set(marker, b"1")
    finally:
        await primary.aclose()
    await load.until_accepted(len(load.accepted) + 5)
    return marker


async def _kill_primary(deployment: SentinelDeployment, marker: str) -> None:
    """SIGKILL the primary, drop what the replica never got, wait until every sentinel names
    the replica master, and check that it lost the marker written last."""
    assert deployment.link is not None
    deployment.primary.kill()
    await deployment.link.drop()
    await deployment.until_master_is(deployment.replica)
    promoted = deployment.replica.client()
    try:
        assert await promoted.get(marker) is None, "the replica was not behind"
    finally:
        await promoted.aclose()


async def _until_all_succeeded(settings: Settings, job_ids: list[str]) -> None:
    ids = [decode_id(JOB_ID_PREFIX, job_id) for job_id in job_ids]
    engine = create_async_engine(str(settings.database_url))
    try:
        async with asyncio.timeout(90):
            while True:
                async with engine.connect() as connection:
                    statuses = Counter(
                        (
                            await connection.execute(
                                select(JobRow.status).where(JobRow.id.in_(ids))
                            )
                        ).scalars()
                    )
                if statuses == {"SUCCEEDED": len(ids)}:
                    return
                await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def _check_database(settings: Settings, job_ids: list[str]) -> dict[str, int]:
    """Every job the api accepted, and no other, SUCCEEDED on its first attempt with one
    output of its own; returns each job's version."""
    engine = create_async_engine(str(settings.database_url))
    try:
        async with engine.connect() as connection:
            jobs = (await connection.execute(select(JobRow))).all()
            outputs = (
                await connection.execute(
                    select(AssetRow.job_id, func.count())
                    .where(AssetRow.role == "output")
                    .group_by(AssetRow.job_id)
                )
            ).all()
    finally:
        await engine.dispose()
    wanted = {decode_id(JOB_ID_PREFIX, job_id): job_id for job_id in job_ids}
    assert len(wanted) == len(job_ids)
    assert {job.id for job in jobs} == set(wanted)
    for job in jobs:
        assert (job.status, job.attempts, job.error_code) == ("SUCCEEDED", 1, None), job
        assert job.lease_token is None and job.finished_at is not None
    # one output row per job (a storage key is unique among all rows)
    assert dict(outputs) == dict.fromkeys(wanted, 1)
    return {wanted[job.id]: job.version for job in jobs}
