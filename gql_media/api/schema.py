"""Query, Mutation and Subscription: resolvers translate and delegate to services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

import strawberry
from graphql import ASTValidationRule, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.file_uploads import Upload
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from gql_media.api.errors import Classifier, graphql_error, log_errors
from gql_media.api.info_types import Provider, ProviderModel, Queue, queue_from_summary
from gql_media.api.media_types import (
    ProcessImageInput,
    ProcessVideoInput,
    UploadMediaPayload,
    to_json,
)
from gql_media.api.nodes import NODE, NODES
from gql_media.api.patches import enabled, strawberry_inputs
from gql_media.api.patches.shared_results import QuietExecution, SharedEventExecution
from gql_media.api.patches.strawberry_results import LightEventResults
from gql_media.api.patches.strawberry_validation import CachedValidation
from gql_media.api.security import DocumentCache, DocumentChecks, NoIntrospection, bounds_rule
from gql_media.api.subscriptions import FilterArgument, IdArgument, Info, Subscription
from gql_media.api.types import (
    GenerateImageInput,
    GenerateImagePayload,
    GenerateImagesPayload,
    Job,
    JobConnection,
    JobEdge,
    JobPayload,
    MediaAsset,
    PageInfo,
    UserError,
    asset_from_snapshot,
    job_from_snapshot,
    scheduling,
)
from gql_media.api.watch import WatchTokenMutations
from gql_media.domain import JobSnapshot, Principal
from gql_media.errors import InvalidInput
from gql_media.errors import UserError as DomainUserError
from gql_media.services import control, limits, processing, queue_info
from gql_media.services import jobs as job_service
from gql_media.services import media as media_service
from gql_media.services.deps import Deps
from gql_media.services.media import JobOptions
from gql_media.settings import Settings

InputArgument = Annotated[GenerateImageInput, strawberry.argument(name="input")]
ProcessImageArgument = Annotated[ProcessImageInput, strawberry.argument(name="input")]
ProcessVideoArgument = Annotated[ProcessVideoInput, strawberry.argument(name="input")]


async def _chunks(file: Any) -> AsyncIterator[bytes]:
    while chunk := await file.read(1 << 20):
        yield chunk


def _job(info: Info, snapshot: JobSnapshot) -> Job:
    return job_from_snapshot(snapshot, info.context.media_url)


def _user_errors(error: DomainUserError | InvalidInput) -> list[UserError]:
    errors = error.errors if isinstance(error, InvalidInput) else [error]
    return [UserError.from_domain(e) for e in errors]


def _new_image_job(data: GenerateImageInput) -> job_service.NewImageJob:
    return job_service.NewImageJob(
        prompt=data.prompt,
        negative_prompt=data.negative_prompt,
        provider=data.provider,
        model=data.model,
        width=data.width,
        height=data.height,
        num_outputs=data.num_outputs,
        seed=data.seed,
        output_format=data.output_format,
        extra={} if data.extra is None else data.extra,
        idempotency_key=data.idempotency_key,
        webhook_url=data.webhook_url,
        scheduling=scheduling(data),
    )


def _job_options(data: ProcessImageInput | ProcessVideoInput) -> JobOptions:
    return JobOptions(
        idempotency_key=data.idempotency_key,
        webhook_url=data.webhook_url,
        scheduling=scheduling(data),
    )


P = TypeVar("P")


async def _job_mutation(
    info: Info,
    payload: Callable[..., P],
    act: Callable[[Deps, Principal], Awaitable[JobSnapshot]],
) -> P:
    """A mutation that makes or changes a job: the key's rate limit first, then ``act``;
    expected problems become the payload's userErrors."""
    ctx = info.context
    try:
        await limits.admit(ctx.deps, ctx.principal)
        snapshot = await act(ctx.deps, ctx.principal)
    except (DomainUserError, InvalidInput) as exc:
        return payload(job=None, user_errors=_user_errors(exc))
    return payload(job=_job(info, snapshot), user_errors=[])


