"""Running one job on a worker: claim, produce, store outputs, finish.

Each step is a guarded change of the job row under the run's lease (``services.lease``):
a run that lost its job changes nothing. Every failure ends in a recorded state: a retry
with a backoff delay, a failure, or the job handed back to the queue on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

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
    PermanentProviderError,
    ProviderError,
    StorageUnavailable,
    TransientProviderError,
)
from gql_media.failpoints import BEFORE_FINISH, CLAIMED, FINISHED, failpoint
from gql_media.observability.logs import job_context
from gql_media.services import deadlines, processing
from gql_media.services.control import cancel_at_provider
from gql_media.services.deps import Deps
from gql_media.services.events import announce, announce_queued
from gql_media.services.jobs import parse_job_id
from gql_media.services.lease import JobContext, claim, keep_lease, persist
from gql_media.services.outputs import discard_outputs, store_outputs
from gql_media.services.processing import Produced
from gql_media.services.snapshots import ColumnValues, JobColumns, job_snapshot
from gql_media.services.transitions import (
    INSERT_ASSETS,
    SUCCEED,
    SUCCEED_WITH_OUTPUTS,
    json_output,
    one_job,
    transition,
)
from gql_media.settings import Settings

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    SKIPPED = "skipped"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELED = "canceled"
    HANDED_BACK = "handed-back"


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


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim of a job's row for one run: the row now RUNNING under the lease ``token``,
    or None when the job was not QUEUED."""

    row: ColumnValues | None
    token: str


async def claim_run(deps: Deps, job_id: str, version: int | None = None) -> Claim:
    """Claim the job's row under a new lease and publish the change: the first step of
    ``run_job``, which a worker may begin early (while arq reads the job's call) and hand
    to it; RUNNING then goes out as the claim commits, not after arq's steps. ``version``:
    the version the run's queue entry was queued at (a newer version of the job has an
    entry of its own, whose run claims it)."""
    token = uuid.uuid4().hex
    row = await claim(deps, parse_job_id(job_id), token, version)
    if row is not None:
        await announce(deps, job_snapshot(row))
    return Claim(row, token)


async def run_job(
    deps: Deps,
    job_id: str,
    claimed: Awaitable[Claim] | None = None,
    *,
    version: int | None = None,
) -> Outcome:
    """Run the job once if it is QUEUED (at ``version``, when given: ``claim_run``); every
    failure ends in a recorded state. ``claimed``: its claim, begun already."""
    with job_context(job_id):  # every line logged on its behalf names the job
        started = time.perf_counter()
        outcome = await _run_job(deps, job_id, claimed, version)
        if outcome is not Outcome.SKIPPED:
            log.info("job %s: %s in %.3fs", job_id, outcome.value, time.perf_counter() - started)
        return outcome


async def _run_job(
    deps: Deps, job_id: str, claimed: Awaitable[Claim] | None, version: int | None
) -> Outcome:
    parsed = parse_job_id(job_id)
    claim_ = await (claimed if claimed is not None else claim_run(deps, job_id, version))
    row, token = claim_.row, claim_.token
    if row is None:
        if await deadlines.expire(deps, parsed):  # too late to start
            return Outcome.FAILED
        return Outcome.SKIPPED
    failpoint(CLAIMED)
    attempt = deps.metrics.worker.attempt(row.kind, row.provider, row.run_after, row.started_at)
    context = JobContext(deps, row, token)
    work = asyncio.create_task(_work(deps, row, context))
    keeper = asyncio.create_task(keep_lease(deps, context))
    try:
        done, _ = await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done and context.ending:
            # The renewal met the row as the run's own final change moved it on (or the
            # lease was lost, which that change, held by the lease, finds): stopped now,
            # the run would skip publishing a change that committed.
            done, _ = await asyncio.wait({work})
    except asyncio.CancelledError:
        # The worker is shutting down past its grace period.
        if context.ending:
            # The run writes its final change: that change decides (handed back now, the
            # job would be found finished and its change never published).
            await _stop(keeper)
            await asyncio.shield(work)
            raise
        # Give the job back.
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


