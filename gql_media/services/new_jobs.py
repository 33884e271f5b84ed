"""Inserting a validated job as QUEUED: idempotency keys, batched inserts within each
owner's cap, and the refusals only the database can make."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import selectinload

from gql_media.db.models import JobRow, utcnow
from gql_media.domain import JobKind, JobSnapshot, JobStatus, Principal
from gql_media.errors import ErrorCode, UserError
from gql_media.services import limits
from gql_media.services.deps import Deps
from gql_media.services.events import announce_queued
from gql_media.services.inserts import RowInserter, refused_value
from gql_media.services.snapshots import ColumnValues, job_snapshot
from gql_media.settings import Settings

log = logging.getLogger(__name__)

# built once: reused, it is not keyed again for the compiled cache on every request
_INSERT_JOB = insert(cast(Table, JobRow.__table__))


def job_inserter(engine: AsyncEngine, autocommit: AsyncEngine, settings: Settings) -> RowInserter:
    """What ``Deps.job_inserts`` is: new jobs' INSERTs, batched while others are out, each
    within its owner's cap on unfinished jobs."""
    return RowInserter(
        engine,
        autocommit,
        _INSERT_JOB,
        guard=limits.active_jobs_cap(settings),
        guarded=limits.capped(settings),
    )


async def insert_job(
    deps: Deps,
    *,
    kind: JobKind,
    provider: str,
    parameters: dict[str, Any],
    prompt: str | None = None,
    model: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    principal: Principal,
    webhook_url: str | None = None,
) -> JobSnapshot:
    """Insert a validated job as QUEUED, announce and enqueue it. With an idempotency key,
    the job an earlier request of the same owner with the same key and ``request_hash`` made
    is returned; without one, ``request_hash`` is not needed."""
    if idempotency_key is not None:
        idempotency_key = _owners_key(principal, idempotency_key)
        existing = await _by_idempotency_key(deps, idempotency_key, request_hash)
        if existing is not None:
            return existing
    now = utcnow()
    values = dict(
        id=uuid.uuid4(),
        kind=kind.value,
        status=JobStatus.QUEUED.value,
        progress=0.0,
        version=1,
        prompt=prompt,
        provider=provider,
        model=model,
        parameters=parameters,
        attempts=0,
        max_attempts=deps.settings.max_attempts,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        owner_id=principal.key_id,
        webhook_url=webhook_url,
        run_after=now,
        created_at=now,
        updated_at=now,
    )
    existing = await _insert(deps, values)
    if existing is not None:
        return existing
    snapshot = job_snapshot(ColumnValues(values))
    await announce_queued(deps, snapshot)
    return snapshot


def _owners_key(principal: Principal, idempotency_key: str) -> str:
    """Keys are per owner: stored as a digest of owner and key."""
    return hashlib.sha256(f"{principal.owner or '-'}\0{idempotency_key}".encode()).hexdigest()


async def _insert(deps: Deps, values: dict[str, Any]) -> JobSnapshot | None:
    """Insert the job ``values`` describe, with the jobs that arrive meanwhile (one round
    trip) and within its owner's cap: None, or the job a concurrent request with the same
    idempotency key inserted first."""
    try:
        await deps.job_inserts(values)
    except IntegrityError as exc:
        existing = None
        if values["idempotency_key"] is not None:
            existing = await _by_idempotency_key(
                deps, values["idempotency_key"], values["request_hash"]
            )
        if existing is None:
            raise _refused(exc) from exc
        return existing
    except (StatementError, ValueError, OverflowError) as exc:
        if not refused_value(exc):
            raise
        raise _refused(exc) from exc
    return None


def _refused(exc: Exception) -> UserError:
    """The userError of a job the database refused although it passed validation (a value
    only the database knows it cannot store): for this request alone."""
    # not str(exc): a statement's text repeats its parameters, however large or deep
    log.warning(
        "the database refused a new job: %s %s", type(exc).__name__, getattr(exc, "orig", "")
    )
    return UserError(ErrorCode.INVALID_ARGUMENT, "the database refused a value of this job")


async def _by_idempotency_key(deps: Deps, key: str, request_hash: str | None) -> JobSnapshot | None:
    async with deps.sessions() as session:
        stmt = (
            select(JobRow)
            .where(JobRow.idempotency_key == key)
            .options(selectinload(JobRow.outputs))
        )
        row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise UserError(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "idempotencyKey was already used with a different input",
            "idempotencyKey",
        )
    return job_snapshot(row, row.outputs)
