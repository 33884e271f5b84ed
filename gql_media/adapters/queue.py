"""Enqueueing jobs on the arq queue and waking idle workers at once."""

from __future__ import annotations

import logging

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from gql_media import keys

log = logging.getLogger(__name__)


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
            if not defer:
                await self._redis.publish(keys.wake_channel(self._namespace), b"1")
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue job %s: %s", job_id, exc)
            return False
        return True
