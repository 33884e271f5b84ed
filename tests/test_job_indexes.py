"""The partial indexes of the jobs table (migrations 0010 and 0011): each holds the jobs of one
stage of their life (or the jobs with an idempotency key), and the service's reads of them
read it in any plan."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from gql_media.domain import SYSTEM
from gql_media.runtime import Runtime
from gql_media.services import limits, new_jobs, queue_info, reconciler, retention, webhooks
from tests.support import statements_sent

PARTIAL = {
    "ix_jobs_unfinished_status_run_after": "WHERE ((status)::text = ANY ",
    "ix_jobs_finished_at": "WHERE (finished_at IS NOT NULL)",
    "ix_jobs_webhook_state_finished_at": "WHERE (webhook_state IS NOT NULL)",
    "ix_jobs_idempotency_key": "WHERE (idempotency_key IS NOT NULL)",
}

# 20,000 jobs, most of them finished long ago: the periodic reads want a few of them
FILL = """
INSERT INTO jobs (id, kind, status, progress, version, provider, parameters, attempts,
                  max_attempts, run_after, created_at, updated_at, finished_at, priority,
                  webhook_url, webhook_state, lease_token, lease_until, owner_id,
                  idempotency_key)
SELECT gen_random_uuid(), 'GENERATE_IMAGE', s.status, 0, 1, 'mock', '{}', 1, 3,
       now() - interval '1 hour', now() - interval '1 hour', now(),
       CASE WHEN s.status IN ('QUEUED', 'RUNNING') THEN NULL ELSE now() END, 0,
       CASE WHEN i % 2000 = 0 THEN 'http://127.0.0.1:9/hook' END,
       CASE WHEN i % 2000 = 0 THEN 'pending' END,
       CASE WHEN s.status = 'RUNNING' THEN 'lease' END,
       CASE WHEN s.status = 'RUNNING' THEN now() + interval '1 minute' END,
       :owner,
       CASE WHEN i % 3 = 0 THEN md5(i::text) END
FROM generate_series(1, 20000) AS i,
     LATERAL (SELECT CASE WHEN i % 1000 = 0 THEN 'QUEUED'
                          WHEN i % 1000 = 1 THEN 'RUNNING'
                          ELSE 'SUCCEEDED' END AS status) AS s
"""


def _literal(value: Any) -> str:
    """A statement's parameter as an SQL constant (``EXECUTE`` takes no parameters)."""
    if isinstance(value, bool | int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def _reads(runtime: Runtime, call: Callable[[], Awaitable[Any]]) -> list[tuple[str, Any]]:
    """The statements ``call`` sends that read the jobs table, with their parameters."""
    with statements_sent(runtime.deps.engine) as sent:
        await call()
    return [
        (statement, parameters)
        for statement, parameters in sent
        if statement.lstrip().upper().startswith("SELECT") and " jobs" in statement
    ]


async def test_the_reads_of_jobs_use_the_partial_indexes_in_any_plan(
    runtime: Runtime, backend: str
) -> None:
    """Behind 20,000 jobs, the reads of the reconciler (expired leases, overdue QUEUED jobs,
    the scheduler's rebuild, slots of ended runs), the queue's load, a key's unfinished jobs,
    retention, the overdue webhook deliveries and the lookups by idempotency key each read an
    index, not the whole table, in a prepared statement's generic plan (PostgreSQL proves a
    partial index's condition from the query's constants, or from ``=`` and ``IN`` for
    ``IS NOT NULL``); and the partial indexes hold only their stage's jobs."""
    if backend != "postgres":
        pytest.skip("the plans of PostgreSQL")
    deps = runtime.deps
    owner = uuid.uuid4()
    async with deps.sessions.begin() as session:
        await session.execute(text(FILL), {"owner": owner})
        await session.execute(text("ANALYZE jobs"))
        definitions = dict(
            (
                await session.execute(
                    text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs'")
                )
            ).all()
        )
    for name, condition in PARTIAL.items():
        assert condition in definitions[name], definitions[name]
    assert "ix_jobs_status_run_after" not in definitions
    assert "ix_jobs_status_lease_until" not in definitions
    # the key's unique index, not a unique constraint's, which holds every row version
    assert definitions["ix_jobs_idempotency_key"].startswith("CREATE UNIQUE INDEX")
    assert "uq_jobs_idempotency_key" not in definitions

    async def periodic() -> None:
        await reconciler.requeue_expired(deps)
        await reconciler.stale_queued_jobs(deps, timedelta(0))
        await reconciler.rebuild(deps)
        await queue_info.load(deps, SYSTEM)
        async with deps.engine.connect() as connection:
            await limits.active_jobs(connection, [owner])
        await webhooks.requeue_lost(deps)
        await new_jobs._by_idempotency_key(deps, "absent", None)
        await new_jobs._existing(deps, [], ["absent", "absent too"])

    old = deps.settings.retention_seconds
    deps.settings.retention_seconds = 3600
    try:
        reads = await _reads(runtime, periodic)
        reads += await _reads(runtime, lambda: retention.expire_media(deps))
    finally:
        deps.settings.retention_seconds = old
    assert len(reads) >= 10, [statement for statement, _ in reads]
    async with deps.engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("SET plan_cache_mode = force_generic_plan")
        try:
            for statement, parameters in reads:
                await raw.execute(f"PREPARE periodic AS {statement}")
                values = ", ".join(_literal(value) for value in parameters)
                execute = f"EXECUTE periodic({values})" if parameters else "EXECUTE periodic"
                plan = "\n".join(row[0] for row in await raw.fetch(f"EXPLAIN {execute}"))
                await raw.execute("DEALLOCATE periodic")
                assert "Seq Scan on jobs" not in plan, f"{statement}\n{plan}"
        finally:
            await raw.execute("RESET plan_cache_mode")