async def _work(deps: Deps, row: JobColumns, context: JobContext) -> Outcome:
    try:
        outputs, result = await _produce(deps, row, context)
        outcome = await _succeed(deps, row, context, outputs, result)
        failpoint(FINISHED)
        return outcome
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
    limit = deps.settings.job_timeout
    left = (row.deadline - utcnow()).total_seconds() if row.deadline is not None else None
    by_deadline = left is not None and left < limit
    try:
        async with asyncio.timeout(max(0.0, left) if left is not None and by_deadline else limit):
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
        if by_deadline:
            if context.external_id is not None:  # stop paying for work nobody will use
                await cancel_at_provider(deps, row.provider, context.external_id)
            raise PermanentProviderError(
                "the job's deadline passed while it ran", code=ErrorCode.DEADLINE_EXCEEDED
            ) from exc
        raise TransientProviderError(
            f"job took longer than {deps.settings.job_timeout:g}s", code=ErrorCode.JOB_TIMEOUT
        ) from exc


async def _succeed(
    deps: Deps,
    row: JobColumns,
    context: JobContext,
    outputs: list[Produced],
    result: dict[str, Any] | None = None,
) -> Outcome:
    now = utcnow()
    assets = await store_outputs(deps, row.id, outputs, now)

    async def finish() -> ColumnValues | None:
        return await _record_success(deps, row.id, context.token, now, result, assets)

    failpoint(BEFORE_FINISH)
    context.ending = True
    done = await persist(deps, finish, "finishing job")
    if done is None:
        await discard_outputs(deps, row.id, [a["storage_key"] for a in assets])
        return Outcome.CANCELED
    await announce(deps, job_snapshot(done, [AssetRow(**values) for values in assets]))
    return Outcome.SUCCEEDED


async def _record_success(
    deps: Deps,
    job_id: uuid.UUID,
    token: str,
    now: datetime,
    result: dict[str, Any] | None,
    assets: list[dict[str, Any]],
) -> ColumnValues | None:
    """RUNNING → SUCCEEDED and the outputs' rows, as one change: the job, or None if this
    run no longer held it (then no output row is inserted)."""
    params = {"job_id": job_id, "token": token, "now": now, "result": result}
    if deps.engine.dialect.name == "postgresql":
        params["outputs"] = [json_output(values) for values in assets]
        return await one_job(deps.autocommit, SUCCEED_WITH_OUTPUTS, params)
    async with deps.engine.begin() as connection:
        found = (await connection.execute(SUCCEED, params)).first()
        if found is not None and assets:
            await connection.execute(INSERT_ASSETS, assets)
    return ColumnValues(found._mapping) if found is not None else None


async def _fail_or_retry(
    deps: Deps, row: JobColumns, context: JobContext, error: ProviderError
) -> Outcome:
    attempts = row.attempts
    retry = error.retryable and attempts < row.max_attempts
    target, delay, values = _after_failure(deps.settings, attempts, error, retry)

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

    context.ending = True
    updated = await persist(deps, record, "recording failure")
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


def _after_failure(
    s: Settings, attempts: int, error: ProviderError, retry: bool
) -> tuple[JobStatus, float, dict[str, Any]]:
    """What failed attempt ``attempts`` changes: QUEUED again after a backoff delay when it is
    retried, else FAILED; the delay (0 without a retry); the values the transition sets."""
    now = utcnow()
    values: dict[str, Any] = {
        "error_code": error.code.value,
        "error_message": error.message,
        "error_retryable": error.retryable,
    }
    if not retry:
        return JobStatus.FAILED, 0.0, {**values, "finished_at": now}
    delay = backoff_delay(attempts, s.retry_base_delay, s.retry_max_delay, error.retry_after)
    retried = {**values, "progress": 0.0, "run_after": now + timedelta(seconds=delay)}
    return JobStatus.QUEUED, delay, retried


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
