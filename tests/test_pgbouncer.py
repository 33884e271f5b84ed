"""The api and a worker behind PgBouncer in transaction pooling mode.

A private pgbouncer (Debian's package) listens on a free port in front of the test database,
with two server connections for every client, so that each transaction may run on a server
connection another client used just before. With GQL_MEDIA_DATABASE_PGBOUNCER the whole job
flow runs through it; without, it fails the way PgBouncer users know: prepared statements
that do not exist, or already exist, on the server connection a transaction got.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gql_media.db.migrate import upgrade
from gql_media.runtime import open_runtime
from gql_media.services import reconciler, retention
from gql_media.settings import Settings
from gql_media.worker.main import running_worker
from tests.conftest import INTEGRATION, TEST_REDIS_URL, _admin, fast_settings
from tests.support import TEST_PATCHES, LiveServer, free_port, graphql_ws, start_server
from tests.test_subscriptions import listening

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
)

LIVE = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not INTEGRATION, reason="set GQL_MEDIA_TEST_DATABASE_URL and GQL_MEDIA_TEST_REDIS_URL"
    ),
    pytest.mark.skipif(
        PGBOUNCER is None, reason="no pgbouncer binary (Debian: apt-get install pgbouncer)"
    ),
]


def live(test: Any) -> Any:
    """Marks of the tests that need PostgreSQL, Redis and the pgbouncer binary."""
    for mark in LIVE:
        test = mark(test)
    return test


SUBMIT = """
mutation($input: GenerateImageInput!) {
  generateImage(input: $input) { job { id } userErrors { code message } }
}
"""
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { job { status } userErrors { code } } }"
RETRY = "mutation($id: ID!) { retryJob(id: $id) { job { status } userErrors { code } } }"
EVENTS = "subscription($filter: JobFilter) { jobEvents(filter: $filter) { id status attempts } }"
SLOW = {"provider": "mock", "extra": {"delayMs": 60_000, "steps": 600}}
ONCE_TRANSIENT = {"provider": "mock", "extra": {"fail": "transient", "failAttempts": 1}}
PERMANENT = {"provider": "mock", "extra": {"fail": "permanent"}}
JOBS = 40


def pgbouncer_ini(directory: Path, database: str, port: int) -> Path:
    """Transaction pooling with two server connections in the pool: clients share them."""
    users = directory / "userlist.txt"
    users.write_text('"postgres" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
{database} = host=127.0.0.1 port=5432 dbname={database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = transaction
default_pool_size = 2
max_client_conn = 500
"""
    )
    return ini


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)  # polling the port with a deadline, not waiting on time
    raise RuntimeError(f"pgbouncer did not listen on {port} within {seconds} s")


