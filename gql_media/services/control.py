"""Job use cases that change a job the api was asked about: cancel and retry."""

from __future__ import annotations

import asyncio
import logging

from gql_media.db.models import utcnow
from gql_media.domain import JobAction, JobSnapshot, JobStatus, Principal
from gql_media.errors import Forbidden, InvalidState, NotFound
from gql_media.services import limits
from gql_media.services.deps import Deps
from gql_media.services.events import announce, announce_queued
from gql_media.services.jobs import load_job, parse_job_id
from gql_media.services.snapshots import job_snapshot
from gql_media.services.transitions import transition

log = logging.getLogger(__name__)


async def cancel_job(deps: Deps, job_id: str, principal: Principal) -> JobSnapshot:
    """QUEUED or RUNNING → CANCELED; a running worker notices at its next progress write."""
    parsed = parse_job_id(job_id)
    async with deps.sessions.begin() as session:
        row = await load_job(session, parsed)
        if row is None or not principal.sees_job(row.owner_id, row.id):
            raise NotFound()
        if not principal.may(JobAction.CANCEL):
            raise Forbidden("this watch token was not made to cancel the job", "id")
        status = JobStatus(row.status)
        if status.terminal:
            raise InvalidState(
                f"job is {status.value}; only QUEUED or RUNNING jobs can be canceled"
            )
        updated = await transition(
            session,
            parsed,
            (JobStatus.QUEUED, JobStatus.RUNNING),
            JobStatus.CANCELED,
            finished_at=utcnow(),
            lease_token=None,
            lease_until=None,
        )
        if updated is None:
            raise InvalidState("job changed state while canceling; try again")
    snapshot = job_snapshot(updated)
    await announce(deps, snapshot)
    if status is JobStatus.QUEUED:  # a run ending frees its slot itself
        await deps.queue.withdraw(snapshot.id)
    if updated.external_id is not None:
        await cancel_at_provider(deps, updated.provider, updated.external_id)
    return snapshot


async def cancel_at_provider(deps: Deps, provider_name: str, external_id: str) -> None:
    """Stop the provider-side work of a canceled job (a Replicate prediction), so it is
    not paid for; best effort and bounded in time."""
    cancel = getattr(deps.providers.get(provider_name), "cancel", None)
    if cancel is None:
        return
    try:
        async with asyncio.timeout(10):
            await cancel(external_id)
    except Exception as exc:
        log.warning("could not cancel %s at %s: %s", external_id, provider_name, exc)


async def retry_job(deps: Deps, job_id: str, principal: Principal) -> JobSnapshot:
    """FAILED or CANCELED → QUEUED with a fresh set of attempts."""
    principal.require_full("retry jobs")
    parsed = parse_job_id(job_id)
    now = utcnow()
    async with deps.sessions.begin() as session:
        row = await load_job(session, parsed)
        if row is None or not principal.can_see(row.owner_id):
            raise NotFound()
        status = JobStatus(row.status)
        if status not in (JobStatus.FAILED, JobStatus.CANCELED):
            raise InvalidState(
                f"job is {status.value}; only FAILED or CANCELED jobs can be retried"
            )
        await limits.hold_active_job_slot(await session.connection(), deps.settings, principal)
        updated = await transition(
            session,
            parsed,
            (JobStatus.FAILED, JobStatus.CANCELED),
            JobStatus.QUEUED,
            attempts=0,
            progress=0.0,
            error_code=None,
            error_message=None,
            error_retryable=None,
            external_id=None,
            run_after=now,
            started_at=None,
            finished_at=None,
            webhook_state=None,
        )
        if updated is None:
            raise InvalidState("job changed state while retrying; try again")
    snapshot = job_snapshot(updated)
    await announce_queued(deps, snapshot)
    return snapshot
