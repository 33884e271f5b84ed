"""The subscriptions: ``jobUpdated`` (one job, with its place in line while it waits) and
``jobEvents`` (every change of the jobs a filter matches)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types.nodes import SelectedField, Selection

from gql_media.adapters.events import Resync, Subscriber
from gql_media.api import fanout
from gql_media.api.context import Context
from gql_media.api.errors import graphql_error
from gql_media.api.patches import direct_events
from gql_media.api.types import Job, JobFilter, job_from_snapshot
from gql_media.domain import JobSnapshot, JobStatus
from gql_media.errors import ErrorCode, UserError
from gql_media.services import jobs as job_service
from gql_media.services import replay
from gql_media.services.queue_info import PlacedSnapshot

Info = strawberry.Info[Context, None]
IdArgument = Annotated[strawberry.ID, strawberry.argument(name="id")]
FilterArgument = Annotated[JobFilter | None, strawberry.argument(name="filter")]
SinceArgument = Annotated[
    datetime | None,
    strawberry.argument(
        description="Resume from here: the updatedAt of the last event seen, with a time "
        "zone. Too far back: SINCE_TOO_OLD; in the future: INVALID_ARGUMENT."
    ),
]


def _shared_job(info: Info, snapshot: JobSnapshot) -> Job:
    """See ``fanout.shared_job``: the event's result is rendered once for all."""
    return fanout.shared_job(info.context, snapshot)


def _direct(info: Info, subscriber: Subscriber, sent: dict[str, int], terminal_too: bool) -> None:
    """Let the subscription's events be written straight to its socket where they can be
    (``api.patches.direct_events``); ``sent`` is the record of versions sent that both ways
    keep."""
    target = direct_events.direct_target()
    if target is not None:
        subscriber.direct = direct_events.DirectEvents(
            target, subscriber, info.context, sent, terminal_too
        )


# the fields of a Job that its place in line changes
PLACE_FIELDS = frozenset({"queuePosition", "estimatedStartAt"})


def asks_for_place(selections: Sequence[Selection]) -> bool:
    """Whether a selection, its fragments included, asks for a field the job's place in
    line changes: only then is the job sent again as its place falls (otherwise the client
    would receive the same result again)."""
    return any(
        (isinstance(selection, SelectedField) and selection.name in PLACE_FIELDS)
        or asks_for_place(selection.selections)
        for selection in selections
    )


def _job(info: Info, snapshot: JobSnapshot) -> Job:
    return job_from_snapshot(snapshot, info.context.media_url)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The job now, then every change; completes after a terminal state."
    )
    async def job_updated(self, info: Info, job_id: IdArgument) -> AsyncGenerator[Job, None]:
        ctx = info.context
        subscriber = ctx.hub.subscribe(job_id)  # listen first: no change is lost
        sent: dict[str, int] = {}  # the version sent, here or directly
        try:
            snapshot = await job_service.get_job(ctx.deps, job_id, ctx.principal)
            if snapshot is None:
                raise graphql_error(ErrorCode.NOT_FOUND, "job not found")
            fanout.remember(sent, snapshot)
            # a waiting job's place is its own now, not shared with later subscribers
            queued = snapshot.status is JobStatus.QUEUED
            yield _job(info, snapshot) if queued else _shared_job(info, snapshot)
            # later changes may go out directly; the terminal one comes here, to end
            _direct(info, subscriber, sent, terminal_too=False)
            if not snapshot.status.terminal and asks_for_place(info.selected_fields):
                ctx.positions.follow(subscriber, job_id)  # its place in line as it falls
            while not snapshot.status.terminal:
                item = await subscriber.get()
                if isinstance(item, Resync):
                    fresh = await job_service.get_job(ctx.deps, job_id, ctx.principal)
                    if fresh is None:
                        return
                    item = fresh
                placed = isinstance(item, PlacedSnapshot) and item.version == sent[job_id]
                if item.version > sent[job_id] or placed:
                    snapshot = item
                    fanout.remember(sent, snapshot)
                    yield _shared_job(info, snapshot)
        finally:
            ctx.positions.forget(subscriber)
            ctx.hub.unsubscribe(job_id, subscriber)

    @strawberry.subscription(
        description="Every change of every job matching the filter. With since, first the "
        "jobs changed at or after that moment, each once at its current version, oldest "
        "change first, then every change from there on, none lost or sent twice."
    )
    async def job_events(
        self, info: Info, job_filter: FilterArgument = None, since: SinceArgument = None
    ) -> AsyncGenerator[Job, None]:
        ctx = info.context
        domain_filter = job_filter.to_domain() if job_filter else job_service.JobFilter()
        principal = ctx.principal
        try:
            wanted = job_service.events_filter(domain_filter, principal)
        except UserError as problem:
            raise graphql_error(problem.code, problem.message) from problem

        # subscribers with the same principal and filter want the same events
        subscriber = ctx.hub.subscribe(None, wanted, alike=(principal, domain_filter))
        seen: dict[str, int] = {}  # versions sent, here or directly
        try:
            if since is not None:  # listening already: what changes meanwhile waits
                settings = ctx.deps.settings
                subscriber.resize(max(settings.subscriber_queue_size, settings.resume_max_jobs))
                replayed = replay.changes_since(ctx.deps, domain_filter, since, principal)
                async with aclosing(replayed):
                    async for snapshot in replayed:
                        if snapshot.version > seen.get(snapshot.id, 0):
                            fanout.remember(seen, snapshot)
                            yield _shared_job(info, snapshot)
                subscriber.resize(settings.subscriber_queue_size)
            _direct(info, subscriber, seen, terminal_too=True)
            while True:
                item = await subscriber.get()
                if isinstance(item, Resync):
                    candidates = await _active_jobs(info, domain_filter, wanted)
                else:
                    candidates = [item]
                for snapshot in candidates:
                    if snapshot.version > seen.get(snapshot.id, 0):
                        fanout.remember(seen, snapshot)
                        yield _shared_job(info, snapshot)
        except UserError as exc:
            raise graphql_error(exc.code, exc.message) from exc
        finally:
            ctx.hub.unsubscribe(None, subscriber)


async def _active_jobs(
    info: Info, job_filter: job_service.JobFilter, wanted: Callable[[JobSnapshot], bool]
) -> list[JobSnapshot]:
    """After events may have been lost: the unfinished jobs the subscription wants now."""
    active = job_service.JobFilter(
        statuses=(JobStatus.QUEUED, JobStatus.RUNNING),
        kind=job_filter.kind,
        provider=job_filter.provider,
    )
    ctx = info.context
    page = await job_service.list_jobs(ctx.deps, active, None, None, ctx.principal)
    return [job for job in page.jobs if wanted(job)]
