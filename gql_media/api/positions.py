"""Queue positions sent as they fall: the QUEUED jobs followed over ``jobUpdated`` in this
process are looked up together every ``GQL_MEDIA_QUEUE_POSITION_INTERVAL`` seconds, and a
job whose place in line changed is sent again to its followers with its new place.

One round trip to Redis per interval for the followed jobs (at most
``GQL_MEDIA_QUEUE_POSITION_BATCH`` of them per interval, in turns, when more are followed)
and, when some place changed, one query for those jobs; nothing when nobody follows a job.
"""

from __future__ import annotations

import asyncio
import logging

from gql_media.adapters.events import Subscriber
from gql_media.services import queue_info
from gql_media.services.deps import Deps

log = logging.getLogger(__name__)


class QueuePositions:
    """The followed jobs of this process and the place each follower was last sent."""

    def __init__(self, deps: Deps, interval: float, batch: int = 1000) -> None:
        self._deps = deps
        self._interval = interval
        self._batch = batch
        self._turn = 0  # where the next pass starts among the followed jobs
        self._followers: dict[Subscriber, str] = {}  # → the job it follows
        self._sent: dict[Subscriber, int | None] = {}  # → the position it was last sent

    def follow(self, subscriber: Subscriber, job_id: str) -> None:
        self._followers[subscriber] = job_id

    def forget(self, subscriber: Subscriber) -> None:
        self._followers.pop(subscriber, None)
        self._sent.pop(subscriber, None)

    async def run(self) -> None:
        """Look up and send the positions every interval, until canceled."""
        while True:
            await asyncio.sleep(self._interval)
            if self._followers:
                try:
                    await self.tick()
                except Exception:  # one bad pass must not end the updates
                    log.exception("could not update queue positions")

    async def tick(self) -> None:
        """Send each follower its job's place when it changed since it was last sent."""
        jobs = sorted(set(self._followers.values()))
        start = self._turn % len(jobs)
        chosen = set((jobs[start:] + jobs[:start])[: self._batch])
        self._turn = start + len(chosen)
        followers = {s: j for s, j in self._followers.items() if j in chosen}
        placed = {s.id: s for s in await queue_info.placed(self._deps, sorted(chosen))}
        for subscriber, job_id in followers.items():
            snapshot = placed.get(job_id)
            position = snapshot.estimate.position if snapshot and snapshot.estimate else None
            if subscriber not in self._followers or self._sent.get(subscriber) == position:
                continue
            self._sent[subscriber] = position
            if snapshot is not None:
                subscriber.enqueue(snapshot)
