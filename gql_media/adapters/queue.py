"""Enqueueing jobs on the arq queue and waking idle workers at once."""

from __future__ import annotations

import logging
from enum import StrEnum

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from redis.exceptions import RedisError

from gql_media import keys

log = logging.getLogger(__name__)


class Placement(StrEnum):
    """Where a job stands on the queue after ``JobQueue.ensure_queued``."""

    QUEUED = "queued"  # it was put on the queue now
    WAITING = "waiting"  # it was on the queue already
    TAKEN = "taken"  # a worker took its queue entry (and, the caller knows, never claimed it)
    UNAVAILABLE = "unavailable"  # Redis could not be reached


class JobQueue:
    """Puts job ids on the arq queue. The database stays the truth: a lost enqueue is redone
    by the reconciler, and a duplicate one is harmless because running a job claims its row."""

    def __init__(self, redis: ArqRedis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._queue = keys.queue_name(namespace)

    async def enqueue(self, job_id: str, version: int, defer: float | None = None) -> bool:
        """Queue ``job_id``; False when Redis is unreachable (the reconciler will retry)."""
        try:
            await self._redis.enqueue_job(
                keys.RUN_JOB_TASK,
                job_id,
                _job_id=keys.arq_job_id(job_id, version),
                _queue_name=self._queue,
                _defer_by=defer if defer else None,
            )
            if not defer:  # names the job: an idle worker may start it at once
                arq_id = keys.arq_job_id(job_id, version)
                await self._redis.publish(keys.wake_channel(self._namespace), arq_id)
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue job %s: %s", job_id, exc)
            return False
        return True

    async def enqueue_webhook(self, job_id: str, attempt: int, defer: float | None = None) -> bool:
        """Queue delivery ``attempt`` of a finished job's webhook; one arq job per attempt, so
        duplicate requests for the same attempt collapse. False when Redis is unreachable
        (the reconciler retries pending deliveries)."""
        try:
            await self._redis.enqueue_job(
                keys.DELIVER_WEBHOOK_TASK,
                job_id,
                attempt,
                _job_id=f"{job_id}:webhook:{attempt}",
                _queue_name=self._queue,
                _defer_by=defer if defer else None,
            )
            if not defer:
                await self._redis.publish(keys.wake_channel(self._namespace), b"1")
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue the webhook of job %s: %s", job_id, exc)
            return False
        return True

    async def ensure_queued(self, job_id: str, version: int) -> Placement:
        """Queue ``job_id`` at ``version`` unless it waits on the queue already.

        arq keeps a running job on the queue under an in-progress key that outlives a killed
        worker by the job timeout, and refuses an id it has seen. Such an entry reports
        TAKEN: the caller moves the job to a new version, which gets a new arq id.
        """
        arq_id = keys.arq_job_id(job_id, version)
        try:
            if await self._redis.zscore(self._queue, arq_id) is not None:
                if await self._redis.exists(in_progress_key_prefix + arq_id):
                    return Placement.TAKEN
                return Placement.WAITING
            job = await self._redis.enqueue_job(
                keys.RUN_JOB_TASK, job_id, _job_id=arq_id, _queue_name=self._queue
            )
            if job is None:
                return Placement.TAKEN
            await self._redis.publish(keys.wake_channel(self._namespace), b"1")
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue job %s: %s", job_id, exc)
            return Placement.UNAVAILABLE
        return Placement.QUEUED

    async def depth(self) -> int:
        """Entries on the queue: due and deferred jobs and webhook deliveries (a worker takes
        a job's entry off when it starts it)."""
        return int(await self._redis.zcard(self._queue))