@pytest.fixture
def pgbouncer_url(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """The test database through a private pgbouncer in transaction pooling mode."""
    assert PGBOUNCER is not None
    _, _, database = postgres_url.rpartition("/")
    port = free_port()
    ini = pgbouncer_ini(tmp_path, database, port)
    # pgbouncer refuses to run as root; it reads its files before it drops to another user
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    with (tmp_path / "pgbouncer.log").open("wb") as log:
        process = subprocess.Popen([PGBOUNCER, *user, str(ini)], stdout=log, stderr=log)
    try:
        wait_for_port(port, process)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{database}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def settings_for(url: str, tmp_path: Path, *, pgbouncer: bool) -> Settings:
    return Settings(
        **fast_settings(
            data_dir=tmp_path,
            database_url=url,
            database_pgbouncer=pgbouncer,
            redis_url=TEST_REDIS_URL,
            redis_namespace=f"gql_media_test_{uuid.uuid4().hex[:10]}",
            patches=TEST_PATCHES,
            reconcile_interval=0.05,
            retention_seconds=3600.0,
            retention_interval=0.05,
        )
    )


@asynccontextmanager
async def api_and_worker(settings: Settings) -> AsyncIterator[tuple[LiveServer, Any]]:
    """A live api and, beside it, a worker with its own engine: two processes' pools."""
    async with AsyncExitStack() as stack:
        worker_runtime = await stack.enter_async_context(open_runtime(settings))
        await stack.enter_async_context(running_worker(worker_runtime))
        api = await stack.enter_async_context(start_server(settings, None, with_worker=False))
        yield api, worker_runtime


@dataclass
class Run:
    """What one run through the job flow saw."""

    statuses: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # GraphQL errors, as their messages
    # prepared statements on each of PgBouncer's server connections, by backend pid
    left_behind: dict[int, int] = field(default_factory=dict)

    def final(self, job_id: str) -> tuple[str, int]:
        return self.statuses[job_id][-1]


async def submit(api: LiveServer, run: Run, fields: dict[str, Any]) -> str | None:
    body = await api.graphql(SUBMIT, {"input": {"prompt": "a harbour at dawn", **fields}})
    if "errors" in body:
        run.errors += [error["message"] for error in body["errors"]]
        return None
    payload = body["data"]["generateImage"]
    assert payload["userErrors"] == [], payload
    return str(payload["job"]["id"])


async def mutate(api: LiveServer, run: Run, query: str, name: str, job_id: str) -> Any:
    body = await api.graphql(query, {"id": job_id})
    run.errors += [error["message"] for error in body.get("errors", [])]
    return (body.get("data") or {}).get(name)


async def events_until_done(ws: Any, op: str, run: Run, waiting: dict[str, str]) -> None:
    """jobEvents until every job in ``waiting`` reached the status given for it."""
    while waiting:
        payload = await ws.next_payload(op)
        assert payload is not None and "errors" not in payload, payload
        event = payload["data"]["jobEvents"]
        run.statuses.setdefault(event["id"], []).append((event["status"], event["attempts"]))
        if waiting.get(event["id"]) == event["status"]:
            del waiting[event["id"]]


async def prepared_statements_left(engine: AsyncEngine) -> dict[int, int]:
    """The prepared statements on both server connections of the pool: two transactions
    open at once hold one each."""
    query = text("SELECT pg_backend_pid(), (SELECT count(*) FROM pg_prepared_statements)")
    async with engine.connect() as first, engine.connect() as second:
        rows = [(await connection.execute(query)).one() for connection in (first, second)]
    return {int(pid): int(count) for pid, count in rows}


async def job_flow(settings: Settings, run: Run) -> None:
    """Many jobs submitted at once, a transient failure retried by the worker, a permanent
    one retried by retryJob, a running job canceled; the reconciler and the retention sweep
    run all the while, and once more at the end. What it sees goes into ``run``."""
    async with api_and_worker(settings) as (api, worker_runtime), graphql_ws(api.ws_url) as ws:
        op = await listening(ws, EVENTS, {"filter": {"provider": "mock"}})
        kinds = [{"provider": "mock"}] * JOBS + [ONCE_TRANSIENT, PERMANENT, SLOW]
        ids = await asyncio.gather(*(submit(api, run, kind) for kind in kinds))
        if None in ids:
            return
        *plain, transient, permanent, slow = [str(job_id) for job_id in ids]
        waiting = {job_id: "SUCCEEDED" for job_id in [*plain, transient]}
        waiting |= {permanent: "FAILED", slow: "RUNNING"}
        await events_until_done(ws, op, run, waiting)

        canceled = await mutate(api, run, CANCEL, "cancelJob", slow)
        retried = await mutate(api, run, RETRY, "retryJob", permanent)
        if run.errors:
            return
        assert canceled == {"job": {"status": "CANCELED"}, "userErrors": []}
        assert retried == {"job": {"status": "QUEUED"}, "userErrors": []}
        await events_until_done(ws, op, run, {slow: "CANCELED", permanent: "FAILED"})

        deps = worker_runtime.deps
        assert await reconciler.reconcile(deps) == 0
        assert await retention.expire_media(deps) == 0
        async with deps.engine.connect() as connection:
            counted = await connection.scalar(text("SELECT count(*) FROM jobs"))
        assert counted == len(kinds)
        run.left_behind = await prepared_statements_left(deps.engine)


@pytest.fixture
def fresh_database(postgres_url: str) -> None:
    asyncio.run(_admin(postgres_url, "TRUNCATE jobs, media_assets, api_keys CASCADE"))


def test_the_setting_needs_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs a PostgreSQL GQL_MEDIA_DATABASE_URL"):
        Settings(data_dir=tmp_path, database_pgbouncer=True)
    url = "postgresql+asyncpg://postgres@127.0.0.1:6432/gql_media"
    assert Settings(database_url=url, database_pgbouncer=True).database_pgbouncer
    assert not Settings(database_url=url).database_pgbouncer  # off unless asked for


@live
@pytest.mark.timeout(60)
async def test_the_job_flow_runs_through_pgbouncer_in_transaction_mode(
    fresh_database: None, pgbouncer_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # migrations run in one transaction each: through PgBouncer too (here: nothing to do)
    await asyncio.to_thread(upgrade, pgbouncer_url, pgbouncer=True)
    run = Run()
    await job_flow(settings_for(pgbouncer_url, tmp_path, pgbouncer=True), run)

    assert run.errors == []
    assert "prepared statement" not in caplog.text  # nor in the worker's background work
    # nothing is left on the server connections for another client to trip over
    assert list(run.left_behind.values()) == [0, 0], run.left_behind
    assert len(run.statuses) == JOBS + 3
    finals = [status for status, _ in map(run.final, run.statuses)]
    assert finals.count("SUCCEEDED") == JOBS + 1
    assert finals.count("FAILED") == 1 and finals.count("CANCELED") == 1
    # the transient failure went back to the queue and succeeded on its second attempt
    assert ("SUCCEEDED", 2) in map(run.final, run.statuses)
    # the permanent failure failed twice: once, then again after retryJob
    assert any(
        [s for s in history if s == ("FAILED", 1)] == [("FAILED", 1)] * 2
        for history in run.statuses.values()
    )


PREPARED_ERROR = re.compile(
    r'prepared statement "__asyncpg_stmt_\w+" (does not exist|already exists)'
)


@live
@pytest.mark.timeout(60)
async def test_without_the_setting_prepared_statements_break(
    fresh_database: None, pgbouncer_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The negative control: the same run with asyncpg's statement caches on fails, in
    requests (GraphQL errors) or in the worker (logged), whichever comes first; jobs whose
    updates fail never end, so the run stops once the error is seen."""
    run = Run()
    flow = asyncio.create_task(
        job_flow(settings_for(pgbouncer_url, tmp_path, pgbouncer=False), run)
    )

    def seen() -> str:
        return "\n".join([*run.errors, caplog.text])

    try:
        async with asyncio.timeout(30):
            while not PREPARED_ERROR.search(seen()) and not flow.done():
                await asyncio.sleep(0.05)  # polls for the error, with a deadline
    finally:
        flow.cancel()
        with contextlib.suppress(asyncio.CancelledError, AssertionError):
            await flow
    assert PREPARED_ERROR.search(seen()), seen()[-2000:]
