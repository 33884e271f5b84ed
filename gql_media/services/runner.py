"""Running one job on a worker: claim, generate, store outputs, finish — each step guarded.

A job whose row is no longer in the expected state (canceled, or claimed elsewhere) is
left alone: a transition that matches no row did not happen, and nothing is published.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select, update

from gql_media.adapters.providers import ImageProvider
from gql_media.db.models import AssetRow, JobRow, utcnow
from gql_media.domain import (
    GeneratedImage,
    GenerateImageRequest,
    JobStatus,
    OutputFormat,
    backoff_delay,
)
from gql_media.errors import (
    ErrorCode,
    JobCanceled,
    ProviderError,
    TransientProviderError,
)
from gql_media.services.deps import Deps
from gql_media.services.jobs import parse_job_id, stale_queued_jobs, transition
from gql_media.services.snapshots import job_snapshot

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    SKIPPED = "skipped"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELED = "canceled"


class JobContext:
    """The running job as its provider sees it (implements ``ProviderContext``).

    Progress is written and published at most every ``progress_interval`` seconds. A write
    that matches no RUNNING row means the job was canceled: JobCanceled stops the provider.
    """

    def __init__(self, deps: Deps, row: JobRow) -> None:
        self._deps = deps
        self._job_id = row.id
        self.attempt = row.attempts
        self.external_id = row.external_id
        self._interval = deps.settings.progress_interval
        self._last = time.monotonic()
        self._value = 0.0

    async def progress(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        now = time.monotonic()
        if fraction <= self._value or fraction >= 1.0 or now - self._last < self._interval:
            return
        self._last, self._value = now, fraction
        async with self._deps.sessions.begin() as session:
            row = await transition(
                session, self._job_id, (JobStatus.RUNNING,), JobStatus.RUNNING, progress=fraction
            )
        if row is None:
            raise JobCanceled("job is no longer running")
        await self._deps.publisher.publish(job_snapshot(row))

    async def save_external_id(self, external_id: str) -> None:
        async with self._deps.sessions.begin() as session:
            result = await session.execute(
                update(JobRow)
                .where(JobRow.id == self._job_id, JobRow.status == JobStatus.RUNNING.value)
                .values(external_id=external_id)
            )
        if getattr(result, "rowcount", 1) == 0:
            raise JobCanceled("job is no longer running")
        self.external_id = external_id

    async def ensure_running(self) -> None:
        async with self._deps.sessions() as session:
            status = await session.scalar(select(JobRow.status).where(JobRow.id == self._job_id))
        if status != JobStatus.RUNNING.value:
            raise JobCanceled("job is no longer running")


def _request(row: JobRow) -> GenerateImageRequest:
    p = row.parameters
    return GenerateImageRequest(
        prompt=row.prompt or "",
        negative_prompt=p.get("negativePrompt"),
        model=row.model,
        width=int(p["width"]),
        height=int(p["height"]),
        num_outputs=int(p["numOutputs"]),
        seed=int(p["seed"]),
        output_format=OutputFormat(p["outputFormat"]),
        extra=dict(p.get("extra") or {}),
    )


async def run_job(deps: Deps, job_id: str) -> Outcome:
    """Run the job once if it is QUEUED; every failure ends in a recorded state."""
    parsed = parse_job_id(job_id)
    now = utcnow()
    async with deps.sessions.begin() as session:
        row = await transition(
            session,
            parsed,
            (JobStatus.QUEUED,),
            JobStatus.RUNNING,
            attempts=JobRow.attempts + 1,
            progress=0.0,
            started_at=now,
            finished_at=None,
        )
    if row is None:
        return Outcome.SKIPPED
    await deps.publisher.publish(job_snapshot(row))
    provider = deps.providers.get(row.provider)
    try:
        if provider is None:
            raise ProviderError(f"provider {row.provider!r} is not configured on this worker")
        images = await _generate(deps, row, provider)
        return await _succeed(deps, row, images)
    except JobCanceled:
        log.info("job %s was canceled while running", job_id)
        return Outcome.CANCELED
    except ProviderError as exc:
        return await _fail_or_retry(deps, row, exc)
    except Exception:
        log.exception("job %s failed unexpectedly", job_id)
        return await _fail_or_retry(deps, row, ProviderError("internal error while running job"))


async def _generate(deps: Deps, row: JobRow, provider: ImageProvider) -> list[GeneratedImage]:
    try:
        async with asyncio.timeout(deps.settings.job_timeout):
            return await provider.generate(_request(row), JobContext(deps, row))
    except TimeoutError as exc:
        raise TransientProviderError(
            f"job took longer than {deps.settings.job_timeout:g}s", code=ErrorCode.JOB_TIMEOUT
        ) from exc


def output_key(job_id: uuid.UUID, index: int, content_type: str) -> str:
    """Deterministic: a rerun of the same job overwrites instead of duplicating."""
    extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(
        content_type, "bin"
    )
    return f"jobs/{job_id.hex}/{index}.{extension}"


async def _succeed(deps: Deps, row: JobRow, images: list[GeneratedImage]) -> Outcome:
    now = utcnow()
    assets = []
    for index, image in enumerate(images):
        key = output_key(row.id, index, image.content_type)
        await deps.storage.put(key, image.data)
        assets.append(
            AssetRow(
                id=uuid.uuid5(row.id, str(index)),
                job_id=row.id,
                position=index,
                storage_key=key,
                content_type=image.content_type,
                width=image.width,
                height=image.height,
                byte_size=len(image.data),
                sha256=hashlib.sha256(image.data).hexdigest(),
                created_at=now,
            )
        )
    async with deps.sessions.begin() as session:
        done = await transition(
            session,
            row.id,
            (JobStatus.RUNNING,),
            JobStatus.SUCCEEDED,
            progress=1.0,
            finished_at=now,
        )
        if done is not None:
            session.add_all(assets)
    if done is None:
        for asset in assets:
            await deps.storage.delete(asset.storage_key)
        return Outcome.CANCELED
    await deps.publisher.publish(job_snapshot(done, assets))
    return Outcome.SUCCEEDED


async def _fail_or_retry(deps: Deps, row: JobRow, error: ProviderError) -> Outcome:
    attempts = row.attempts
    retry = error.retryable and attempts < row.max_attempts
    now = utcnow()
    errors = {
        "error_code": error.code.value,
        "error_message": error.message,
        "error_retryable": error.retryable,
    }
    delay = 0.0
    async with deps.sessions.begin() as session:
        if retry:
            s = deps.settings
            delay = backoff_delay(
                attempts, s.retry_base_delay, s.retry_max_delay, error.retry_after
            )
            updated = await transition(
                session,
                row.id,
                (JobStatus.RUNNING,),
                JobStatus.QUEUED,
                progress=0.0,
                run_after=now + timedelta(seconds=delay),
                **errors,
            )
        else:
            updated = await transition(
                session, row.id, (JobStatus.RUNNING,), JobStatus.FAILED, finished_at=now, **errors
            )
    if updated is None:
        return Outcome.CANCELED
    snapshot = job_snapshot(updated)
    await deps.publisher.publish(snapshot)
    if retry:
        log.info(
            "job %s attempt %d failed (%s); retrying in %.2fs",
            snapshot.id,
            attempts,
            error.code,
            delay,
        )
        await deps.queue.enqueue(snapshot.id, snapshot.version, defer=delay)
        return Outcome.RETRYING
    log.info("job %s failed: %s %s", snapshot.id, error.code, error.message)
    return Outcome.FAILED


async def reconcile(deps: Deps) -> int:
    """Re-enqueue QUEUED jobs whose start is overdue (a lost enqueue, Redis restarted empty)."""
    rows = await stale_queued_jobs(deps, timedelta(seconds=deps.settings.reconcile_after))
    count = 0
    for row in rows:
        snapshot = job_snapshot(row)
        if await deps.queue.enqueue(snapshot.id, snapshot.version):
            count += 1
    return count
