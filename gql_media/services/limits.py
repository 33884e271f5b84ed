"""Per-key limits on mutations: a request rate (a token bucket in Redis, shared by every api
process) and a cap on a key's unfinished jobs. Anonymous use (auth off) is not limited.

The cap holds under concurrency, across every api process: a job is queued (inserted, or
retried) in a transaction that first locks its owner's key row, then counts the owner's
unfinished jobs, then writes. The database is the one place every api process shares and
the truth of which jobs are unfinished, so nothing has to be reconciled; holding the key row
until commit serialises only the owner's own queueing (readers of the key never wait).
PostgreSQL locks the row (SELECT ... FOR NO KEY UPDATE, under READ COMMITTED: the count
that follows sees every job committed before the lock was granted); SQLite has one writer at
a time, which a no-op write on the row makes this transaction from its start. Batched
inserts lock every owner of the batch, in id order (no deadlock between two batches), and
count each owner's rows of the batch too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gql_media.db.models import ApiKeyRow, JobRow, status_in
from gql_media.domain import JobStatus, Principal
from gql_media.errors import ErrorCode, UserError
from gql_media.services.deps import Deps
from gql_media.services.inserts import Guard, Guarded
from gql_media.settings import Settings

log = logging.getLogger(__name__)


async def admit(deps: Deps, principal: Principal) -> None:
    """Take one request from the key's bucket; UserError RATE_LIMITED when it is empty.
    With Redis unreachable the request is let through (the rate is a guard, not a quota).
    A watch token's requests draw nothing from its key's bucket, so a browser holding one
    cannot spend its backend's rate; what such a token may do is bounded by its one job."""
    settings = deps.settings
    if principal.key_id is None or principal.scope is not None:
        return
    if not settings.rate_limit_per_minute:
        return
    try:
        decision = await deps.limiter.take(
            principal.key_id.hex, settings.rate_limit_per_minute, settings.rate_limit_burst
        )
    except (RedisError, OSError) as exc:
        log.warning("rate limit not checked, Redis is unreachable: %s", exc)
        return
    if not decision.allowed:
        wait = max(decision.retry_after, 0.001)
        raise UserError(
            ErrorCode.RATE_LIMITED,
            f"too many requests for this API key; retry in {wait:.1f} s",
            retry_after=round(wait, 3),
        )


def too_many_active_jobs(limit: int) -> UserError:
    return UserError(
        ErrorCode.TOO_MANY_ACTIVE_JOBS,
        f"this API key has {limit} unfinished jobs, the most allowed; retry when some finish",
        retry_after=1.0,
    )


async def lock_owners(connection: AsyncConnection, owners: Collection[uuid.UUID]) -> None:
    """Hold the key rows of ``owners`` until the end of ``connection``'s transaction: see the
    module's docstring."""
    ordered = sorted(owners)
    if connection.dialect.name == "postgresql":
        await connection.execute(
            select(ApiKeyRow.id)
            .where(ApiKeyRow.id.in_(ordered))
            .order_by(ApiKeyRow.id)
            .with_for_update(key_share=True)
        )
    else:
        await connection.execute(
            update(ApiKeyRow).where(ApiKeyRow.id.in_(ordered)).values(id=ApiKeyRow.id)
        )


async def active_jobs(
    connection: AsyncConnection, owners: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """How many QUEUED or RUNNING jobs each of ``owners`` has (absent: none)."""
    rows = await connection.execute(
        select(JobRow.owner_id, func.count())
        .where(
            JobRow.owner_id.in_(sorted(owners)),
            status_in(JobStatus.QUEUED.value, JobStatus.RUNNING.value),
        )
        .group_by(JobRow.owner_id)
    )
    return {owner: count for owner, count in rows if owner is not None}


async def hold_active_job_slot(
    connection: AsyncConnection, settings: Settings, principal: Principal
) -> None:
    """In the caller's transaction, before it queues a job: UserError TOO_MANY_ACTIVE_JOBS
    when the key already has its most unfinished jobs, else the key stays locked until the
    transaction ends (so no other request of the key can pass this check meanwhile)."""
    await hold_active_job_slots(connection, settings, principal, 1)


async def hold_active_job_slots(
    connection: AsyncConnection, settings: Settings, principal: Principal, count: int
) -> None:
    """``hold_active_job_slot`` for ``count`` jobs queued together: all fit within the
    key's cap, or UserError TOO_MANY_ACTIVE_JOBS."""
    limit = settings.max_active_jobs
    if principal.key_id is None or not limit:
        return
    await lock_owners(connection, [principal.key_id])
    active = (await active_jobs(connection, [principal.key_id])).get(principal.key_id, 0)
    if active + count <= limit:
        return
    if count == 1:
        raise too_many_active_jobs(limit)
    raise UserError(
        ErrorCode.TOO_MANY_ACTIVE_JOBS,
        f"this API key has {active} unfinished jobs and may have {limit}: the {count} jobs "
        "of this request do not fit; retry when some finish, or send fewer",
        retry_after=1.0,
    )


def capped(settings: Settings) -> Guarded:
    """Which new job rows count against their owner's cap (``RowInserter``'s ``guarded``)."""
    return lambda row: bool(settings.max_active_jobs) and row["owner_id"] is not None


def active_jobs_cap(settings: Settings) -> Guard:
    """The cap on new job rows, for ``RowInserter``'s ``guard``: in the batch's transaction,
    each row is refused once its owner's unfinished jobs, with the rows before it in the
    batch, reach the limit."""

    async def guard(
        connection: AsyncConnection, rows: list[dict[str, Any]]
    ) -> list[Exception | None]:
        limit = settings.max_active_jobs
        owners = {row["owner_id"] for row in rows}
        await lock_owners(connection, owners)
        counts = await active_jobs(connection, owners)
        refusals: list[Exception | None] = []
        for row in rows:
            count = counts.get(row["owner_id"], 0)
            if count >= limit:
                refusals.append(too_many_active_jobs(limit))
            else:
                counts[row["owner_id"]] = count + 1
                refusals.append(None)
        return refusals

    return guard
