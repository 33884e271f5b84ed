"""Inserting validated jobs as QUEUED: idempotency keys, batched inserts within each
owner's cap, a client's batch inserted all or none, and the refusals only the database can
make."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import selectinload

from gql_media.db.models import JobRow, utcnow
from gql_media.domain import JobKind, JobSnapshot, JobStatus, Principal, Scheduling
from gql_media.errors import ErrorCode, InvalidInput, UserError
from gql_media.services import limits
from gql_media.services.deps import Deps
from gql_media.services.events import announce_all_queued, announce_queued
from gql_media.services.inserts import RowInserter, refused_value
from gql_media.services.snapshots import ColumnValues, job_snapshot
from gql_media.settings import Settings

log = logging.getLogger(__name__)
MICROSECOND = timedelta(microseconds=1)

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


@dataclass(frozen=True, slots=True)
class JobDraft:
    """A validated job about to be queued. With an idempotency key, ``request_hash`` is the
    digest of the request that the key's earlier job must have been made from."""

    kind: JobKind
    provider: str
    parameters: dict[str, Any]
    prompt: str | None = None
    model: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None
    scheduling: Scheduling = field(default_factory=Scheduling)


def in_utc(scheduling: Scheduling) -> Scheduling:
    """``scheduling`` with its (validated, zoned) deadline in UTC, as the row gives it back."""
    deadline = scheduling.deadline
    if deadline is None:
        return scheduling
    return replace(scheduling, deadline=deadline.astimezone(UTC))


async def insert_job(deps: Deps, draft: JobDraft, principal: Principal) -> JobSnapshot:
    """Insert a validated job as QUEUED, announce and enqueue it. With an idempotency key,
    the job an earlier request of the same owner with the same key and ``request_hash`` made
    is returned; without one, ``request_hash`` is not needed."""
    principal.require_full("create jobs")
    key = _owners_key(principal, draft.idempotency_key)
    if key is not None:
        existing = await _by_idempotency_key(deps, key, draft.request_hash)
        if existing is not None:
            return existing
    values = _values(deps, draft, key, principal, utcnow())
    existing = await _insert(deps, values)
    if existing is not None:
        return existing
    snapshot = job_snapshot(ColumnValues(values))
    await announce_queued(deps, snapshot, max_running=principal.max_running or 0)
    return snapshot


def _values(
    deps: Deps, draft: JobDraft, key: str | None, principal: Principal, now: datetime
) -> dict[str, Any]:
    """The columns of the new job ``draft`` describes."""
    scheduling = draft.scheduling
    return dict(
        id=uuid.uuid4(),
        kind=draft.kind.value,
        status=JobStatus.QUEUED.value,
        progress=0.0,
        version=1,
        prompt=draft.prompt,
        provider=draft.provider,
        model=draft.model,
        parameters=draft.parameters,
        attempts=0,
        max_attempts=deps.settings.max_attempts,
        idempotency_key=key,
        request_hash=draft.request_hash,
        owner_id=principal.key_id,
        webhook_url=draft.webhook_url,
        priority=scheduling.priority,
        fair_group=scheduling.group,
        deadline=scheduling.deadline,
        run_after=now,
        created_at=now,
        updated_at=now,
    )


