"""Announcing finishes that no event announced.

A worker killed between its commit and its publish leaves a finished job that no event
reports. Each api process re-reads the jobs finished lately and hands the ones its
subscribers have not seen to its event hub, so every subscription still ends.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from gql_media.adapters.events import EventHub
from gql_media.db.engine import is_unavailable
from gql_media.db.models import JobRow, utcnow
from gql_media.domain import JOB_ID_PREFIX, SYSTEM, TERMINAL_STATUSES, encode_id
from gql_media.services.deps import Deps
from gql_media.services.jobs import get_job

log = logging.getLogger(__name__)


async def catch_up(deps: Deps, hub: EventHub, since: datetime) -> int:
    """Dispatch jobs finished at or after ``since`` whose final version the hub has not
    dispatched and some subscriber could want; returns how many."""
    async with deps.sessions() as session:
        rows = (
            await session.execute(
                select(JobRow.id, JobRow.version).where(
                    JobRow.finished_at >= since,
                    JobRow.status.in_([s.value for s in TERMINAL_STATUSES]),
                )
            )
        ).all()
    count = 0
    for row_id, version in rows:
        job_id = encode_id(JOB_ID_PREFIX, row_id)
        if not hub.wants(job_id, version):
            continue
        snapshot = await get_job(deps, job_id, SYSTEM)
        if snapshot is not None:
            hub.dispatch(snapshot)
            count += 1
    return count


async def run_catch_up(deps: Deps, hub: EventHub, interval: float) -> None:
    """Catch up every ``interval`` seconds while anyone subscribes. A finish is committed
    at most a lease after the worker stamped its time, so each pass looks that far back."""
    look_back = timedelta(seconds=deps.settings.lease_seconds + 2 * interval)
    while True:
        await asyncio.sleep(interval)
        if not hub.subscriber_count:
            continue
        try:
            count = await catch_up(deps, hub, utcnow() - look_back)
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("event catch-up skipped, database unavailable: %s", exc)
            else:
                log.exception("event catch-up failed")
            continue
        if count:
            log.info("announced %d finished job(s) whose event was lost", count)
