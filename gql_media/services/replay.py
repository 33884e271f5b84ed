"""Resuming a stream of job changes: the jobs changed since a moment, in change order.

A dashboard that lost its ``jobEvents`` connection reconnects with the ``updatedAt`` of the
last event it saw and gets, from the database, every job it may see that changed at or
after that moment, each once at its current version, ordered by ``(updated_at, id)``.
The caller subscribes to live events first, then replays: a change committed before a
page is read is in the page (or in a later one), one committed after the subscription
arrives live, and the caller drops live versions the replay already sent.

Bounds: ``since`` at most ``resume_max_age`` seconds back and at most ``resume_max_jobs``
changed jobs, else SINCE_TOO_OLD (the client reloads its list instead); the replay is read
in pages of ``max_page_size`` rows and ends at the moment it started (give or take the
clock skew between machines), so it ends however busy the jobs are: what changes meanwhile
comes live.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select, tuple_
from sqlalchemy.orm import selectinload

from gql_media.db.models import JobRow, utcnow
from gql_media.domain import JobSnapshot, Principal
from gql_media.errors import ErrorCode, UserError
from gql_media.failpoints import REPLAY_PAGE, REPLAY_START, pause_point
from gql_media.services.deps import Deps
from gql_media.services.jobs import JobFilter, filtered
from gql_media.services.snapshots import job_snapshot
from gql_media.settings import Settings


def since_problem(settings: Settings, since: datetime, now: datetime) -> UserError | None:
    """Why ``since`` cannot start a replay at ``now``, or None."""
    if since.tzinfo is None or since.utcoffset() is None:
        return UserError(
            ErrorCode.INVALID_ARGUMENT,
            "since needs a time zone, e.g. 2030-01-01T12:00:00Z",
            "since",
        )
    try:
        since.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        return UserError(ErrorCode.INVALID_ARGUMENT, "since is out of range", "since")
    if since > now + timedelta(seconds=settings.resume_clock_skew):
        return UserError(ErrorCode.INVALID_ARGUMENT, "since is in the future", "since")
    if since < now - timedelta(seconds=settings.resume_max_age):
        return UserError(
            ErrorCode.SINCE_TOO_OLD,
            f"since is more than {settings.resume_max_age:g} seconds ago; "
            "read the jobs query, then subscribe from now",
            "since",
        )
    return None


def count_statement(
    job_filter: JobFilter, principal: Principal, within: ColumnElement[bool], limit: int
) -> Select[Any]:
    """How many jobs of the replay there are, counted up to ``limit`` (never all of them)."""
    inner = filtered(select(JobRow.id).where(within), job_filter, principal).limit(limit)
    return select(func.count()).select_from(inner.subquery())


async def _count(
    deps: Deps, job_filter: JobFilter, principal: Principal, within: ColumnElement[bool]
) -> int:
    stmt = count_statement(job_filter, principal, within, deps.settings.resume_max_jobs + 1)
    async with deps.sessions() as session:
        return int((await session.execute(stmt)).scalar_one())


async def changes_since(
    deps: Deps, job_filter: JobFilter, since: datetime, principal: Principal
) -> AsyncGenerator[JobSnapshot, None]:
    """The jobs ``principal`` may see and ``job_filter`` matches whose last change is at or
    after ``since`` and no later than now, oldest change first (ties by id), each at its
    version when its page is read. Raises UserError (INVALID_ARGUMENT, SINCE_TOO_OLD)
    before yielding anything."""
    await pause_point(REPLAY_START)
    now = utcnow()
    problem = since_problem(deps.settings, since, now)
    if problem is not None:
        raise problem
    # up to a clock skew ahead: a change a worker whose clock runs ahead stamped, committed
    # before the caller listened, is read here (later ones come live as well, and once)
    within = window(since, now + timedelta(seconds=deps.settings.resume_clock_skew))
    if await _count(deps, job_filter, principal, within) > deps.settings.resume_max_jobs:
        raise UserError(
            ErrorCode.SINCE_TOO_OLD,
            f"more than {deps.settings.resume_max_jobs} jobs changed since then; "
            "read the jobs query, then subscribe from now",
            "since",
        )
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        rows = await _page(deps, job_filter, principal, within, after)
        await pause_point(REPLAY_PAGE)
        for row in rows:
            yield job_snapshot(row, row.outputs)
        if len(rows) < deps.settings.max_page_size:
            return
        after = (rows[-1].updated_at, rows[-1].id)


def window(since: datetime, until: datetime) -> ColumnElement[bool]:
    """Jobs whose last change is at or after ``since`` and no later than ``until``."""
    return and_(JobRow.updated_at >= since, JobRow.updated_at <= until)


def page_statement(
    job_filter: JobFilter,
    principal: Principal,
    within: ColumnElement[bool],
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Select[Any]:
    """The next ``limit`` jobs of the replay after the change ``after`` (None: the first):
    a keyset on (updated_at, id), which the indexes of jobs in change order serve."""
    stmt = filtered(select(JobRow).where(within), job_filter, principal)
    if after is not None:
        stmt = stmt.where(tuple_(JobRow.updated_at, JobRow.id) > tuple_(*after))
    return stmt.order_by(JobRow.updated_at, JobRow.id).limit(limit)


async def _page(
    deps: Deps,
    job_filter: JobFilter,
    principal: Principal,
    within: ColumnElement[bool],
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Any]:
    stmt = page_statement(job_filter, principal, within, after, deps.settings.max_page_size)
    async with deps.sessions() as session:
        return list((await session.execute(stmt.options(selectinload(JobRow.outputs)))).scalars())
