"""The objects subscription events are made of, one per job version for all subscribers.

Subscription resolvers yield the event objects from ``SharedJobs``, so equal events are the
same object: the ``shared_results`` patch renders an event's result once for everyone asking
the same, keyed by that object, and ``direct_events`` writes it straight to the sockets
(both in ``api.patches``). ``remember`` is the record of versions sent that a subscription's
own path and its direct writes share.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from gql_media.api.types import Job, job_from_snapshot
from gql_media.domain import JobSnapshot
from gql_media.services.queue_info import PlacedSnapshot

if TYPE_CHECKING:
    from gql_media.api.context import Context

JOBS_KEPT = 4096


def shared_job(context: Context, snapshot: JobSnapshot) -> Job:
    """The ``Job`` of a subscription event: one object per job version for every subscriber,
    so the event's result can be rendered once."""
    return context.shared_jobs.get(
        snapshot,
        context.media_base_url,
        lambda: job_from_snapshot(snapshot, context.media_url),
    )


K = TypeVar("K")
V = TypeVar("V")


def keep(cache: OrderedDict[K, V], key: K, value: V, limit: int) -> V:
    """Put ``value`` in ``cache``, dropping the oldest entry beyond ``limit``; returns it."""
    cache[key] = value
    if len(cache) > limit:
        cache.popitem(last=False)
    return value


class SharedJobs:
    """One ``Job`` per (job, version, media base URL, place in line) for the subscriptions
    of a process."""

    def __init__(self, limit: int = JOBS_KEPT) -> None:
        self._jobs: OrderedDict[tuple[str, int, str, int | None], Job] = OrderedDict()
        self._limit = limit

    def get(self, snapshot: JobSnapshot, base_url: str, make: Callable[[], Job]) -> Job:
        estimate = snapshot.estimate if isinstance(snapshot, PlacedSnapshot) else None
        position = estimate.position if estimate is not None else None
        key = (snapshot.id, snapshot.version, base_url, position)
        job = self._jobs.get(key)
        if job is None:
            job = keep(self._jobs, key, make(), self._limit)
        return job


def remember(seen: dict[str, int], snapshot: JobSnapshot) -> None:
    """Record ``snapshot`` as sent (bounded: a long-lived dashboard sees many jobs)."""
    if len(seen) > 10_000:
        seen.clear()
    seen[snapshot.id] = snapshot.version
