"""Repairs of what Redis or a dead worker lost: expired leases and overdue QUEUED jobs."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import select, tuple_

from gql_media.adapters.queue import Placement
from gql_media.adapters.scheduling import Waiting
from gql_media.db.models import ApiKeyRow, JobRow, status_in, utcnow
from gql_media.domain import JOB_ID_PREFIX, JobStatus, decode_id, encode_id
from gql_media.errors import ErrorCode
from gql_media.services import deadlines
from gql_media.services.deps import Deps
from gql_media.services.events import announce, announce_queued, waiting
from gql_media.services.snapshots import job_snapshot
from gql_media.services.transitions import transition

log = logging.getLogger(__name__)


async def requeue_expired(deps: Deps, limit: int = 500) -> int:
    """Jobs whose worker stopped renewing its lease (it died) go back to the queue, or fail
    when they have used all their attempts."""
    now = utcnow()
    async with deps.sessions() as session:
        expired = list(
            (
                await session.execute(
                    select(JobRow)
                    .where(status_in(JobStatus.RUNNING.value), JobRow.lease_until < now)
                    .limit(limit)
                )
            ).scalars()
        )
    count = 0
    for row in expired:
        exhausted = row.attempts >= row.max_attempts
        async with deps.sessions.begin() as session:
            updated = await transition(
                session,
                row.id,
                (JobStatus.RUNNING,),
                JobStatus.FAILED if exhausted else JobStatus.QUEUED,
                held_by=row.lease_token or "",
                error_code=ErrorCode.WORKER_LOST.value,
                error_message="the worker running this job stopped responding",
                error_retryable=True,
                progress=0.0,
                run_after=now,
                finished_at=now if exhausted else None,
                lease_token=None,
                lease_until=None,
            )
        if updated is None:
            continue
        count += 1
        snapshot = job_snapshot(updated)
        if exhausted:
            await announce(deps, snapshot)
            await deps.queue.withdraw(snapshot.id)  # the lost run's slot frees
        else:
            await announce_queued(deps, snapshot)  # the new version takes the lost run's place
    return count


async def reconcile(deps: Deps, *, at_startup: bool = False) -> int:
    """Repair what Redis or a dead worker lost: expired leases, overdue QUEUED jobs and
    the scheduler's state.

    When the scheduler's state is new (the first start, or Redis lost it), it is rebuilt
    from the database: every RUNNING job holds its slot and caps again and every QUEUED
    job waits again. Otherwise the QUEUED jobs that should have started by now are looked
    up: one the scheduler lost waits again, one it handed to the workers goes back on the
    arq queue if that entry was lost. Duplicates are harmless, a run claims its row.
    """
    count = await requeue_expired(deps)
    late = await deadlines.expire_overdue(deps)
    if late:
        log.info("%d queued jobs passed their deadline", late)
    if await deps.queue.scheduler.claim_rebuild():
        log.info("scheduler state rebuilt from the database: %d queued jobs", await rebuild(deps))
    overdue = 0.0 if at_startup else deps.settings.reconcile_after
    rows = await stale_queued_jobs(deps, timedelta(seconds=overdue))
    jobs = [(encode_id(JOB_ID_PREFIX, row.id), row.version) for row in rows]
    # a backlog is mostly jobs waiting their turn: look them all up at once
    scheduled = await deps.queue.scheduler.standing([job_id for job_id, _ in jobs])
    lost = [row for row, state in zip(rows, scheduled, strict=True) if state is None]
    if lost:
        await deps.queue.enqueue_many([waiting_row(row) for row in lost])
    handed = [
        (row, job)
        for row, job, state in zip(rows, jobs, scheduled, strict=True)
        if state == "in flight"
    ]
    standing = await deps.queue.standing([job for _, job in handed])
    for (row, (job_id, version)), placement in zip(handed, standing, strict=True):
        if placement is None:
            placement = await deps.queue.ensure_queued(job_id, version)
        if placement is Placement.TAKEN:
            placement = await _requeue_taken(deps, row)
        if placement is Placement.QUEUED:
            count += 1
    await _release_ended(deps)
    return count + len(lost)


async def rebuild(deps: Deps, page: int = 1000) -> int:
    """The scheduler's state from the database: RUNNING jobs in flight, QUEUED ones
    waiting (in pages, oldest first). Returns how many jobs were scheduled."""
    async with deps.sessions() as session:
        running = list(
            (
                await session.execute(select(JobRow).where(status_in(JobStatus.RUNNING.value)))
            ).scalars()
        )
    await deps.queue.scheduler.occupy([waiting_row(row) for row in running])
    async with deps.sessions() as session:
        capped = (
            await session.execute(
                select(ApiKeyRow.id, ApiKeyRow.max_running).where(
                    ApiKeyRow.max_running.is_not(None), ApiKeyRow.revoked_at.is_(None)
                )
            )
        ).all()
    for key_id, max_running in capped:
        await deps.queue.set_cap(key_id.hex, max_running or 0)
    count = 0
    after: tuple[object, uuid.UUID] | None = None
    while True:
        async with deps.sessions() as session:
            stmt = select(JobRow).where(status_in(JobStatus.QUEUED.value))
            if after is not None:
                stmt = stmt.where(tuple_(JobRow.run_after, JobRow.id) > after)
            stmt = stmt.order_by(JobRow.run_after, JobRow.id).limit(page)
            rows = list((await session.execute(stmt)).scalars())
        if not rows:
            return count
        await deps.queue.enqueue_many([waiting_row(row) for row in rows])
        count += len(rows)
        after = (rows[-1].run_after, rows[-1].id)


async def _release_ended(deps: Deps) -> None:
    """Slots held by runs that ended but whose release was lost (Redis was unreachable
    then): a job in flight that is no longer QUEUED or RUNNING frees its slot."""
    flight = await deps.queue.scheduler.in_flight()
    if not flight:
        return
    ids = {decode_id(JOB_ID_PREFIX, job_id): job_id for job_id in flight}
    async with deps.sessions() as session:
        live = set(
            (
                await session.execute(
                    select(JobRow.id).where(
                        JobRow.id.in_([i for i in ids if i is not None]),
                        status_in(JobStatus.QUEUED.value, JobStatus.RUNNING.value),
                    )
                )
            ).scalars()
        )
    ended = [(job_id, flight[job_id]) for key, job_id in ids.items() if key not in live]
    if ended:
        await deps.queue.release(ended)


def waiting_row(row: JobRow) -> Waiting:
    """What the scheduler orders a job row by; a retry waiting out its backoff is due
    when the row's ``run_after`` says."""
    defer = (row.run_after - utcnow()).total_seconds()
    return waiting(job_snapshot(row), defer if defer > 0 else None)


