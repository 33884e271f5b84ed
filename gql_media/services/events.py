"""Announcing a job's change: its event on the events channel, and what the change owes.

Every committed transition is announced once, after its commit. A job that is QUEUED
(again) is published and put on the queue together; a finished job with a webhook URL
gets its delivery queued (see ``services.webhooks``).

A worker ends a run with one script that frees the run's slot (``JobQueue.finished``); the
run's last change, when it finishes the job, is published by that script instead of in a
round trip of its own, sent as that change commits (``run_ending``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from gql_media.adapters.events import encode_event
from gql_media.adapters.scheduling import Waiting
from gql_media.domain import JobSnapshot
from gql_media.services.deps import Deps

# sends a finished job's change with the release of the run's slot: True when it went out
LastChange = Callable[[bytes], Awaitable[bool]]

# the run ending in this context, while ``run_ending`` holds: the list of its last changes,
# and what sends one
_last_change: ContextVar[tuple[list[bytes], LastChange | None] | None] = ContextVar(
    "gql_media_last_change", default=None
)


@contextmanager
def run_ending(send: LastChange | None = None) -> Iterator[list[bytes]]:
    """Inside the block (a worker's run of one job, and the tasks it starts) a change that
    finishes the job is not published by ``announce`` on its own: ``send`` (the release of
    the run's slot) takes it as it commits, in that round trip; without ``send`` it is
    added to the list, for the caller to publish as the run ends. A change ``send`` does
    not take (the run's slot was released already, or Redis could not be reached) is
    published as usual. Everything else ``announce`` does happens as usual."""
    last: list[bytes] = []
    token = _last_change.set((last, send))
    try:
        yield last
    finally:
        _last_change.reset(token)


async def announce(deps: Deps, snapshot: JobSnapshot) -> None:
    """Publish a change of a job; a finished job with a webhook URL gets its delivery queued."""
    ending = _last_change.get() if snapshot.status.terminal else None
    if ending is None:
        await deps.publisher.publish(snapshot)
    else:
        last, send = ending
        event = encode_event(snapshot)
        if send is None:
            last.append(event)
        elif not await send(event):
            await deps.publisher.publish(snapshot)
    if snapshot.status.terminal and snapshot.webhook_url:
        await deps.queue.enqueue_webhook(snapshot.id, 1)


async def announce_queued(
    deps: Deps,
    snapshot: JobSnapshot,
    defer: float | None = None,
    *,
    max_running: int | None = None,
) -> bool:
    """Publish the change of a job that is QUEUED (again) and schedule it; False when Redis
    is unreachable (the reconciler schedules it later). ``max_running``: the owner's cap as
    its key says now (0: none), when the caller knows it."""
    return await deps.queue.enqueue(
        waiting(snapshot, defer, max_running=max_running), encode_event(snapshot)
    )


async def announce_all_queued(
    deps: Deps, snapshots: Sequence[JobSnapshot], *, max_running: int | None = None
) -> bool:
    """``announce_queued`` of new jobs together: scheduled in this order, in one round
    trip."""
    return await deps.queue.enqueue_all(
        [(waiting(s, max_running=max_running), encode_event(s)) for s in snapshots]
    )


def waiting(
    snapshot: JobSnapshot, defer: float | None = None, *, max_running: int | None = None
) -> Waiting:
    """What the scheduler orders ``snapshot`` by."""
    return Waiting(
        snapshot.id,
        snapshot.version,
        snapshot.priority,
        snapshot.owner,
        snapshot.group,
        due_at=time.time() + defer if defer else 0.0,
        max_running=max_running,
    )
