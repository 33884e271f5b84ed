"""Outbound webhooks: a job with a ``webhookUrl`` is POSTed there, signed, when it ends.

The terminal transition marks the job ``webhook_state = 'pending'`` in the same UPDATE, so
a delivery is owed exactly when the job ended. ``services.events.announce`` (publish the
change, and queue the delivery of a finished job) is the fast path; the reconciler queues
deliveries whose queue entry was lost. Each attempt is recorded in ``webhook_deliveries``;
failures are retried with exponential backoff up to ``webhook_max_attempts``. Receivers
deduplicate with ``webhook-id``, which stays the same across the attempts of one delivery.

Each attempt is an arq job (``worker.tasks.deliver_webhook_task``). An attempt that a worker
took and never recorded (the worker was killed during it) is made again: the worker marks
the attempt as being made for ``attempt_seconds``, and once that mark is gone the reconciler
queues the attempt again (``JobQueue.enqueue_webhook(lost=True)``). Making an attempt is
idempotent: one already recorded is skipped, and one marked by another worker is left to it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from gql_media.adapters import outbound_http
from gql_media.adapters.outbound import OutboundGuard
from gql_media.adapters.webhooks_out import Attempt, post_signed
from gql_media.db.models import JobRow, WebhookDeliveryRow, utcnow
from gql_media.domain import (
    JOB_ID_PREFIX,
    JobSnapshot,
    JobStatus,
    Principal,
    decode_id,
    encode_id,
)
from gql_media.services.auth import media_url_for
from gql_media.services.deps import Deps
from gql_media.services.snapshots import job_snapshot
from gql_media.settings import Settings

log = logging.getLogger(__name__)
EVENTS = {
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELED: "job.canceled",
}
# seconds an attempt may spend on the database around its POST (which the webhook timeout
# bounds): a worker may take GQL_MEDIA_WEBHOOK_TIMEOUT + this over one attempt. An attempt
# slowed past that by a struggling database may be made twice, which receivers drop by
# webhook-id; a longer margin would delay every attempt lost with its worker as much.
DELIVERY_MARGIN = 5.0


def attempt_seconds(settings: Settings) -> float:
    """How long a worker may take over one attempt; past that, one not recorded was lost."""
    return settings.webhook_timeout + DELIVERY_MARGIN


def retry_delay(settings: Settings, attempt: int) -> float:
    """Seconds between failed attempt ``attempt`` and the next one."""
    return float(
        min(
            settings.webhook_retry_base_delay * 2 ** (attempt - 1),
            settings.webhook_retry_max_delay,
        )
    )


def job_payload(settings: Settings, job: JobSnapshot) -> dict[str, Any]:
    """The job as the api shows it (camelCase, like the GraphQL ``Job``)."""

    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": job.id,
        "kind": job.kind.value,
        "status": job.status.value,
        "progress": job.progress,
        "version": job.version,
        "prompt": job.prompt,
        "provider": job.provider,
        "model": job.model,
        "parameters": job.parameters,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "error": (
            {
                "code": job.error.code,
                "message": job.error.message,
                "retryable": job.error.retryable,
            }
            if job.error
            else None
        ),
        "outputs": [
            {
                "id": output.id,
                "name": output.name,
                "url": media_url_for(settings, output.key),
                "contentType": output.content_type,
                "width": output.width,
                "height": output.height,
                "byteSize": output.byte_size,
                "sha256": output.sha256,
            }
            for output in job.outputs
        ],
        "result": job.result,
        "createdAt": when(job.created_at),
        "startedAt": when(job.started_at),
        "finishedAt": when(job.finished_at),
        "updatedAt": when(job.updated_at),
    }


async def deliver(deps: Deps, job_id: str, attempt: int) -> str:
    """Make delivery ``attempt`` of a finished job's webhook; queue the next one on failure.
    Returns what happened, for the worker's log."""
    settings = deps.settings
    parsed = decode_id(JOB_ID_PREFIX, job_id)
    if parsed is None or settings.webhook_secret is None:
        return "skipped"
    owed = await _owed(deps, parsed, attempt)
    if owed is None:
        return "skipped"
    snapshot, url = owed
    if not snapshot.status.terminal or snapshot.finished_at is None:
        return "skipped"
    event = EVENTS[snapshot.status]
    webhook_id = f"msg_{parsed.hex}_{int(snapshot.finished_at.timestamp() * 1000)}"
    body = orjson.dumps(
        {"type": event, "timestamp": utcnow().isoformat(), "data": job_payload(settings, snapshot)}
    )
    async with outbound_http.client(OutboundGuard(settings.outbound_allow)) as client:
        result = await post_signed(
            client,
            url,
            secret=settings.webhook_secret.get_secret_value(),
            webhook_id=webhook_id,
            body=body,
            timeout=settings.webhook_timeout,
        )
    final = result.succeeded or attempt >= settings.webhook_max_attempts
    await _record(deps, parsed, attempt, url, webhook_id, event, result, final=final)
    return await _after(deps, job_id, attempt, url, result, final=final)