@strawberry.type
class Query:
    node = NODE
    nodes = NODES

    @strawberry.field(description="A job by id; null when the id is unknown or malformed.")
    async def job(self, info: Info, job_id: IdArgument) -> Job | None:
        snapshot = await job_service.get_job(info.context.deps, job_id, info.context.principal)
        return _job(info, snapshot) if snapshot is not None else None

    @strawberry.field(description="The image providers, their models and their limits.")
    def providers(self, info: Info) -> list[Provider]:
        deps = info.context.deps
        return [
            Provider(
                name=p.name,
                configured=p.configured,
                default_model=p.default_model,
                models=[
                    ProviderModel(
                        name=m.name,
                        description=m.description,
                        max_outputs=m.max_outputs,
                        sizes=list(m.sizes),
                    )
                    for m in p.models
                ],
                is_default=p.name == deps.settings.default_provider,
            )
            for p in job_service.describe_providers(deps, info.context.principal)
        ]

    @strawberry.field(
        description="Jobs waiting and running per priority, and the longest wait: every job "
        "for an admin key, the caller's own otherwise."
    )
    async def queue(self, info: Info) -> Queue:
        summary = await queue_info.summary(info.context.deps, info.context.principal)
        return queue_from_summary(summary)

    @strawberry.field(description="An uploaded file by id; null when unknown or malformed.")
    async def media(self, info: Info, media_id: IdArgument) -> MediaAsset | None:
        asset = await media_service.get_upload(info.context.deps, media_id, info.context.principal)
        return asset_from_snapshot(asset, info.context.media_url) if asset else None

    @strawberry.field(description="Jobs, newest first, cursor-paginated.")
    async def jobs(
        self,
        info: Info,
        job_filter: FilterArgument = None,
        first: int | None = None,
        after: str | None = None,
    ) -> JobConnection:
        domain_filter = job_filter.to_domain() if job_filter else job_service.JobFilter()
        try:
            page = await job_service.list_jobs(
                info.context.deps, domain_filter, first, after, info.context.principal
            )
        except DomainUserError as exc:
            raise graphql_error(exc.code, exc.message) from exc
        edges = [
            JobEdge(cursor=cursor, node=_job(info, snapshot))
            for cursor, snapshot in zip(page.cursors, page.jobs, strict=True)
        ]
        return JobConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=after is not None,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.cursors[-1] if page.cursors else None,
            ),
            total_count=page.total_count,
        )


@strawberry.type
class Mutation(WatchTokenMutations):
    @strawberry.mutation(description="Queue an image generation job.")
    async def generate_image(self, info: Info, data: InputArgument) -> GenerateImagePayload:
        new_job = _new_image_job(data)
        return await _job_mutation(
            info,
            GenerateImagePayload,
            lambda deps, principal: job_service.create_image_job(deps, new_job, principal),
        )

    @strawberry.mutation(
        description="Queue several image generation jobs at once: all of them, or none "
        "(then userErrors say why, each input's named inputs.<index>.<field>)."
    )
    async def generate_images(
        self, info: Info, inputs: list[GenerateImageInput]
    ) -> GenerateImagesPayload:
        ctx = info.context
        new_jobs = [_new_image_job(data) for data in inputs]
        try:
            await limits.admit(ctx.deps, ctx.principal)
            snapshots = await job_service.create_image_jobs(ctx.deps, new_jobs, ctx.principal)
        except (DomainUserError, InvalidInput) as exc:
            return GenerateImagesPayload(jobs=[], user_errors=_user_errors(exc))
        return GenerateImagesPayload(jobs=[_job(info, s) for s in snapshots], user_errors=[])

    @strawberry.mutation(
        description="Upload a file (GraphQL multipart request; send the header "
        "GraphQL-Require-Preflight: 1). Large files: POST /uploads."
    )
    async def upload_media(self, info: Info, file: Upload) -> UploadMediaPayload:
        deps = info.context.deps
        try:
            await limits.admit(deps, info.context.principal)
            staged = await media_service.receive(deps, _chunks(file), info.context.principal)
            asset = await media_service.store_upload(
                deps, staged, getattr(file, "filename", None), info.context.principal
            )
        except DomainUserError as exc:
            return UploadMediaPayload(media=None, user_errors=_user_errors(exc))
        return UploadMediaPayload(
            media=asset_from_snapshot(asset, info.context.media_url), user_errors=[]
        )

    @strawberry.mutation(description="Queue a job making named image variants of an upload.")
    async def process_image(self, info: Info, data: ProcessImageArgument) -> JobPayload:
        return await _job_mutation(
            info,
            JobPayload,
            lambda deps, principal: processing.create_process_image_job(
                deps,
                str(data.media_id),
                to_json(data.variants),
                principal,
                _job_options(data),
            ),
        )

    @strawberry.mutation(
        description="Queue a job of video/audio operations on an upload: thumbnails, "
        "metadata, transcodes, audio."
    )
    async def process_video(self, info: Info, data: ProcessVideoArgument) -> JobPayload:
        return await _job_mutation(
            info,
            JobPayload,
            lambda deps, principal: processing.create_process_video_job(
                deps,
                str(data.media_id),
                to_json(data.operations),
                principal,
                _job_options(data),
            ),
        )

    @strawberry.mutation(description="Cancel a QUEUED or RUNNING job.")
    async def cancel_job(self, info: Info, job_id: IdArgument) -> JobPayload:
        return await _job_mutation(
            info,
            JobPayload,
            lambda deps, principal: control.cancel_job(deps, job_id, principal),
        )

    @strawberry.mutation(description="Queue a FAILED or CANCELED job again.")
    async def retry_job(self, info: Info, job_id: IdArgument) -> JobPayload:
        return await _job_mutation(
            info,
            JobPayload,
            lambda deps, principal: control.retry_job(deps, job_id, principal),
        )


