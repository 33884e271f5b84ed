"""Job use cases for the api: create, read, list, cancel and retry."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import orjson
from sqlalchemy import Select, Table, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import selectinload

from gql_media.db.models import JobRow, utcnow
from gql_media.domain import (
    JOB_ID_PREFIX,
    GenerateImageRequest,
    JobKind,
    JobSnapshot,
    JobStatus,
    OutputFormat,
    Principal,
    ProviderInfo,
    decode_id,
)
from gql_media.errors import (
    ErrorCode,
    InvalidInput,
    InvalidState,
    NotFound,
    UserError,
)
from gql_media.services import limits
from gql_media.services.deps import Deps
from gql_media.services.events import announce, announce_queued
from gql_media.services.input_limits import json_problem, text_problem, url_problem
from gql_media.services.inserts import RowInserter, refused_value
from gql_media.services.snapshots import ColumnValues, job_snapshot
from gql_media.services.transitions import transition
from gql_media.settings import Settings

log = logging.getLogger(__name__)

MAX_SEED = 2**31 - 1  # GraphQL's Int is a signed 32-bit integer
MAX_PROVIDER_NAME = 64  # the length of the provider column
MAX_IDEMPOTENCY_KEY = 255
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
class NewImageJob:
    """A request to generate images, as the api received it (not yet validated)."""

    prompt: str
    negative_prompt: str | None = None
    provider: str | None = None
    model: str | None = None
    width: int = 512
    height: int = 512
    num_outputs: int = 1
    seed: int | None = None
    output_format: OutputFormat = OutputFormat.PNG
    extra: Any = field(default_factory=dict)  # any JSON value; only an object is valid
    idempotency_key: str | None = None
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class JobFilter:
    statuses: tuple[JobStatus, ...] = ()
    kind: JobKind | None = None
    provider: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def problem(self) -> UserError | None:
        """What makes the filter unusable (text no database can compare), or None."""
        return text_problem("filter.provider", self.provider, MAX_PROVIDER_NAME)

    def matches(self, job: JobSnapshot) -> bool:
        """The same test as the SQL filter, for live events."""
        return (
            (not self.statuses or job.status in self.statuses)
            and (self.kind is None or job.kind == self.kind)
            and (self.provider is None or job.provider == self.provider)
            and (self.created_after is None or job.created_at >= self.created_after)
            and (self.created_before is None or job.created_at < self.created_before)
        )


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[JobSnapshot]
    cursors: list[str]
    has_next_page: bool
    total_count: int


def parse_job_id(text: str) -> uuid.UUID:
    job_id = decode_id(JOB_ID_PREFIX, text)
    if job_id is None:
        shown = repr(text) if len(text) <= 64 else f"{text[:64]!r}…"  # not a megabyte back
        raise UserError(ErrorCode.INVALID_ID, f"{shown} is not a job id", "id")
    return job_id


def validate_new_job(s: Settings, job: NewImageJob, providers: set[str]) -> list[UserError]:
    """Every problem with ``job``; an empty list means it may be queued."""
    found = [
        _prompt_problem(s, job.prompt),
        _negative_prompt_problem(s, job.negative_prompt),
        text_problem("provider", job.provider, MAX_PROVIDER_NAME),
        text_problem("model", job.model, s.max_model_length),
    ]
    errors = [problem for problem in found if problem is not None]
    for name, value in (("width", job.width), ("height", job.height)):
        if not s.min_image_size <= value <= s.max_image_size:
            errors.append(
                UserError(
                    ErrorCode.SIZE_OUT_OF_RANGE,
                    f"{name} must be between {s.min_image_size} and {s.max_image_size}",
                    name,
                )
            )
    if not 1 <= job.num_outputs <= s.max_outputs:
        errors.append(
            UserError(
                ErrorCode.NUM_OUTPUTS_OUT_OF_RANGE,
                f"numOutputs must be between 1 and {s.max_outputs}",
                "numOutputs",
            )
        )
    if job.seed is not None and not 0 <= job.seed <= MAX_SEED:
        errors.append(
            UserError(ErrorCode.SEED_OUT_OF_RANGE, f"seed must be between 0 and {MAX_SEED}", "seed")
        )
    provider = job.provider or s.default_provider
    if found[2] is None and provider not in providers:
        errors.append(
            UserError(
                ErrorCode.UNKNOWN_PROVIDER,
                f"unknown provider {provider!r}; known: {', '.join(sorted(providers))}",
                "provider",
            )
        )
    if not isinstance(job.extra, dict):
        errors.append(UserError(ErrorCode.INVALID_ARGUMENT, "extra must be a JSON object", "extra"))
    else:
        problem = json_problem(
            "extra", job.extra, max_bytes=s.max_extra_bytes, max_depth=s.max_extra_depth
        )
        if problem is not None:
            errors.append(problem)
    errors.extend(common_problems(s, job.idempotency_key, job.webhook_url))
    return errors


def _prompt_problem(s: Settings, prompt: str) -> UserError | None:
    problem = text_problem("prompt", prompt)
    if problem is not None:
        return problem
    length = len(prompt.strip())
    if not length:
        return UserError(ErrorCode.PROMPT_EMPTY, "prompt must not be empty", "prompt")
    if length > s.max_prompt_length:
        return UserError(
            ErrorCode.PROMPT_TOO_LONG,
            f"prompt is {length} characters; the maximum is {s.max_prompt_length}",
            "prompt",
        )
    return None


def _negative_prompt_problem(s: Settings, negative_prompt: str | None) -> UserError | None:
    if negative_prompt is not None and len(negative_prompt) > s.max_prompt_length:
        return UserError(
            ErrorCode.PROMPT_TOO_LONG,
            f"negativePrompt is longer than {s.max_prompt_length} characters",
            "negativePrompt",
        )
    return text_problem("negativePrompt", negative_prompt)


def common_problems(
    settings: Settings, idempotency_key: str | None, webhook_url: str | None
) -> list[UserError]:
    """Problems with the inputs every job-creating mutation takes."""
    errors = []
    key_problem = text_problem("idempotencyKey", idempotency_key, MAX_IDEMPOTENCY_KEY)
    if key_problem is not None:
        errors.append(key_problem)
    elif idempotency_key is not None and not idempotency_key:
        errors.append(
            UserError(
                ErrorCode.INVALID_ARGUMENT,
                f"idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                "idempotencyKey",
            )
        )
    errors.extend(webhook_url_problems(settings, webhook_url))
    return errors


def webhook_url_problems(settings: Settings, url: str | None) -> list[UserError]:
    """What is wrong with a job's ``webhookUrl`` (where it points is checked when it is
    delivered, against the outbound rules)."""
    if url is None:
        return []
    if settings.webhook_secret is None:
        return [
            UserError(
                ErrorCode.WEBHOOKS_NOT_CONFIGURED,
                "this server sends no webhooks (GQL_MEDIA_WEBHOOK_SECRET is not set)",
                "webhookUrl",
            )
        ]
    problem = url_problem("webhookUrl", url, settings.max_webhook_url_length)
    if problem is not None:
        return [problem]
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https") or "://" not in url:
        return [
            UserError(
                ErrorCode.INVALID_ARGUMENT,
                "webhookUrl must be an http(s) URL of at most "
                f"{settings.max_webhook_url_length} characters",
                "webhookUrl",
            )
        ]
    return []


def _request_hash(job: NewImageJob) -> str:
    data = asdict(job)
    data.pop("idempotency_key")
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _provider_request(job: NewImageJob) -> GenerateImageRequest:
    return GenerateImageRequest(
        prompt=job.prompt.strip(),
        negative_prompt=job.negative_prompt,
        model=job.model,
        width=job.width,
        height=job.height,
        num_outputs=job.num_outputs,
        seed=job.seed or 0,
        output_format=job.output_format,
        extra=job.extra,
    )


def _seed_for(job: NewImageJob) -> int:
    if job.seed is not None:
        return job.seed
    return uuid.uuid4().int & MAX_SEED


async def _load(session: AsyncSession, job_id: uuid.UUID) -> JobRow | None:
    stmt = select(JobRow).where(JobRow.id == job_id).options(selectinload(JobRow.outputs))
    return (await session.execute(stmt)).scalar_one_or_none()


def describe_providers(deps: Deps) -> list[ProviderInfo]:
    """Every provider this process knows, configured or not, by name."""
    return [deps.providers[name].describe() for name in sorted(deps.providers)]


async def create_image_job(deps: Deps, job: NewImageJob, principal: Principal) -> JobSnapshot:
    """Validate, insert and enqueue a generateImage job; an idempotency key replays its job."""
    errors = validate_new_job(deps.settings, job, set(deps.providers))
    if not errors:
        provider = deps.providers[job.provider or deps.settings.default_provider]
        errors = provider.validate(_provider_request(job))
    if errors:
        raise InvalidInput(errors)
    return await insert_job(
        deps,
        kind=JobKind.GENERATE_IMAGE,
        provider=job.provider or deps.settings.default_provider,
        prompt=job.prompt.strip(),
        model=job.model,
        parameters={
            "negativePrompt": job.negative_prompt,
            "width": job.width,
            "height": job.height,
            "numOutputs": job.num_outputs,
            "seed": _seed_for(job),
            "outputFormat": job.output_format.value,
            "extra": job.extra,
        },
        idempotency_key=job.idempotency_key,
        request_hash=_request_hash(job) if job.idempotency_key is not None else None,
        principal=principal,
        webhook_url=job.webhook_url,
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
        # keys are per owner: stored as a digest of owner and key
        idempotency_key = hashlib.sha256(
            f"{principal.owner or '-'}\0{idempotency_key}".encode()
        ).hexdigest()
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
    try:
        # with the jobs that arrive meanwhile: one round trip; within the owner's cap
        await deps.job_inserts(values)
    except IntegrityError as exc:
        # A concurrent request with the same idempotency key won the insert.
        existing = None
        if idempotency_key is not None:
            existing = await _by_idempotency_key(deps, idempotency_key, request_hash)
        if existing is None:
            raise _refused(exc) from exc
        return existing
    except (StatementError, ValueError, OverflowError) as exc:
        if not refused_value(exc):
            raise
        raise _refused(exc) from exc
    snapshot = job_snapshot(ColumnValues(values))
    await announce_queued(deps, snapshot)
    return snapshot


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


async def get_job(deps: Deps, job_id: str, principal: Principal) -> JobSnapshot | None:
    """The job, or None for an unknown or malformed id, or another owner's job."""
    parsed = decode_id(JOB_ID_PREFIX, job_id)
    if parsed is None:
        return None
    async with deps.sessions() as session:
        row = await _load(session, parsed)
        if row is None or not principal.can_see(row.owner_id):
            return None
        return job_snapshot(row, row.outputs)


