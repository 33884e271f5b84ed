"""Deadlines: a job not SUCCEEDED by its ``deadline`` ends FAILED with DEADLINE_EXCEEDED.

A QUEUED job past its deadline is never claimed (``transitions.CLAIM``): the run that finds
it so expires it, and so does the reconciler's pass for jobs nobody ran in time. A RUNNING
job is stopped at its deadline by its run (``runner``), which cancels its provider work.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from gql_media.db.models import JobRow, utcnow
from gql_media.domain import JobStatus
from gql_media.services.deps import Deps
from gql_media.services.events import announce
from gql_media.services.snapshots import job_snapshot
from gql_media.services.transitions import EXPIRE, one_job


async def expire(deps: Deps, job_id: uuid.UUID) -> bool:
    """QUEUED → FAILED (DEADLINE_EXCEEDED) if the job's deadline passed; it leaves the
    scheduler. False when the job was not QUEUED past its deadline."""
    row = await one_job(deps.autocommit, EXPIRE, {"job_id": job_id, "now": utcnow()})
    if row is None:
        return False
    snapshot = job_snapshot(row)
    await announce(deps, snapshot)
    await deps.queue.withdraw(snapshot.id)
    return True


async def expire_overdue(deps: Deps, limit: int = 500) -> int:
    """Expire the QUEUED jobs whose deadline passed; how many were expired."""
    async with deps.sessions() as session:
        late = list(
            (
                await session.execute(
                    select(JobRow.id)
                    .where(JobRow.status == JobStatus.QUEUED.value, JobRow.deadline <= utcnow())
                    .limit(limit)
                )
            ).scalars()
        )
    return sum([await expire(deps, job_id) for job_id in late])