def document_checks(settings: Settings, cache: DocumentCache) -> Callable[[], SchemaExtension]:
    """The extension every document goes through, with every validation rule of ours built
    once: the same rule classes on every request let the validation cache hit (strawberry's
    limiters make a new class per instance)."""
    rules: list[type[ASTValidationRule]] = [bounds_rule(settings)]
    hidden = not settings.introspection_enabled
    if hidden:
        rules.append(NoIntrospection)
    checks = CachedValidation if enabled(settings, "strawberry_validation") else DocumentChecks
    return lambda: checks(settings.max_tokens, tuple(rules), hidden, cache)


class MediaSchema(strawberry.Schema):
    """Strawberry's schema, handing on every error with a code (and masked outside debug).
    Strawberry passes every list of errors it returns through ``process_errors`` (its
    public hook for them) before the result goes out, the result's own list, so they are
    classified there, in place; ``tests/test_patches.py`` checks it does, on every path."""

    def __init__(
        self, *args: Any, documents: DocumentCache, classifier: Classifier, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.documents = documents  # parsed and validated, shared by every operation
        self.classifier = classifier

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Give the errors their codes; strawberry logs every error at ERROR, only the
        unexpected ones are logged so here (with their traceback), a request's own
        mistakes and limits at DEBUG."""
        unexpected = log_errors(errors)
        errors[:] = [self.classifier.classify(error) for error in errors]
        super().process_errors(unexpected, execution_context)


class FastMediaSchema(LightEventResults, MediaSchema):
    """``MediaSchema`` lighter on subscription events (the ``strawberry_results`` patch)."""


def executor(settings: Settings) -> type[Any] | None:
    """The executor class: sharing subscription results (``shared_results``), or
    strawberry's own (None) with the patch off."""
    if not enabled(settings, "shared_results"):
        return None
    return SharedEventExecution if settings.introspection_enabled else QuietExecution


def build_schema(settings: Settings) -> MediaSchema:
    documents = DocumentCache(settings.document_cache_bytes)
    execution_class = executor(settings)
    hidden = not settings.introspection_enabled
    schema_class = FastMediaSchema if enabled(settings, "strawberry_results") else MediaSchema
    schema = schema_class(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(),
        execution_context_class=execution_class,
        extensions=[document_checks(settings, documents)],
        documents=documents,
        classifier=Classifier(
            debug=settings.debug,
            max_tokens=settings.max_tokens,
            # what graphql-core would hint at, cut from messages where no patch of ours
            # asked it not to hint
            cut_hints=hidden
            and not (execution_class and enabled(settings, "strawberry_validation")),
        ),
    )
    if enabled(settings, "strawberry_inputs"):
        strawberry_inputs.install(schema)
    else:
        strawberry_inputs.uninstall(schema)
    return schema
