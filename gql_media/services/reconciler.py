"""Repairs of what Redis or a dead worker lost: expired leases and overdue QUEUED jobs."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from gql_media.adapters.queue import Placement
from gql_media.db.models import JobRow, utcnow
from gql_media.domain import JOB_ID_PREFIX, JobStatus, encode_id
from gql_media.errors import ErrorCode
from gql_media.services.deps import Deps
from gql_media.services.events import announce, announce_queued
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
                    .where(JobRow.status == JobStatus.RUNNING.value, JobRow.lease_until < now)
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
        else:
            await announce_queued(deps, snapshot)
    return count


async def reconcile(deps: Deps, *, at_startup: bool = False) -> int:
    """Repair what Redis or a dead worker lost: expired leases and overdue QUEUED jobs.

    At start-up every due QUEUED job is enqueued at once (after a restart of the embedded
    mode its in-process queue is empty); duplicates are harmless, a run claims its row.
    """
    count = await requeue_expired(deps)
    overdue = 0.0 if at_startup else deps.settings.reconcile_after
    rows = await stale_queued_jobs(deps, timedelta(seconds=overdue))
    # a backlog is mostly jobs waiting on the queue: look them all up at once
    jobs = [(encode_id(JOB_ID_PREFIX, row.id), row.version) for row in rows]
    standing = await deps.queue.standing(jobs)
    for row, (job_id, version), placement in zip(rows, jobs, standing, strict=True):
        if placement is None:
            placement = await deps.queue.ensure_queued(job_id, version)
        if placement is Placement.TAKEN:
            placement = await _requeue_taken(deps, row)
        if placement is Placement.QUEUED:
            count += 1
    return count


async def _requeue_taken(deps: Deps, row: JobRow) -> Placement:
    """A worker took the job's queue entry and died before claiming the row: move the job
    to a new version (a new queue id) and queue that."""
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
    await announce(deps, snapshot)
    log.info("job %s: its queue entry was lost with a worker; queued again", snapshot.id)
    return await deps.queue.ensure_queued(snapshot.id, snapshot.version)


async def stale_queued_jobs(deps: Deps, older_than: timedelta, limit: int = 500) -> list[JobRow]:
    """QUEUED jobs that should have started by now: their enqueue may have been lost."""
    cutoff = utcnow() - older_than
    async with deps.sessions() as session:
        stmt = (
            select(JobRow)
            .where(JobRow.status == JobStatus.QUEUED.value, JobRow.run_after <= cutoff)
            .order_by(JobRow.run_after)
            .limit(limit)
        )
        return list((await session.execute(stmt)).scalars())