def encode_cursor(job: JobSnapshot) -> str:
    raw = orjson.dumps([job.created_at.isoformat(), job.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = orjson.loads(raw)
        if not isinstance(created, str) or not isinstance(job_id, str):
            raise TypeError(cursor)
        parsed = decode_id(JOB_ID_PREFIX, job_id)
        if parsed is None:
            raise ValueError(job_id)
        return datetime.fromisoformat(created), parsed
    except (ValueError, TypeError, binascii.Error) as exc:
        raise UserError(ErrorCode.INVALID_CURSOR, "malformed cursor", "after") from exc


def _filtered(stmt: Select[Any], job_filter: JobFilter, principal: Principal) -> Select[Any]:
    if not principal.admin:
        stmt = stmt.where(JobRow.owner_id == principal.key_id)
    if job_filter.statuses:
        stmt = stmt.where(JobRow.status.in_([s.value for s in job_filter.statuses]))
    if job_filter.kind is not None:
        stmt = stmt.where(JobRow.kind == job_filter.kind.value)
    if job_filter.provider is not None:
        stmt = stmt.where(JobRow.provider == job_filter.provider)
    if job_filter.created_after is not None:
        stmt = stmt.where(JobRow.created_at >= job_filter.created_after)
    if job_filter.created_before is not None:
        stmt = stmt.where(JobRow.created_at < job_filter.created_before)
    return stmt


async def list_jobs(
    deps: Deps,
    job_filter: JobFilter,
    first: int | None,
    after: str | None,
    principal: Principal,
) -> JobPage:
    """Newest first, keyset-paginated on (created_at, id) so pages stay right under inserts."""
    problem = job_filter.problem()
    if problem is not None:
        raise problem
    limit = deps.settings.max_page_size if first is None else first
    if not 0 <= limit <= deps.settings.max_page_size:
        raise UserError(
            ErrorCode.INVALID_ARGUMENT,
            f"first must be between 0 and {deps.settings.max_page_size}",
            "first",
        )
    stmt = _filtered(select(JobRow), job_filter, principal)
    if after is not None:
        created, job_id = decode_cursor(after)
        stmt = stmt.where(tuple_(JobRow.created_at, JobRow.id) < tuple_(created, job_id))
    stmt = (
        stmt.order_by(JobRow.created_at.desc(), JobRow.id.desc())
        .limit(limit + 1)
        .options(selectinload(JobRow.outputs))
    )
    count_stmt = _filtered(select(func.count()).select_from(JobRow), job_filter, principal)
    async with deps.sessions() as session:
        rows = list((await session.execute(stmt)).scalars())
        total = (await session.execute(count_stmt)).scalar_one()
    jobs = [job_snapshot(row, row.outputs) for row in rows[:limit]]
    return JobPage(
        jobs=jobs,
        cursors=[encode_cursor(job) for job in jobs],
        has_next_page=len(rows) > limit,
        total_count=total,
    )


async def cancel_job(deps: Deps, job_id: str, principal: Principal) -> JobSnapshot:
    """QUEUED or RUNNING → CANCELED; a running worker notices at its next progress write."""
    parsed = parse_job_id(job_id)
    async with deps.sessions.begin() as session:
        row = await _load(session, parsed)
        if row is None or not principal.can_see(row.owner_id):
            raise NotFound()
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
    if updated.external_id is not None:
        await _cancel_at_provider(deps, updated.provider, updated.external_id)
    return snapshot


async def _cancel_at_provider(deps: Deps, provider_name: str, external_id: str) -> None:
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
    parsed = parse_job_id(job_id)
    now = utcnow()
    async with deps.sessions.begin() as session:
        row = await _load(session, parsed)
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


async def stale_queued_jobs(deps: Deps, older_than: timedelta, limit: int = 500) -> list[JobRow]:
    """QUEUED jobs that should have started by now: their enqueue may have been lost."""
    cutoff = utcnow() - older_than
    async with deps.sessions() as session:
        stmt = (
            select(JobRow)
            .where(JobRow.status == JobStatus.QUEUED.value, JobRow.run_after <= cutoff)
            .order_by(JobRow.run_after)
            .limit(limit)
        )
        return list((await session.execute(stmt)).scalars())
