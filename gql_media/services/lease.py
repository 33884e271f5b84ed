"""The lease a worker holds on the job it runs.

A claim gives the worker a lease on the job row (a token and an expiry it keeps moving
forward). Every later change the worker makes is guarded by status *and* token, so a
worker that lost its lease (it stalled, or the reconciler handed the job to another
worker) can no longer change the job: a transition that matches no row did not happen,
and nothing is published for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import select

from gql_media.db.engine import suppress_unavailable
from gql_media.db.models import JobRow, utcnow
from gql_media.domain import JobStatus
from gql_media.errors import JobCanceled
from gql_media.services.deps import Deps
from gql_media.services.events import announce
from gql_media.services.snapshots import ColumnValues, JobColumns, job_snapshot
from gql_media.services.transitions import CLAIM, CLAIM_AT, HELD_RUNNING, PROGRESS, one_job

log = logging.getLogger(__name__)
T = TypeVar("T")


class LeaseLost(JobCanceled):
    """The worker no longer holds the job: it was canceled or given to another worker."""


async def claim(
    deps: Deps, job_id: uuid.UUID, token: str, version: int | None = None
) -> ColumnValues | None:
    """QUEUED → RUNNING under a new lease ``token``: the job, or None if it was not QUEUED
    (at ``version``, when given: the version the run's queue entry was queued at)."""
    now = utcnow()
    until = now + timedelta(seconds=deps.settings.lease_seconds)
    params: dict[str, Any] = {"job_id": job_id, "now": now, "token": token, "lease_until": until}
    if version is None:
        return await one_job(deps.autocommit, CLAIM, params)
    params["at_version"] = version
    return await one_job(deps.autocommit, CLAIM_AT, params)


class JobContext:
    """The running job as its provider sees it (implements ``ProviderContext``).

    Progress is written and published at most every ``progress_interval`` seconds.
    """

    def __init__(self, deps: Deps, row: JobColumns, token: str) -> None:
        self._deps = deps
        self._job_id = row.id
        self.token = token
        self.attempt = row.attempts
        self.external_id = row.external_id
        self._interval = deps.settings.progress_interval
        self._last = time.monotonic()
        self._value = 0.0
        # the run writes its final change (held by the lease like every other): from here
        # that change, not the lease keeper, says how the run ends
        self.ending = False

    async def progress(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        now = time.monotonic()
        if fraction <= self._value or fraction >= 1.0 or now - self._last < self._interval:
            return
        self._last, self._value = now, fraction
        params = {
            "job_id": self._job_id,
            "token": self.token,
            "now": utcnow(),
            "progress": fraction,
        }
        with suppress_unavailable() as outage:
            row = await one_job(self._deps.autocommit, PROGRESS, params)
        if outage.error is not None:
            log.warning("progress not recorded, database unavailable: %s", outage.error)
            return  # progress is best effort; the lease decides whether the job is ours
        if row is None:
            raise LeaseLost("job is no longer running here")
        await announce(self._deps, job_snapshot(row))

    async def save_external_id(self, external_id: str) -> None:
        saved = await persist(
            self._deps, lambda: self._update(external_id=external_id), "saving external id"
        )
        if not saved:
            raise LeaseLost("job is no longer running here")
        self.external_id = external_id

    async def ensure_running(self) -> None:
        with suppress_unavailable() as outage:
            async with self._deps.sessions() as session:
                token = await session.scalar(
                    select(JobRow.lease_token).where(
                        JobRow.id == self._job_id, JobRow.status == JobStatus.RUNNING.value
                    )
                )
        if outage.error is not None:
            return  # cannot tell now; the lease keeper stops the job if it was lost
        if token != self.token:
            raise LeaseLost("job is no longer running here")

    async def renew_lease(self) -> bool:
        """Move the lease expiry forward; False once the lease is gone."""
        until = utcnow() + timedelta(seconds=self._deps.settings.lease_seconds)
        return await self._update(lease_until=until)

    async def _update(self, **values: Any) -> bool:
        params = {"job_id": self._job_id, "token": self.token}
        async with self._deps.autocommit.connect() as connection:
            result = await connection.execute(HELD_RUNNING.values(**values), params)
        return bool(result.rowcount)


async def keep_lease(deps: Deps, context: JobContext) -> None:
    """Renew the lease every third of its length; return once it is lost."""
    interval = deps.settings.lease_seconds / 3
    while True:
        await asyncio.sleep(interval)
        try:
            if not await context.renew_lease():
                return
        except Exception as exc:  # the database is briefly unreachable: keep trying
            log.warning("could not renew lease: %s", exc)


async def persist(deps: Deps, action: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a final database write, retrying while the database is unreachable, so a finished
    job's result is not lost to a brief outage (the lease bounds how long that may take)."""
    delay = 0.1
    deadline = time.monotonic() + deps.settings.lease_seconds
    while True:
        with suppress_unavailable() as outage:
            return await action()
        if outage.error is not None and time.monotonic() > deadline:
            raise outage.error
        log.warning("%s failed (%s); retrying in %.1fs", what, outage.error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