async def _requeue_taken(deps: Deps, row: JobRow) -> Placement:
    """A worker took the job's queue entry and died before claiming the row: move the job
    to a new version (a new queue id) and schedule that."""
    async with deps.sessions.begin() as session:
        updated = await transition(
            session,
            row.id,
            (JobStatus.QUEUED,),
            JobStatus.QUEUED,
            at_version=row.version,
            run_after=utcnow(),
        )
    if updated is None:
        return Placement.WAITING  # it moved on meanwhile (claimed, canceled, requeued)
    snapshot = job_snapshot(updated)
    await deps.queue.drop(snapshot.id, row.version)
    log.info("job %s: its queue entry was lost with a worker; queued again", snapshot.id)
    # the new version takes the old one's slot in the scheduler
    scheduled = await announce_queued(deps, snapshot)
    return Placement.QUEUED if scheduled else Placement.UNAVAILABLE


async def stale_queued_jobs(deps: Deps, older_than: timedelta, limit: int = 500) -> list[JobRow]:
    """QUEUED jobs that should have started by now: their enqueue may have been lost."""
    cutoff = utcnow() - older_than
    async with deps.sessions() as session:
        stmt = (
            select(JobRow)
            .where(status_in(JobStatus.QUEUED.value), JobRow.run_after <= cutoff)
            .order_by(JobRow.run_after)
            .limit(limit)
        )
        return list((await session.execute(stmt)).scalars())