async def _owed(deps: Deps, job_id: uuid.UUID, attempt: int) -> tuple[JobSnapshot, str] | None:
    """The job and its webhook URL if delivery ``attempt`` is owed: the job's delivery is
    pending and this attempt was not made (and recorded) already."""
    async with deps.sessions() as session:
        row = await session.scalar(
            select(JobRow).where(JobRow.id == job_id).options(selectinload(JobRow.outputs))
        )
        if row is None or row.webhook_state != "pending" or row.webhook_url is None:
            return None
        made = await session.scalar(
            select(func.max(WebhookDeliveryRow.attempt)).where(WebhookDeliveryRow.job_id == job_id)
        )
        if made is not None and made >= attempt:
            return None
        return job_snapshot(row, row.outputs), row.webhook_url


async def _record(
    deps: Deps,
    job_id: uuid.UUID,
    attempt: int,
    url: str,
    webhook_id: str,
    event: str,
    result: Attempt,
    *,
    final: bool,
) -> None:
    """Record the attempt; after the ``final`` one, the job's delivery is over."""
    async with deps.sessions.begin() as session:
        session.add(
            WebhookDeliveryRow(
                id=uuid.uuid4(),
                job_id=job_id,
                webhook_id=webhook_id,
                event=event,
                attempt=attempt,
                url=url,
                status_code=result.status_code,
                error=result.error,
                duration_ms=result.duration_ms,
                succeeded=result.succeeded,
                created_at=utcnow(),
            )
        )
        if final:
            await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.webhook_state == "pending")
                .values(webhook_state="delivered" if result.succeeded else "failed")
            )


async def _after(
    deps: Deps, job_id: str, attempt: int, url: str, result: Attempt, *, final: bool
) -> str:
    """What the attempt's outcome leads to: done, given up, or the next attempt queued."""
    if result.succeeded:
        return "delivered"
    if final:
        log.warning("job %s: webhook to %s failed %d times; giving up", job_id, url, attempt)
        return "failed"
    delay = retry_delay(deps.settings, attempt)
    log.info(
        "job %s: webhook attempt %d failed (%s); retrying in %.0fs",
        job_id,
        attempt,
        result.error,
        delay,
    )
    await deps.queue.enqueue_webhook(job_id, attempt + 1, defer=delay)
    return "retrying"


async def requeue_lost(deps: Deps, limit: int = 200) -> int:
    """Queue again the pending deliveries whose next attempt is overdue by
    ``reconcile_after`` while it neither waits on the queue nor is being made: its entry was
    lost with Redis, or with a worker killed during the attempt (whose mark expired after
    ``attempt_seconds``). Returns how many were queued now."""
    settings = deps.settings
    now = utcnow()
    grace = timedelta(seconds=settings.reconcile_after)
    attempts = (
        select(
            WebhookDeliveryRow.job_id,
            func.max(WebhookDeliveryRow.attempt).label("made"),
            func.max(WebhookDeliveryRow.created_at).label("last"),
        )
        .group_by(WebhookDeliveryRow.job_id)
        .subquery()
    )
    stmt = (
        select(JobRow.id, JobRow.finished_at, attempts.c.made, attempts.c.last)
        .outerjoin(attempts, attempts.c.job_id == JobRow.id)
        .where(JobRow.webhook_state == "pending", JobRow.finished_at < now - grace)
        .order_by(JobRow.finished_at)
        .limit(limit)
    )
    async with deps.sessions() as session:
        rows = (await session.execute(stmt)).all()
    queued = 0
    for job_id, finished_at, made, last in rows:
        due = finished_at
        if made and last is not None:  # the next attempt is due once the last one's delay ran
            due = last + timedelta(seconds=retry_delay(settings, made))
        if due > now - grace:
            continue
        job = encode_id(JOB_ID_PREFIX, job_id)
        if await deps.queue.enqueue_webhook(job, (made or 0) + 1, lost=True):
            queued += 1
    return queued


async def deliveries_of(
    deps: Deps, job_ids: Sequence[str], principal: Principal
) -> list[list[WebhookDeliveryRow]]:
    """Each job's webhook deliveries, oldest first, read in one query for all the jobs;
    none for a malformed id or a job ``principal`` does not see."""
    parsed = [decode_id(JOB_ID_PREFIX, job_id) for job_id in job_ids]
    wanted = {job_id for job_id in parsed if job_id is not None}
    found: dict[uuid.UUID, list[WebhookDeliveryRow]] = {}
    if wanted:
        async with deps.sessions() as session:
            rows = await session.execute(
                select(WebhookDeliveryRow, JobRow.owner_id)
                .join(JobRow, JobRow.id == WebhookDeliveryRow.job_id)
                .where(WebhookDeliveryRow.job_id.in_(wanted))
                .order_by(WebhookDeliveryRow.created_at, WebhookDeliveryRow.attempt)
            )
            for row, owner in rows:
                if principal.sees_job(owner, row.job_id):
                    found.setdefault(row.job_id, []).append(row)
    return [found.get(job_id, []) if job_id is not None else [] for job_id in parsed]
