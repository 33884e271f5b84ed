"""Where waiting jobs stand: their place in the scheduler's order, when they may start, and
the load per priority (the ``queue`` query, /metrics)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import and_, case, func, select

from gql_media.db.models import JobRow, status_in, utcnow
from gql_media.domain import JOB_ID_PREFIX, JobSnapshot, JobStatus, Principal, decode_id
from gql_media.services.deps import Deps
from gql_media.services.snapshots import job_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A waiting job's place: how many jobs start before it in the current order, and when
    it may start at the recent rate of starts (None when nothing started lately)."""

    position: int
    start_at: datetime | None


@dataclass(frozen=True, slots=True)
class PlacedSnapshot(JobSnapshot):
    """A QUEUED job's snapshot with its place in line, sent to its followers when the place
    changes (not an event: nothing of the job changed)."""

    estimate: Estimate | None = None


async def estimates(deps: Deps, job_ids: Sequence[str]) -> list[Estimate | None]:
    """Each job's estimate; None for a job that does not wait for a slot now (not QUEUED,
    or its retry's backoff runs), or for all when Redis cannot be reached."""
    if not job_ids:
        return []
    try:
        found = await deps.queue.scheduler.estimates(job_ids)
    except (RedisError, OSError) as exc:
        log.warning("could not read queue positions: %s", exc)
        return [None] * len(job_ids)
    now, rate = utcnow(), found.starts_per_second
    return [
        None if position is None else Estimate(position, _start_at(now, position, rate))
        for position in found.positions
    ]


def _start_at(now: datetime, position: int, rate: float) -> datetime | None:
    """When the job may start: now when nothing is before it, else after ``position`` starts
    at ``rate`` per second (unknown when nothing started lately)."""
    if position == 0:
        return now
    return now + timedelta(seconds=position / rate) if rate > 0 else None


async def placed(deps: Deps, job_ids: Sequence[str]) -> list[PlacedSnapshot]:
    """The QUEUED jobs among ``job_ids`` that wait for a slot, as they are now, with their
    estimates: one round trip to Redis and, when some wait, one query."""
    found = dict(zip(job_ids, await estimates(deps, job_ids), strict=True))
    waiting = {job_id: e for job_id, e in found.items() if e is not None}
    ids = [decode_id(JOB_ID_PREFIX, job_id) for job_id in waiting]
    if not ids:
        return []
    async with deps.sessions() as session:
        rows = (
            await session.execute(
                select(JobRow).where(
                    JobRow.id.in_([i for i in ids if i is not None]),
                    JobRow.status == JobStatus.QUEUED.value,
                )
            )
        ).scalars()
        snapshots = [job_snapshot(row) for row in rows]
    return [PlacedSnapshot(**_fields(s), estimate=waiting[s.id]) for s in snapshots]


def _fields(snapshot: JobSnapshot) -> dict[str, Any]:
    return {name: getattr(snapshot, name) for name in JobSnapshot.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class PriorityLoad:
    """The jobs of one priority: waiting (QUEUED) and running, and since when the longest
    waiting one that is due has waited."""

    priority: int
    queued: int
    running: int
    oldest_queued_at: datetime | None


async def load(deps: Deps, principal: Principal) -> list[PriorityLoad]:
    """Queued and running jobs per priority, highest first: every job for an admin, the
    caller's own otherwise. One GROUP BY over the unfinished jobs."""
    principal.require_full("read the queue")
    now = utcnow()
    queued = JobRow.status == JobStatus.QUEUED.value
    stmt = (
        select(
            JobRow.priority,
            func.count().filter(queued),
            func.count().filter(JobRow.status == JobStatus.RUNNING.value),
            func.min(case((and_(queued, JobRow.run_after <= now), JobRow.run_after))),
        )
        .where(status_in(JobStatus.QUEUED.value, JobStatus.RUNNING.value))
        .group_by(JobRow.priority)
        .order_by(JobRow.priority.desc())
    )
    if not principal.admin:
        stmt = stmt.where(JobRow.owner_id == principal.key_id)
    async with deps.sessions() as session:
        rows = (await session.execute(stmt)).all()
    return [PriorityLoad(int(p), int(q), int(r), oldest) for p, q, r, oldest in rows]


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """The ``queue`` query: the load per priority and its totals."""

    queued: int
    running: int
    oldest_wait_seconds: float | None
    starts_per_second: float | None
    priorities: list[PriorityLoad]


async def summary(deps: Deps, principal: Principal) -> QueueSummary:
    """``load`` with its totals, the longest wait and the rate of starts."""
    principal.require_full("read the queue")
    loads = await load(deps, principal)
    waits = [p.oldest_queued_at for p in loads if p.oldest_queued_at is not None]
    oldest = max(0.0, (utcnow() - min(waits)).total_seconds()) if waits else None
    return QueueSummary(
        queued=sum(p.queued for p in loads),
        running=sum(p.running for p in loads),
        oldest_wait_seconds=oldest,
        starts_per_second=await starts_per_second(deps),
        priorities=loads,
    )


async def starts_per_second(deps: Deps) -> float | None:
    """Jobs started per second over the last minute or so, across every worker; None when
    Redis cannot be reached."""
    try:
        return (await deps.queue.scheduler.estimates([])).starts_per_second
    except (RedisError, OSError) as exc:
        log.warning("could not read the rate of starts: %s", exc)
        return None
