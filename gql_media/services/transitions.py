"""Job transitions: every change of a job's state is one guarded UPDATE.

The UPDATE matches the job only in a state it may leave; a worker's change matches only
while the worker still holds the job's lease, and a change decided on a job read earlier
only while the job is at the version that was read. A transition that matches no row did
not happen, and nothing is published for it. Each moves the job to a new ``version`` and
returns the job's columns.

The statements every run of a job makes are built here once: a statement object that is
reused is neither rebuilt nor keyed again for SQLAlchemy's compiled cache, which costs
more than running it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Executable,
    Row,
    Select,
    Table,
    Update,
    bindparam,
    case,
    column,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.functions import FunctionElement

from gql_media.db.models import AssetRow, JobRow, utcnow
from gql_media.domain import JobStatus
from gql_media.errors import ErrorCode
from gql_media.services.snapshots import ColumnValues

JOBS_TABLE = cast(Table, JobRow.__table__)
_JOBS = JOBS_TABLE.c


def _param(name: str, column: ColumnElement[Any]) -> Any:
    return bindparam(name, type_=column.type)


# every transition's time: the parameter ``now``
NOW = _param("now", _JOBS.updated_at)
# a job that ends with a webhook URL now owes a delivery
OWES_WEBHOOK = case((JobRow.webhook_url.is_not(None), "pending"), else_=None)


def guarded(sources: Sequence[JobStatus], *, held: bool = False, versioned: bool = False) -> Update:
    """``UPDATE jobs WHERE id = :job_id`` and the job is in one of ``sources``; ``held``: and
    the lease token is ``:token`` (a worker's change); ``versioned``: and the version is
    ``:at_version`` (nothing changed the job since it was read)."""
    if len(sources) == 1:
        in_source = _JOBS.status == sources[0].value
    else:
        in_source = _JOBS.status.in_([source.value for source in sources])
    stmt = update(JOBS_TABLE).where(_JOBS.id == bindparam("job_id"), in_source)
    if held:
        stmt = stmt.where(_JOBS.lease_token == bindparam("token"))
    if versioned:
        stmt = stmt.where(_JOBS.version == bindparam("at_version"))
    return stmt


def transition_statement(
    sources: Sequence[JobStatus],
    target: JobStatus | None,
    *,
    held: bool = False,
    versioned: bool = False,
    **values: Any,
) -> ReturningUpdate[Any]:
    """The transition from ``sources`` to ``target`` (None: the status stays) that also sets
    ``values``, guarded as ``guarded`` says: a new version, ``updated_at = :now`` and, for a
    terminal ``target``, the webhook delivery the job now owes. Returns the job's columns."""
    if target is not None:
        values["status"] = target.value
        if target.terminal:
            values.setdefault("webhook_state", OWES_WEBHOOK)
    stmt = guarded(sources, held=held, versioned=versioned)
    return stmt.values(version=_JOBS.version + 1, updated_at=NOW, **values).returning(*_JOBS)


class CommitUnflushed(FunctionElement[bool]):
    """A condition that always holds and, on PostgreSQL, has the transaction of the
    statement it is in commit without waiting for its WAL to reach the disk
    (``synchronous_commit`` off for that transaction only), in the same round trip. For the
    changes whose loss a crash of PostgreSQL itself may cost is one the lease already
    recovers from: a claim lost that way leaves the job QUEUED, so the run that claimed it
    can record nothing (every later change of the run is held by its lease) and the job
    runs again, as it does after a worker dies; a progress lost is best effort anyway. A
    later change that waits for the disk (the run's end, say) flushes the earlier ones
    with it. Every other change, and every change on SQLite, waits for the disk."""

    type = Boolean()
    name = "commit_unflushed"
    inherit_cache = True  # a constant: the statements it is in stay in SQLAlchemy's cache


@compiles(CommitUnflushed, "postgresql")
def _commit_unflushed_postgresql(element: CommitUnflushed, compiler: SQLCompiler, **kw: Any) -> str:
    return "set_config('synchronous_commit', 'off', true) = 'off'"


@compiles(CommitUnflushed)
def _commit_unflushed(element: CommitUnflushed, compiler: SQLCompiler, **kw: Any) -> str:
    return "1"  # SQLite, which has no boolean type, compares it with 1


def _job_of(found: Row[Any] | None) -> ColumnValues | None:
    return ColumnValues(found._mapping) if found is not None else None


async def transition(
    session: AsyncSession,
    job_id: uuid.UUID,
    sources: tuple[JobStatus, ...],
    target: JobStatus,
    *,
    held_by: str | None = None,
    at_version: int | None = None,
    **values: Any,
) -> ColumnValues | None:
    """Move the job from one of ``sources`` to ``target`` in ``session``'s transaction: the
    job as it is now, or None if the transition did not happen. ``held_by``: only while the
    worker still holds this lease; ``at_version``: only if nothing changed the job since it
    was read at that version."""
    stmt = transition_statement(
        sources, target, held=held_by is not None, versioned=at_version is not None, **values
    )
    params: dict[str, Any] = {"job_id": job_id, "now": utcnow()}
    if held_by is not None:
        params["token"] = held_by
    if at_version is not None:
        params["at_version"] = at_version
    return _job_of((await session.execute(stmt, params)).first())


async def one_job(
    engine: AsyncEngine, stmt: Executable, params: dict[str, Any]
) -> ColumnValues | None:
    """Run ``stmt`` (returning a job's columns) on a connection of ``engine``: the job it
    changed, or None. A Core connection costs less per statement than an ORM session."""
    async with engine.connect() as connection:
        return _job_of((await connection.execute(stmt, params)).first())


# --- the transitions of a run, built once ---------------------------------------------

# a job past its deadline is never claimed: it expires (EXPIRE) instead; a claim commits
# without waiting for the disk (CommitUnflushed)
CLAIM = transition_statement(
    (JobStatus.QUEUED,),
    JobStatus.RUNNING,
    attempts=_JOBS.attempts + 1,
    progress=0.0,
    started_at=NOW,
    finished_at=None,
    lease_token=bindparam("token"),
    lease_until=_param("lease_until", _JOBS.lease_until),
).where(or_(_JOBS.deadline.is_(None), _JOBS.deadline > NOW), CommitUnflushed())
# the claim by the run of one queue entry: of the version the entry was queued at
# (``:at_version``), not of a newer one that has an entry of its own
CLAIM_AT = CLAIM.where(_JOBS.version == bindparam("at_version"))
# QUEUED → FAILED once the deadline passed
EXPIRE = transition_statement(
    (JobStatus.QUEUED,),
    JobStatus.FAILED,
    finished_at=NOW,
    error_code=ErrorCode.DEADLINE_EXCEEDED.value,
    error_message="the job's deadline passed before it started",
    error_retryable=False,
).where(_JOBS.deadline <= NOW)
PROGRESS = transition_statement(
    (JobStatus.RUNNING,), None, held=True, progress=bindparam("progress")
).where(CommitUnflushed())
SUCCEED = transition_statement(
    (JobStatus.RUNNING,),
    JobStatus.SUCCEEDED,
    held=True,
    progress=1.0,
    finished_at=NOW,
    result=_param("result", _JOBS.result),
    lease_token=None,
    lease_until=None,
)
# a worker's change of a RUNNING job that is no transition (its lease, its external id)
HELD_RUNNING = guarded((JobStatus.RUNNING,), held=True)

_ASSETS_TABLE = cast(Table, AssetRow.__table__)
INSERT_ASSETS = insert(_ASSETS_TABLE)
_OUTPUT_COLUMNS = (
    "id",
    "job_id",
    "position",
    "storage_key",
    "content_type",
    "width",
    "height",
    "byte_size",
    "sha256",
    "name",
    "info",
)


def _succeed_with_outputs() -> Select[Any]:
    """On PostgreSQL, the SUCCEEDED transition and the insert of its outputs as one
    statement: one round trip with no transaction to open and commit. The outputs come as
    one JSON array typed by ``jsonb_to_recordset`` and are inserted only if the transition
    matched; the statement returns the job as ``SUCCEED`` does."""
    done = SUCCEED.cte("done")
    given = (
        func.jsonb_to_recordset(bindparam("outputs", type_=JSONB))
        .table_valued(*(column(name, _ASSETS_TABLE.c[name].type) for name in _OUTPUT_COLUMNS))
        .render_derived(name="given", with_types=True)
    )
    # defaults are not applied inside a CTE: every column is given
    role = literal("output", _ASSETS_TABLE.c.role.type)
    rows = select(*(given.c[name] for name in _OUTPUT_COLUMNS), NOW, role).where(
        exists(select(done.c.id))
    )
    outputs = insert(_ASSETS_TABLE).from_select([*_OUTPUT_COLUMNS, "created_at", "role"], rows)
    return select(done).add_cte(outputs.cte("outputs"))


SUCCEED_WITH_OUTPUTS = _succeed_with_outputs()


def json_output(values: dict[str, Any]) -> dict[str, Any]:
    """An output row for ``SUCCEED_WITH_OUTPUTS``: its columns, ids as text."""
    output = {name: values[name] for name in _OUTPUT_COLUMNS}
    output["id"], output["job_id"] = str(values["id"]), str(values["job_id"])
    return output
