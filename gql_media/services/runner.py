"""Running one job on a worker: claim, generate, store outputs, finish — each step guarded.

A claim gives the worker a lease on the job row (a token and an expiry it keeps moving
forward). Every later change the worker makes is guarded by status *and* token, so a
worker that lost its lease (it stalled, or the reconciler handed the job to another
worker) can no longer change the job: a transition that matches no row did not happen,
and nothing is published for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import select

from gql_media.db.engine import is_unavailable
from gql_media.db.models import AssetRow, JobRow, utcnow
from gql_media.domain import (
    GenerateImageRequest,
    JobKind,
    JobStatus,
    OutputFormat,
    backoff_delay,
)
from gql_media.errors import (
    ErrorCode,
    JobCanceled,
    ProviderError,
    StorageUnavailable,
    TransientProviderError,
)
from gql_media.failpoints import BEFORE_FINISH, CLAIMED, OUTPUT_WRITTEN, failpoint
from gql_media.observability.logs import job_context
from gql_media.services import processing
from gql_media.services.deps import Deps
from gql_media.services.events import announce, announce_queued
from gql_media.services.jobs import parse_job_id
from gql_media.services.media import digest_file, extension_for
from gql_media.services.processing import Produced
from gql_media.services.snapshots import ColumnValues, JobColumns, job_snapshot
from gql_media.services.transitions import (
    CLAIM,
    HELD_RUNNING,
    INSERT_ASSETS,
    PROGRESS,
    SUCCEED,
    SUCCEED_WITH_OUTPUTS,
    json_output,
    one_job,
    transition,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class Outcome(StrEnum):
    SKIPPED = "skipped"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELED = "canceled"
    HANDED_BACK = "handed-back"


class LeaseLost(JobCanceled):
    """The worker no longer holds the job: it was canceled or given to another worker."""


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

    async def progress(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        now = time.monotonic()
        if fraction <= self._value or fraction >= 1.0 or now - self._last < self._interval:
            return
        self._last, self._value = now, fraction
        try:
            params = {
                "job_id": self._job_id,
                "token": self.token,
                "now": utcnow(),
                "progress": fraction,
            }
            row = await one_job(self._deps.autocommit, PROGRESS, params)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("progress not recorded, database unavailable: %s", exc)
            return  # progress is best effort; the lease decides whether the job is ours
        if row is None:
            raise LeaseLost("job is no longer running here")
        await announce(self._deps, job_snapshot(row))

    async def save_external_id(self, external_id: str) -> None:
        saved = await _persist(
            self._deps, lambda: self._update(external_id=external_id), "saving external id"
        )
        if not saved:
            raise LeaseLost("job is no longer running here")
        self.external_id = external_id

    async def ensure_running(self) -> None:
        try:
            async with self._deps.sessions() as session:
                token = await session.scalar(
                    select(JobRow.lease_token).where(
                        JobRow.id == self._job_id, JobRow.status == JobStatus.RUNNING.value
                    )
                )
        except Exception as exc:
            if not is_unavailable(exc):
                raise
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


def _request(row: JobColumns) -> GenerateImageRequest:
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


async def _claim(deps: Deps, job_id: uuid.UUID, token: str) -> ColumnValues | None:
    now = utcnow()
    until = now + timedelta(seconds=deps.settings.lease_seconds)
    params = {"job_id": job_id, "now": now, "token": token, "lease_until": until}
    return await one_job(deps.autocommit, CLAIM, params)


async def run_job(deps: Deps, job_id: str) -> Outcome:
    """Run the job once if it is QUEUED; every failure ends in a recorded state."""
    with job_context(job_id):  # every line logged on its behalf names the job
        started = time.perf_counter()
        outcome = await _run_job(deps, job_id)
        if outcome is not Outcome.SKIPPED:
            log.info("job %s: %s in %.3fs", job_id, outcome.value, time.perf_counter() - started)
        return outcome


async def _run_job(deps: Deps, job_id: str) -> Outcome:
    token = uuid.uuid4().hex
    row = await _claim(deps, parse_job_id(job_id), token)
    if row is None:
        return Outcome.SKIPPED
    await announce(deps, job_snapshot(row))
    failpoint(CLAIMED)
    attempt = deps.metrics.worker.attempt(row.kind, row.provider, row.run_after, row.started_at)
    context = JobContext(deps, row, token)
    work = asyncio.create_task(_work(deps, row, context))
    keeper = asyncio.create_task(_keep_lease(deps, context))
    try:
        done, _ = await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # The worker is shutting down past its grace period: give the job back.
        await _stop(work, keeper)
        await asyncio.shield(_hand_back(deps, row, token))
        raise
    if work not in done:
        log.info("job %s: lease lost (canceled or taken over); stopping", job_id)
        await _stop(work, keeper)
        attempt.ended(Outcome.CANCELED)
        return Outcome.CANCELED
    await _stop(keeper)
    outcome = work.result()
    attempt.ended(outcome)
    return outcome


async def _stop(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _keep_lease(deps: Deps, context: JobContext) -> None:
    """Renew the lease every third of its length; return once it is lost."""
    interval = deps.settings.lease_seconds / 3
    while True:
        await asyncio.sleep(interval)
        try:
            if not await context.renew_lease():
                return
        except Exception as exc:  # the database is briefly unreachable: keep trying
            log.warning("could not renew lease: %s", exc)


async def _work(deps: Deps, row: JobColumns, context: JobContext) -> Outcome:
    try:
        outputs, result = await _produce(deps, row, context)
        return await _succeed(deps, row, context, outputs, result)
    except JobCanceled:
        log.info("job %s was canceled while running", job_snapshot(row).id)
        return Outcome.CANCELED
    except ProviderError as exc:
        deps.metrics.worker.provider_error(row.provider, exc.code)
        return await _fail_or_retry(deps, row, context, exc)
    except Exception as exc:
        storage = (
            exc if isinstance(exc, StorageUnavailable) else StorageUnavailable.from_os_error(exc)
        )
        if storage is not None:  # a full disk: retried, as freeing space lets a rerun succeed
            log.warning("job %s: %s", job_snapshot(row).id, storage.message)
            full = TransientProviderError(storage.message, code=ErrorCode.STORAGE_UNAVAILABLE)
            return await _fail_or_retry(deps, row, context, full)
        if is_unavailable(exc):
            log.warning("job %s: database unavailable (%s); retrying", job_snapshot(row).id, exc)
            unavailable = TransientProviderError(
                "the database was unavailable", code=ErrorCode.SERVICE_UNAVAILABLE
            )
            return await _fail_or_retry(deps, row, context, unavailable)
        log.exception("job %s failed unexpectedly", job_snapshot(row).id)
        error = ProviderError("internal error while running job", code=ErrorCode.INTERNAL_ERROR)
        return await _fail_or_retry(deps, row, context, error)


async def _produce(
    deps: Deps, row: JobColumns, context: JobContext
) -> tuple[list[Produced], dict[str, Any] | None]:
    """The job's outputs (and result): from its provider, or from processing an upload."""
    kind = JobKind(row.kind)
    try:
        async with asyncio.timeout(deps.settings.job_timeout):
            if kind is not JobKind.GENERATE_IMAGE:
                return await processing.run_processing(deps, kind, row.parameters, context)
            provider = deps.providers.get(row.provider)
            if provider is None:
                raise ProviderError(f"provider {row.provider!r} is not configured on this worker")
            with deps.metrics.worker.provider_call(row.provider):
                images = await provider.generate(_request(row), context)
            return [
                Produced(None, i.content_type, i.width, i.height, data=i.data) for i in images
            ], None
    except TimeoutError as exc:
        raise TransientProviderError(
            f"job took longer than {deps.settings.job_timeout:g}s", code=ErrorCode.JOB_TIMEOUT
        ) from exc


