"""Enqueueing jobs on the arq queue and waking idle workers at once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.exceptions import NoScriptError, RedisError

from gql_media import keys
from gql_media.batching import Batcher

log = logging.getLogger(__name__)


class Placement(StrEnum):
    """Where a job stands on the queue after ``JobQueue.ensure_queued``."""

    QUEUED = "queued"  # it was put on the queue now
    WAITING = "waiting"  # it was on the queue already
    TAKEN = "taken"  # a worker took its queue entry (and, the caller knows, never claimed it)
    UNAVAILABLE = "unavailable"  # Redis could not be reached


# arq's enqueue (refuse an id it knows, store the job, add it to the queue) in one round
# trip instead of a WATCH transaction, with the job's event published first and a wake-up
# naming it after. KEYS: job key, result key, queue. ARGV: job data, expiry ms, score, arq
# id, events channel, event ('' for none), wake channel ('' for none).
_ENQUEUE = """
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[7], ARGV[4]) end
return 1
"""


# Queue a webhook delivery attempt unless it waits on the queue already or a worker is making
# it now (its delivering key is set). Workers take a delivery's entry off the queue and drop
# its stored job as they start it (see worker.main), so arq keeps no key that would refuse
# the id again once the attempt was lost with its worker. KEYS: job key, queue, delivering
# key. ARGV: job data, expiry ms, score, arq id, wake channel ('' for none).
_ENQUEUE_DELIVERY = """
if redis.call('ZSCORE', KEYS[2], ARGV[4]) or redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[4]) end
return 1
"""


@dataclass(frozen=True, slots=True)
class _Enqueue:
    """One call of the enqueue script."""

    job_id: str
    keys: list[str]
    args: list[Any]


class JobQueue:
    """Puts job ids on the arq queue. The database stays the truth: a lost enqueue is redone
    by the reconciler, and a duplicate one is harmless because running a job claims its row."""

    def __init__(self, redis: ArqRedis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._queue = keys.queue_name(namespace)
        self._events = keys.events_channel(namespace)
        self._wake = keys.wake_channel(namespace)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._enqueue_delivery = redis.register_script(_ENQUEUE_DELIVERY)
        self._enqueue_batch = Batcher(self._send_enqueues)

    async def enqueue(
        self, job_id: str, version: int, defer: float | None = None, event: bytes = b""
    ) -> bool:
        """Queue ``job_id``, publishing ``event`` (the job's change, if any) first, in one
        round trip shared with the jobs queued meanwhile. False when Redis is
        unreachable (the reconciler will retry)."""
        return await self._enqueue_batch(self._call(job_id, version, defer, event))

    def _call(self, job_id: str, version: int, defer: float | None, event: bytes) -> _Enqueue:
        """The enqueue script's keys and arguments for one job."""
        arq_id = keys.arq_job_id(job_id, version)
        now = timestamp_ms()
        delay = round(defer * 1000) if defer else 0
        data = serialize_job(keys.RUN_JOB_TASK, (job_id,), {}, None, now)
        return _Enqueue(
            job_id,
            [job_key_prefix + arq_id, result_key_prefix + arq_id, self._queue],
            # a job due now names itself in the wake-up: an idle worker may start it
            [
                data,
                delay + int(self._redis.expires_extra_ms),
                now + delay,
                arq_id,
                self._events,
                event,
                b"" if defer else self._wake,
            ],
        )

    async def _send_enqueues(self, calls: list[_Enqueue]) -> list[bool]:
        if len(calls) == 1:
            return [await self._run_enqueue(calls[0])]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for call in calls:
                    pipe.evalsha(self._enqueue.sha, len(call.keys), *call.keys, *call.args)
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue jobs %s: %s", ", ".join(c.job_id for c in calls), exc)
            return [False] * len(calls)
        done = []
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis restarted: load the script again
                done.append(await self._run_enqueue(call))
            elif isinstance(result, Exception):
                log.warning("could not enqueue job %s: %s", call.job_id, result)
                done.append(False)
            else:
                done.append(True)
        return done

    async def _run_enqueue(self, call: _Enqueue) -> bool:
        try:
            await self._enqueue(keys=call.keys, args=call.args)
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue job %s: %s", call.job_id, exc)
            return False
        return True

    async def enqueue_webhook(self, job_id: str, attempt: int, defer: float | None = None) -> bool:
        """Queue delivery ``attempt`` of a finished job's webhook, one arq job per attempt.

        True when it was queued now; False when that attempt waits on the queue already or
        a worker is making it (requests for the same attempt collapse), or when Redis is
        unreachable (the reconciler retries pending deliveries)."""
        arq_id = keys.webhook_delivery_id(job_id, attempt)
        now = timestamp_ms()
        delay = round(defer * 1000) if defer else 0
        data = serialize_job(keys.DELIVER_WEBHOOK_TASK, (job_id, attempt), {}, None, now)
        delivering = keys.delivering_key(self._namespace, arq_id)
        try:
            queued = await self._enqueue_delivery(
                keys=[job_key_prefix + arq_id, self._queue, delivering],
                args=[
                    data,
                    delay + int(self._redis.expires_extra_ms),
                    now + delay,
                    arq_id,
                    b"" if defer else self._wake,
                ],
            )
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue the webhook of job %s: %s", job_id, exc)
            return False
        return bool(queued)

    async def ensure_queued(self, job_id: str, version: int) -> Placement:
        """Queue ``job_id`` at ``version`` unless it waits on the queue already.

        arq keeps a running job on the queue under an in-progress key that outlives a killed
        worker by the job timeout, and refuses an id it has seen. Such an entry reports
        TAKEN: the caller moves the job to a new version, which gets a new arq id.
        """
        placement = (await self.standing([(job_id, version)]))[0]
        if placement is not None:
            return placement
        arq_id = keys.arq_job_id(job_id, version)
        try:
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

    async def standing(self, jobs: Sequence[tuple[str, int]]) -> list[Placement | None]:
        """Where each ``(job id, version)`` stands, in two round trips however many there
        are: WAITING for an entry on the queue, TAKEN for one a worker took (see
        ``ensure_queued``), None for one that is not there, UNAVAILABLE for all when Redis
        cannot be reached."""
        arq_ids = [keys.arq_job_id(job_id, version) for job_id, version in jobs]
        if not arq_ids:
            return []
        try:
            scores = await self._redis.zmscore(self._queue, arq_ids)
            on_queue = [a for a, score in zip(arq_ids, scores, strict=True) if score is not None]
            async with self._redis.pipeline(transaction=False) as pipe:
                for arq_id in on_queue:
                    pipe.exists(in_progress_key_prefix + arq_id)
                running = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not read the queue: %s", exc)
            return [Placement.UNAVAILABLE] * len(arq_ids)
        taken = {arq_id for arq_id, flag in zip(on_queue, running, strict=True) if flag}
        return [
            None if score is None else Placement.TAKEN if arq_id in taken else Placement.WAITING
            for arq_id, score in zip(arq_ids, scores, strict=True)
        ]

    async def depth(self) -> int:
        """Entries on the queue: due and deferred jobs and webhook deliveries (a worker takes
        a job's entry off when it starts it)."""
        return int(await self._redis.zcard(self._queue))
