"""Announcing a job's change: its event on the events channel, and what the change owes.

Every committed transition is announced once, after its commit. A job that is QUEUED
(again) is published and put on the queue together; a finished job with a webhook URL
gets its delivery queued (see ``services.webhooks``).
"""

from __future__ import annotations

from gql_media.adapters.events import encode_event
from gql_media.domain import JobSnapshot
from gql_media.services.deps import Deps


async def announce(deps: Deps, snapshot: JobSnapshot) -> None:
    """Publish a change of a job; a finished job with a webhook URL gets its delivery queued."""
    await deps.publisher.publish(snapshot)
    if snapshot.status.terminal and snapshot.webhook_url:
        await deps.queue.enqueue_webhook(snapshot.id, 1)


async def announce_queued(deps: Deps, snapshot: JobSnapshot, defer: float | None = None) -> bool:
    """Publish the change of a job that is QUEUED (again) and put it on the queue, in one
    Redis round trip; False when Redis is unreachable (the reconciler enqueues it later)."""
    return await deps.queue.enqueue(snapshot.id, snapshot.version, defer, encode_event(snapshot))
