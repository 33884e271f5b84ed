"""Job use cases for the api: create, read and list (cancel and retry: ``services.control``)."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
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
    Scheduling,
    decode_id,
)
from gql_media.errors import (
    ErrorCode,
    InvalidInput,
    UserError,
)
from gql_media.services.cursors import decode_cursor, encode_cursor
from gql_media.services.deps import Deps
from gql_media.services.input_limits import json_problem, text_problem
from gql_media.services.job_validation import (
    MAX_PROVIDER_NAME,
    MAX_SEED,
    common_problems,
    negative_prompt_problem,
    prompt_problem,
    scheduling_problems,
)
from gql_media.services.new_jobs import JobDraft, in_utc, insert_job, insert_jobs
from gql_media.services.snapshots import job_snapshot
from gql_media.settings import Settings

log = logging.getLogger(__name__)


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
    scheduling: Scheduling = field(default_factory=Scheduling)


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


def validate_new_job(
    s: Settings, job: NewImageJob, providers: set[str], principal: Principal
) -> list[UserError]:
    """Every problem with ``job``; an empty list means ``principal`` may queue it."""
    found = [
        prompt_problem(s, job.prompt),
        negative_prompt_problem(s, job.negative_prompt),
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
    errors.extend(scheduling_problems(job.scheduling, principal, utcnow()))
    return errors


def _request_hash(job: NewImageJob) -> str:
    data = asdict(job)
    data.pop("idempotency_key")
    data.pop("scheduling")
    data.update(job.scheduling.digest_fields())
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


async def load_job(session: AsyncSession, job_id: uuid.UUID) -> JobRow | None:
    stmt = select(JobRow).where(JobRow.id == job_id).options(selectinload(JobRow.outputs))
    return (await session.execute(stmt)).scalar_one_or_none()


def describe_providers(deps: Deps, principal: Principal) -> list[ProviderInfo]:
    """Every provider this process knows, configured or not, by name (not for a watch
    token, which only follows its job)."""
    principal.require_full("list providers")
    return [deps.providers[name].describe() for name in sorted(deps.providers)]


def image_job_draft(deps: Deps, job: NewImageJob, principal: Principal) -> JobDraft:
    """The job a generateImage request makes; InvalidInput lists every problem with it."""
    errors = validate_new_job(deps.settings, job, set(deps.providers), principal)
    if not errors:
        provider = deps.providers[job.provider or deps.settings.default_provider]
        errors = provider.validate(_provider_request(job))
    if errors:
        raise InvalidInput(errors)
    return JobDraft(
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
        webhook_url=job.webhook_url,
        scheduling=in_utc(job.scheduling),
    )


async def create_image_job(deps: Deps, job: NewImageJob, principal: Principal) -> JobSnapshot:
    """Validate, insert and enqueue a generateImage job; an idempotency key replays its job."""
    principal.require_full("create jobs")
    return await insert_job(deps, image_job_draft(deps, job, principal), principal)


async def create_image_jobs(
    deps: Deps, jobs: Sequence[NewImageJob], principal: Principal
) -> list[JobSnapshot]:
    """generateImages: validate every request, then queue them all or none (see
    ``insert_jobs``); problems are named ``inputs.<index>.<field>``, a list longer than
    ``max_batch`` is BATCH_TOO_LARGE."""
    principal.require_full("create jobs")
    limit = deps.settings.max_batch
    if len(jobs) > limit:
        raise UserError(
            ErrorCode.BATCH_TOO_LARGE,
            f"{len(jobs)} inputs; at most {limit} jobs may be submitted at once",
            "inputs",
        )
    drafts: list[JobDraft] = []
    errors: list[UserError] = []
    for index, job in enumerate(jobs):
        try:
            drafts.append(image_job_draft(deps, job, principal))
        except InvalidInput as exc:
            errors.extend(error.within(f"inputs.{index}") for error in exc.errors)
    if errors:
        raise InvalidInput(errors)
    return await insert_jobs(deps, drafts, principal)


async def get_job(deps: Deps, job_id: str, principal: Principal) -> JobSnapshot | None:
    """The job, or None for an unknown or malformed id, or another owner's job."""
    parsed = decode_id(JOB_ID_PREFIX, job_id)
    if parsed is None:
        return None
    async with deps.sessions() as session:
        row = await load_job(session, parsed)
        if row is None or not principal.sees_job(row.owner_id, row.id):
            return None
        return job_snapshot(row, row.outputs)


def filtered(stmt: Select[Any], job_filter: JobFilter, principal: Principal) -> Select[Any]:
    """``stmt`` narrowed to the jobs ``principal`` may see that ``job_filter`` matches."""
    principal.require_full("list jobs")
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
    principal.require_full("list jobs")
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
    stmt = filtered(select(JobRow), job_filter, principal)
    if after is not None:
        created, job_id = decode_cursor(after)
        stmt = stmt.where(tuple_(JobRow.created_at, JobRow.id) < tuple_(created, job_id))
    stmt = (
        stmt.order_by(JobRow.created_at.desc(), JobRow.id.desc())
        .limit(limit + 1)
        .options(selectinload(JobRow.outputs))
    )
    count_stmt = filtered(select(func.count()).select_from(JobRow), job_filter, principal)
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


def events_filter(job_filter: JobFilter, principal: Principal) -> Callable[[JobSnapshot], bool]:
    """Which job events ``principal`` is given for ``job_filter`` (jobEvents); a bad filter
    raises its problem, a watch token's principal FORBIDDEN."""
    principal.require_full("follow many jobs")
    problem = job_filter.problem()
    if problem is not None:
        raise problem

    def wanted(job: JobSnapshot) -> bool:
        return principal.can_see(job.owner) and job_filter.matches(job)

    return wanted
