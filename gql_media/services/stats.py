"""Figures the api's metrics read when scraped."""

from __future__ import annotations

from sqlalchemy import func, select

from gql_media.db.models import JobRow
from gql_media.services.deps import Deps


async def job_counts(deps: Deps) -> dict[tuple[str, str], int]:
    """How many jobs there are of each (status, kind): one GROUP BY over the jobs table."""
    async with deps.sessions() as session:
        result = await session.execute(
            select(JobRow.status, JobRow.kind, func.count()).group_by(JobRow.status, JobRow.kind)
        )
        return {(status, kind): count for status, kind, count in result.all()}


async def queue_depth(deps: Deps) -> int:
    return await deps.queue.depth()
