"""GraphQL types, converted from domain snapshots at the edge."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from gql_media import domain
from gql_media.api import enums  # noqa: F401 (the GraphQL definitions of the domain's enums)
from gql_media.api.job_details import (
    AudioVideoMetadata,
    JobParameters,
    MediaMetadata,
    av_metadata,
    metadata_of,
    parameters_of,
)
from gql_media.db.models import WebhookDeliveryRow
from gql_media.errors import ErrorCode
from gql_media.errors import UserError as DomainUserError
from gql_media.services import queue_info
from gql_media.services.jobs import JobFilter as DomainJobFilter

JobStatus = domain.JobStatus
JobKind = domain.JobKind
OutputFormat = domain.OutputFormat


def error_code(value: str) -> ErrorCode:
    """The code a job stored; one this version does not know reads as INTERNAL_ERROR."""
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL_ERROR


@strawberry.interface(
    description="An object with a stable id, which node(id:) and nodes(ids:) fetch again."
)
class Node:
    id: strawberry.ID


@strawberry.type(description="An expected problem with a request; `code` is stable.")
class UserError:
    field: str | None
    code: ErrorCode
    message: str
    retry_after: float | None = strawberry.field(
        default=None,
        description="Seconds to wait before trying again (RATE_LIMITED, TOO_MANY_ACTIVE_JOBS).",
    )

    @classmethod
    def from_domain(cls, error: DomainUserError) -> UserError:
        return cls(
            field=error.field,
            code=error.code,
            message=error.message,
            retry_after=error.retry_after,
        )


@strawberry.type(description="Why a job failed, or why its last attempt failed.")
class JobError:
    code: ErrorCode
    message: str
    retryable: bool


@strawberry.type(description="A stored media file: an upload, or an output of a job.")
class MediaAsset(Node):
    url: str
    content_type: str = strawberry.field(description="Decided from the content, not the name.")
    width: int | None
    height: int | None
    byte_size: int
    sha256: str
    name: str | None = strawberry.field(
        default=None, description="The variant or operation that made it; null for uploads."
    )
    filename: str | None = strawberry.field(
        default=None, description="An upload's file name as the client gave it."
    )
    created_at: datetime | None = None
    info: strawberry.Private[dict[str, Any] | None] = None  # as stored

    @strawberry.field(
        description="What is known of the file: an image's format and frames; a video's or "
        "audio file's duration, size, fps, codecs and more; null when nothing is."
    )
    def metadata(self) -> MediaMetadata | None:
        return metadata_of(self.info)


def asset_from_snapshot(asset: domain.AssetSnapshot, media_url: Callable[[str], str]) -> MediaAsset:
    return MediaAsset(
        id=strawberry.ID(asset.id),
        url=media_url(asset.key),
        content_type=asset.content_type,
        width=asset.width,
        height=asset.height,
        byte_size=asset.byte_size,
        sha256=asset.sha256,
        name=asset.name,
        filename=asset.filename,
        info=asset.info,
        created_at=asset.created_at,
    )


@strawberry.type(description="A unit of work: generating or processing media.")
class Job(Node):
    kind: JobKind
    status: JobStatus
    progress: float = strawberry.field(description="0 to 1.")
    version: int = strawberry.field(description="Rises with every change of the job.")
    prompt: str | None
    provider: str
    model: str | None
    attempts: int
    max_attempts: int
    error: JobError | None
    outputs: list[MediaAsset]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    webhook_url: str | None = strawberry.field(
        description="Where the job is POSTed (signed) when it ends."
    )
    priority: int = strawberry.field(description="-10 to 10; higher starts first.")
    group: str | None = strawberry.field(
        description="The fairness group inside the owner; null: the owner's default group."
    )
    deadline: datetime | None = strawberry.field(
        description="After this the job is too late to start."
    )

    # its place in line when that is known already (an update of a waiting job's place)
    estimate: strawberry.Private[queue_info.Estimate | None] = None
    # as stored: what the job was asked, and what it found out besides files
    stored_parameters: strawberry.Private[dict[str, Any]] = dataclasses.field(default_factory=dict)
    stored_result: strawberry.Private[dict[str, Any] | None] = None

    @strawberry.field(description="What the job was asked; the type follows its kind.")
    def parameters(self) -> JobParameters:
        return parameters_of(self.kind, self.stored_parameters)  # type: ignore[no-any-return]

    @strawberry.field(
        description="What the job found out besides files: videoMetadata's findings; null "
        "for other jobs."
    )
    def result(self) -> AudioVideoMetadata | None:
        return av_metadata(self.stored_result)

    @strawberry.field(
        description="While QUEUED and due to run: how many jobs start before it in the "
        "current order (0: it is next, or handed to a worker); null otherwise, and while a "
        "retry's backoff runs. Exact while no job arrives ahead of it and no cap holds a "
        "job back; a jobUpdated subscription that selects it or estimatedStartAt gets the "
        "job again as it falls, at most once a second."
    )
    async def queue_position(self, info: strawberry.Info) -> int | None:
        estimate = await self._estimate(info)
        return estimate.position if estimate is not None else None

    @strawberry.field(
        description="While QUEUED and due to run: when it may start, from its queuePosition "
        "and the rate jobs started at over the last minute; null when unknown."
    )
    async def estimated_start_at(self, info: strawberry.Info) -> datetime | None:
        estimate = await self._estimate(info)
        return estimate.start_at if estimate is not None else None

    async def _estimate(self, info: strawberry.Info) -> queue_info.Estimate | None:
        if self.status is not JobStatus.QUEUED:
            return None
        if self.estimate is not None:
            return self.estimate
        loaded: queue_info.Estimate | None = await info.context.estimates.load(str(self.id))
        return loaded

    @strawberry.field(description="Every attempt to deliver the job's webhook, oldest first.")
    async def webhook_deliveries(self, info: strawberry.Info) -> list[WebhookDelivery]:
        rows: list[WebhookDeliveryRow] = await info.context.deliveries.load(str(self.id))
        return [delivery_from_row(row) for row in rows]


@strawberry.type(description="One attempt to deliver a job's webhook.")
class WebhookDelivery(Node):
    webhook_id: str = strawberry.field(description="The same for every attempt of a delivery.")
    event: str = strawberry.field(description="job.succeeded, job.failed or job.canceled.")
    attempt: int
    url: str
    status_code: int | None = strawberry.field(description="The receiver's HTTP status.")
    error: str | None
    duration_ms: float
    succeeded: bool
    at: datetime


def delivery_from_row(row: WebhookDeliveryRow) -> WebhookDelivery:
    return WebhookDelivery(
        id=strawberry.ID(domain.encode_id(domain.WEBHOOK_DELIVERY_ID_PREFIX, row.id)),
        webhook_id=row.webhook_id,
        event=row.event,
        attempt=row.attempt,
        url=row.url,
        status_code=row.status_code,
        error=row.error,
        duration_ms=row.duration_ms,
        succeeded=row.succeeded,
        at=row.created_at,
    )


def job_error(error: domain.JobError) -> JobError:
    return JobError(code=error_code(error.code), message=error.message, retryable=error.retryable)


def job_from_snapshot(snapshot: domain.JobSnapshot, media_url: Callable[[str], str]) -> Job:
    return Job(
        id=strawberry.ID(snapshot.id),
        kind=snapshot.kind,
        status=snapshot.status,
        progress=snapshot.progress,
        version=snapshot.version,
        prompt=snapshot.prompt,
        provider=snapshot.provider,
        model=snapshot.model,
        stored_parameters=snapshot.parameters,
        attempts=snapshot.attempts,
        max_attempts=snapshot.max_attempts,
        error=job_error(snapshot.error) if snapshot.error else None,
        outputs=[asset_from_snapshot(a, media_url) for a in snapshot.outputs],
        stored_result=snapshot.result,
        created_at=snapshot.created_at,
        started_at=snapshot.started_at,
        finished_at=snapshot.finished_at,
        updated_at=snapshot.updated_at,
        webhook_url=snapshot.webhook_url,
        priority=snapshot.priority,
        group=snapshot.group,
        deadline=snapshot.deadline,
        estimate=snapshot.estimate if isinstance(snapshot, queue_info.PlacedSnapshot) else None,
    )


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class JobEdge:
    cursor: str
    node: Job


@strawberry.type(description="A page of jobs, newest first.")
class JobConnection:
    edges: list[JobEdge]
    page_info: PageInfo
    total_count: int


@strawberry.input(description="Which jobs to list or follow; all given conditions must hold.")
class JobFilter:
    status: list[JobStatus] | None = None
    kind: JobKind | None = None
    provider: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def to_domain(self) -> DomainJobFilter:
        return DomainJobFilter(
            statuses=tuple(self.status or ()),
            kind=self.kind,
            provider=self.provider,
            created_after=self.created_after,
            created_before=self.created_before,
        )


def priority_field() -> Any:
    return strawberry.field(
        default=0,
        description=f"{domain.MIN_PRIORITY} to {domain.MAX_PRIORITY}; higher starts first. "
        "Above the API key's max priority: PRIORITY_NOT_ALLOWED.",
    )


def group_field() -> Any:
    return strawberry.field(
        default=None,
        description=f"A fairness group inside the owner (1 to {domain.MAX_GROUP_LENGTH} "
        "characters), e.g. the calling app's end-user id; null: the owner's default group.",
    )


def deadline_field() -> Any:
    return strawberry.field(
        default=None,
        description="When the job is too late to start; in the future, with a time zone.",
    )


def scheduling(data: Any) -> domain.Scheduling:
    """What an input with the scheduling fields asks of the scheduler."""
    return domain.Scheduling(priority=data.priority, group=data.group, deadline=data.deadline)


@strawberry.input(description="What to generate.")
class GenerateImageInput:
    prompt: str
    negative_prompt: str | None = None
    provider: str | None = strawberry.field(
        default=None, description="Provider name; the server's default when omitted."
    )
    model: str | None = None
    width: int = 512
    height: int = 512
    num_outputs: int = strawberry.field(default=1, description="1 to 4.")
    seed: int | None = strawberry.field(
        default=None, description="0 to 2147483647; random when omitted."
    )
    output_format: OutputFormat = domain.OutputFormat.PNG
    extra: JSON | None = strawberry.field(
        default=None,
        description="Provider-specific options added to the provider's request; a key that "
        "the other fields set is refused.",
    )
    idempotency_key: str | None = strawberry.field(
        default=None, description="Repeating a request with the same key returns the same job."
    )
    webhook_url: str | None = strawberry.field(
        default=None, description="POST the job here, signed, when it ends."
    )
    priority: int = priority_field()
    group: str | None = group_field()
    deadline: datetime | None = deadline_field()


@strawberry.type
class GenerateImagePayload:
    job: Job | None
    user_errors: list[UserError]


@strawberry.type(description="Jobs submitted together: all of them, or none.")
class GenerateImagesPayload:
    jobs: list[Job] = strawberry.field(
        description="The jobs in the order of the inputs; empty when refused."
    )
    user_errors: list[UserError] = strawberry.field(
        description="Each input's problems, named inputs.<index>.<field>."
    )


@strawberry.type
class JobPayload:
    job: Job | None
    user_errors: list[UserError]
