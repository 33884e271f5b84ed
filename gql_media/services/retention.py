"""Retention: delete finished jobs' media after a while, and sweep files no row points to.

Neither ever touches the media of a job that is QUEUED or RUNNING.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, select, update

from gql_media.db.models import AssetRow, JobRow, utcnow
from gql_media.domain import TERMINAL_STATUSES, JobStatus
from gql_media.errors import StorageUnavailable
from gql_media.services.deps import Deps
from gql_media.services.outputs import job_of_output_key
from gql_media.services.snapshots import job_snapshot

log = logging.getLogger(__name__)

_TERMINAL = [s.value for s in TERMINAL_STATUSES]
_LIVE = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]


async def retain_once(deps: Deps) -> None:
    """One retention pass (the workers run one every ``retention_interval`` while
    ``retention_seconds`` is set). Storage that is not there (a bucket not yet created or
    gone) is an operator's to fix: one warning line, and the next pass tries again."""
    try:
        await expire_media(deps)
        await sweep_orphans(deps)
    except StorageUnavailable as exc:
        log.warning("retention pass skipped: %s", exc.message)


async def expire_media(deps: Deps, limit: int = 500) -> int:
    """Delete the outputs of jobs that finished more than ``retention_seconds`` ago."""
    retention = deps.settings.retention_seconds
    if retention <= 0:
        return 0
    cutoff = utcnow() - timedelta(seconds=retention)
    async with deps.sessions.begin() as session:
        rows = (
            await session.execute(
                select(AssetRow.id, AssetRow.job_id, AssetRow.storage_key)
                .join(JobRow, JobRow.id == AssetRow.job_id)
                .where(JobRow.status.in_(_TERMINAL), JobRow.finished_at < cutoff)
                .limit(limit)
            )
        ).all()
        if not rows:
            return 0
        await session.execute(delete(AssetRow).where(AssetRow.id.in_([r.id for r in rows])))
        job_ids = {r.job_id for r in rows}
        changed = (
            await session.execute(
                update(JobRow)
                .where(JobRow.id.in_(job_ids))
                .values(version=JobRow.version + 1, updated_at=utcnow())
                .returning(JobRow)
                .execution_options(synchronize_session=False)
            )
        ).scalars()
        snapshots = [job_snapshot(row) for row in changed]
    for row in rows:
        await deps.storage.delete(row.storage_key)
    for snapshot in snapshots:
        await deps.publisher.publish(snapshot)
    log.info("retention: deleted %d outputs of %d jobs", len(rows), len(job_ids))
    return len(rows)


async def sweep_orphans(deps: Deps) -> int:
    """Delete files older than ``orphan_grace`` that no asset row points to, unless they
    belong to a live job (a run writes its files before the row that names them). Only with
    ``retention_seconds`` set, like ``expire_media``: without it media is kept forever."""
    if deps.settings.retention_seconds <= 0:
        return 0
    cutoff = (utcnow() - timedelta(seconds=deps.settings.orphan_grace)).timestamp()
    keys = await deps.storage.list_older_than(cutoff)
    deleted = 0
    for start in range(0, len(keys), 500):
        batch = keys[start : start + 500]
        async with deps.sessions() as session:
            known = set(
                (
                    await session.execute(
                        select(AssetRow.storage_key).where(AssetRow.storage_key.in_(batch))
                    )
                ).scalars()
            )
            job_ids = {
                j for k in batch if k not in known and (j := job_of_output_key(k)) is not None
            }
            live = set(
                (
                    await session.execute(
                        select(JobRow.id).where(JobRow.id.in_(job_ids), JobRow.status.in_(_LIVE))
                    )
                ).scalars()
            )
        for key in batch:
            if key in known or job_of_output_key(key) in live:
                continue
            await deps.storage.delete(key)
            deleted += 1
    if deleted:
        log.info("retention: swept %d files with no row", deleted)
    return deleted