async def insert_jobs(
    deps: Deps, drafts: Sequence[JobDraft], principal: Principal
) -> list[JobSnapshot]:
    """Insert validated jobs all at once or none, then announce and enqueue each; the jobs
    in the order of ``drafts``.

    A draft whose idempotency key names an earlier job of the owner (made from the same
    request) stands for that job and inserts nothing; two drafts with the same key are
    refused. The owner's cap on unfinished jobs applies to the new jobs together: all fit
    or none is inserted (UserError TOO_MANY_ACTIVE_JOBS). Fields of userErrors are named
    ``inputs.<index>.<field>``."""
    principal.require_full("create jobs")
    keys = [_owners_key(principal, draft.idempotency_key) for draft in drafts]
    _refuse_repeated_keys(keys)
    for attempt in range(2):
        existing = await _existing(deps, drafts, keys)
        start = utcnow()
        new = {
            index: _values(deps, draft, keys[index], principal, start + index * MICROSECOND)
            for index, draft in enumerate(drafts)
            if index not in existing
        }
        try:
            await _insert_together(deps, list(new.values()), principal)
        except IntegrityError as exc:
            if attempt == 0 and any(keys):
                continue  # a concurrent request inserted one of the keys first: look again
            raise _refused(exc, "inputs") from exc
        except (StatementError, ValueError, OverflowError) as exc:
            if not refused_value(exc):
                raise
            raise _refused(exc, "inputs") from exc
        break
    jobs = {index: job_snapshot(ColumnValues(values)) for index, values in new.items()}
    # together, in input order: first come, first served within a group
    await announce_all_queued(deps, list(jobs.values()), max_running=principal.max_running or 0)
    return [jobs[index] if index in jobs else existing[index] for index in range(len(drafts))]


def _refuse_repeated_keys(keys: list[str | None]) -> None:
    """InvalidInput IDEMPOTENCY_CONFLICT for each input repeating an earlier input's key."""
    first: dict[str, int] = {}
    errors = []
    for index, key in enumerate(keys):
        if key is None:
            continue
        if key in first:
            errors.append(
                UserError(
                    ErrorCode.IDEMPOTENCY_CONFLICT,
                    f"idempotencyKey repeats the key of inputs.{first[key]}",
                    f"inputs.{index}.idempotencyKey",
                )
            )
        first.setdefault(key, index)
    if errors:
        raise InvalidInput(errors)


async def _existing(
    deps: Deps, drafts: Sequence[JobDraft], keys: list[str | None]
) -> dict[int, JobSnapshot]:
    """The earlier jobs that drafts with idempotency keys stand for, by the drafts' index;
    InvalidInput IDEMPOTENCY_CONFLICT for a key used with a different request."""
    wanted = {key: index for index, key in enumerate(keys) if key is not None}
    if not wanted:
        return {}
    async with deps.sessions() as session:
        rows = await session.scalars(
            select(JobRow)
            .where(JobRow.idempotency_key.in_(list(wanted)))
            .options(selectinload(JobRow.outputs))
        )
        found = {row.idempotency_key: row for row in rows}
    existing: dict[int, JobSnapshot] = {}
    errors = []
    for key, index in wanted.items():  # in input order
        row = found.get(key)
        if row is None:
            continue
        if row.request_hash != drafts[index].request_hash:
            errors.append(_conflict().within(f"inputs.{index}"))
        else:
            existing[index] = job_snapshot(row, row.outputs)
    if errors:
        raise InvalidInput(errors)
    return existing


async def _insert_together(deps: Deps, rows: list[dict[str, Any]], principal: Principal) -> None:
    """Insert ``rows`` (all of ``principal``) in one transaction, within the owner's cap."""
    if not rows:
        return
    async with deps.engine.begin() as connection:
        try:
            await limits.hold_active_job_slots(connection, deps.settings, principal, len(rows))
        except UserError as exc:
            raise exc.within("inputs") from None
        await connection.execute(_INSERT_JOB, rows)


def _owners_key(principal: Principal, idempotency_key: str | None) -> str | None:
    """Keys are per owner: stored as a digest of owner and key."""
    if idempotency_key is None:
        return None
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


def _refused(exc: Exception, field: str | None = None) -> UserError:
    """The userError of a job the database refused although it passed validation (a value
    only the database knows it cannot store): for this request alone."""
    # not str(exc): a statement's text repeats its parameters, however large or deep
    log.warning(
        "the database refused a new job: %s %s", type(exc).__name__, getattr(exc, "orig", "")
    )
    return UserError(ErrorCode.INVALID_ARGUMENT, "the database refused a value of this job", field)


def _conflict() -> UserError:
    return UserError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        "idempotencyKey was already used with a different input",
        "idempotencyKey",
    )


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
        raise _conflict()
    return job_snapshot(row, row.outputs)