def output_key(job_id: uuid.UUID, index: int, content_type: str) -> str:
    """``jobs/<first two hex digits>/<job id>-<index>.<ext>``. Deterministic: a rerun of the
    same job overwrites instead of duplicating. Jobs share 256 directories rather than one
    each: on local storage a new directory per job cost more than writing its file."""
    hex_id = job_id.hex
    return f"jobs/{hex_id[:2]}/{hex_id}-{index}.{extension_for(content_type)}"


def job_of_output_key(key: str) -> uuid.UUID | None:
    """The job an ``output_key`` belongs to, also for the earlier layout
    ``jobs/<id>/<n>.<ext>``; None for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "jobs":
        return None
    hex_id = parts[1] if len(parts[1]) == 32 else parts[2].split("-", 1)[0]
    try:
        return uuid.UUID(hex=hex_id)
    except ValueError:
        return None


async def _persist(deps: Deps, action: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a final database write, retrying while the database is unreachable, so a finished
    job's result is not lost to a brief outage (the lease bounds how long that may take)."""
    delay = 0.1
    deadline = time.monotonic() + deps.settings.lease_seconds
    while True:
        try:
            return await action()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            error = exc
        if time.monotonic() > deadline:
            raise error
        log.warning("%s failed (%s); retrying in %.1fs", what, error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _succeed(
    deps: Deps,
    row: JobColumns,
    context: JobContext,
    outputs: list[Produced],
    result: dict[str, Any] | None = None,
) -> Outcome:
    now = utcnow()
    assets: list[dict[str, Any]] = []
    for index, output in enumerate(outputs):
        key = output_key(row.id, index, output.content_type)
        if output.path is not None:
            digest, size = await asyncio.to_thread(digest_file, output.path)
            await deps.storage.put_file(key, output.path)
        else:
            data = output.data or b""
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
            await deps.storage.put(key, data)
        failpoint(OUTPUT_WRITTEN)
        assets.append(
            dict(
                id=uuid.uuid5(row.id, str(index)),
                job_id=row.id,
                position=index,
                storage_key=key,
                content_type=output.content_type,
                width=output.width,
                height=output.height,
                byte_size=size,
                sha256=digest,
                created_at=now,
                name=output.name,
                info=output.info,
            )
        )

    async def finish() -> tuple[ColumnValues | None, list[AssetRow]]:
        params = {"job_id": row.id, "token": context.token, "now": now, "result": result}
        if deps.engine.dialect.name == "postgresql":
            params["outputs"] = [json_output(values) for values in assets]
            done = await one_job(deps.autocommit, SUCCEED_WITH_OUTPUTS, params)
        else:
            async with deps.engine.begin() as connection:
                found = (await connection.execute(SUCCEED, params)).first()
                if found is not None and assets:
                    await connection.execute(INSERT_ASSETS, assets)
            done = ColumnValues(found._mapping) if found is not None else None
        return done, [AssetRow(**values) for values in assets]

    failpoint(BEFORE_FINISH)
    done, rows = await _persist(deps, finish, "finishing job")
    if done is None:
        await _discard_outputs(deps, row.id, [a["storage_key"] for a in assets])
        return Outcome.CANCELED
    await announce(deps, job_snapshot(done, rows))
    return Outcome.SUCCEEDED


async def _discard_outputs(deps: Deps, job_id: uuid.UUID, keys: list[str]) -> None:
    """Delete outputs of a run that lost its job, unless another run may own the same keys."""
    async with deps.sessions() as session:
        status = await session.scalar(select(JobRow.status).where(JobRow.id == job_id))
    if status in (JobStatus.CANCELED.value, JobStatus.FAILED.value):
        for key in keys:
            await deps.storage.delete(key)


async def _fail_or_retry(
    deps: Deps, row: JobColumns, context: JobContext, error: ProviderError
) -> Outcome:
    attempts = row.attempts
    retry = error.retryable and attempts < row.max_attempts
    now = utcnow()
    values: dict[str, Any] = {
        "error_code": error.code.value,
        "error_message": error.message,
        "error_retryable": error.retryable,
    }
    delay = 0.0
    if retry:
        s = deps.settings
        delay = backoff_delay(attempts, s.retry_base_delay, s.retry_max_delay, error.retry_after)
        target = JobStatus.QUEUED
        values.update(progress=0.0, run_after=now + timedelta(seconds=delay))
    else:
        target = JobStatus.FAILED
        values.update(finished_at=now)

    async def record() -> ColumnValues | None:
        async with deps.sessions.begin() as session:
            return await transition(
                session,
                row.id,
                (JobStatus.RUNNING,),
                target,
                held_by=context.token,
                lease_token=None,
                lease_until=None,
                **values,
            )

    updated = await _persist(deps, record, "recording failure")
    if updated is None:
        return Outcome.CANCELED
    snapshot = job_snapshot(updated)
    if retry:
        await announce_queued(deps, snapshot, defer=delay)
        log.info(
            "job %s attempt %d failed (%s); retrying in %.2fs",
            snapshot.id,
            attempts,
            error.code,
            delay,
        )
        return Outcome.RETRYING
    await announce(deps, snapshot)
    log.info("job %s failed: %s %s", snapshot.id, error.code, error.message)
    return Outcome.FAILED


async def _hand_back(deps: Deps, row: JobColumns, token: str) -> None:
    """Return a job this worker cannot finish (shutdown) to the queue; the try is not counted."""
    try:
        async with deps.sessions.begin() as session:
            updated = await transition(
                session,
                row.id,
                (JobStatus.RUNNING,),
                JobStatus.QUEUED,
                held_by=token,
                attempts=JobRow.attempts - 1,
                progress=0.0,
                run_after=utcnow(),
                lease_token=None,
                lease_until=None,
            )
    except Exception:
        log.exception("could not hand back job %s; its lease will expire", row.id)
        return
    if updated is not None:
        snapshot = job_snapshot(updated)
        await announce_queued(deps, snapshot)
        log.info("job %s handed back to the queue", snapshot.id)
