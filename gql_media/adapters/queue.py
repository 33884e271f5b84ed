"""Enqueueing jobs on the arq queue and waking idle workers at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.exceptions import RedisError

from gql_media import keys
from gql_media.adapters.arq_patch import HandOver
from gql_media.adapters.redis import dump_call
from gql_media.adapters.scheduling import Dispatched, Scheduler, Waiting
from gql_media.batching import Batcher

log = logging.getLogger(__name__)


class Placement(StrEnum):
    """Where a job stands on the queue after ``JobQueue.ensure_queued``."""

    QUEUED = "queued"  # it was put on the queue now
    WAITING = "waiting"  # it was on the queue already
    TAKEN = "taken"  # a worker took its queue entry (and, the caller knows, never claimed it)
    UNAVAILABLE = "unavailable"  # Redis could not be reached


@dataclass(frozen=True, slots=True)
class Handed:
    """A queue entry handed to the worker whose run ended, to start as its slot frees:
    by name, or, when the scheduler's script started it for that worker (``started``: the
    time, in ms, its call was stored and its start marked), with what is known of it."""

    arq_id: str
    started: int = 0

    @property
    def call(self) -> bytes:
        """The call the script stored for a job it started (``dump_call`` of what
        ``enqueue_job`` stores: ``run_job(job_id)``, enqueued as it started)."""
        run = keys.arq_job_run(self.arq_id)
        job_id = run[0] if run is not None else self.arq_id
        return dump_call(
            {"t": None, "f": keys.RUN_JOB_TASK, "a": [job_id], "k": {}, "et": self.started}
        )


@dataclass(frozen=True, slots=True)
class StoredJob:
    """The keys arq keeps for one job id (arq's layout, ``arq.constants``; its guard test
    is in ``tests/test_arq_patch.py``): its call (from ``enqueue_job`` until the job
    ends), its in-progress mark (from its start until it ends, or until the mark expires
    when its worker died) and its count of tries (from its start until it ends)."""

    call: str
    in_progress: str
    tries: str


def stored(arq_id: str) -> StoredJob:
    """The keys arq keeps for the job ``arq_id``."""
    return StoredJob(
        job_key_prefix + arq_id, in_progress_key_prefix + arq_id, retry_key_prefix + arq_id
    )


class JobQueue:
    """Schedules job runs (``adapters.scheduling``) and puts the ones it dispatches on the
    arq queue with arq's ``enqueue_job``, waking idle workers (``adapters.arq_patch``);
    webhook deliveries go on the arq queue directly. The database stays the truth: a lost
    enqueue is redone by the reconciler, and a duplicate one is harmless because running a
    job claims its row.

    ``scripts`` (``arq_scripts`` in ``GQL_MEDIA_PATCHES``): the scheduler's scripts put
    what they dispatch on arq's queue themselves and publish the changes and the wake-up,
    in the round trip that dispatched it (``adapters.arq_patch.HAND_OVER``), instead of
    ``enqueue_job`` per job and a pipeline of publishes after it."""

    def __init__(
        self,
        redis: ArqRedis,
        namespace: str,
        *,
        group_cap: int | None = None,
        scripts: bool = False,
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self._queue = keys.queue_name(namespace)
        self._events = keys.events_channel(namespace)
        self._wake = keys.wake_channel(namespace)
        hand_over = HandOver.of(redis, namespace) if scripts else None
        self.scheduler = Scheduler(redis, namespace, group_cap=group_cap, hand_over=hand_over)
        self._enqueue_batch = Batcher(self._send_waiting)

    async def enqueue(self, job: Waiting, event: bytes = b"") -> bool:
        """Schedule ``job``, then publish ``event`` (the job's change, if any) and hand what
        the scheduler dispatched to the workers; jobs scheduled meanwhile share the round
        trips. False when Redis is unreachable (the reconciler will retry)."""
        return await self.enqueue_all([(job, event)])

    async def enqueue_all(self, jobs: Sequence[tuple[Waiting, bytes]]) -> bool:
        """``enqueue`` of several jobs with their changes, in one round trip and in this
        order (a group's jobs start first come, first served)."""
        return await self._enqueue_batch(tuple(jobs))

    async def _send_waiting(self, calls: list[tuple[tuple[Waiting, bytes], ...]]) -> list[bool]:
        pairs = [pair for call in calls for pair in call]
        jobs, events = [job for job, _ in pairs], [event for _, event in pairs if event]
        try:
            if self.scheduler.hands_over:
                await self.scheduler.add(jobs, events=events)
                return [True] * len(calls)
            dispatched = await self.scheduler.add(jobs)
        except (RedisError, OSError) as exc:
            log.warning("could not schedule %d job(s): %s", len(calls), exc)
            return [False] * len(calls)
        await self._hand_over(dispatched, events)
        return [True] * len(calls)

    async def enqueue_many(self, jobs: Sequence[Waiting]) -> None:
        """Schedule ``jobs`` in one round trip, announcing nothing (the reconciler's)."""
        await self._settle(self.scheduler.add(jobs))

    async def finished(
        self,
        job_id: str,
        version: int,
        *,
        done: str | None = None,
        events: Sequence[bytes] = (),
        start_ms: int = 0,
        worker: str = "",
    ) -> list[Handed] | None:
        """The run of ``job_id`` at ``version`` ended in this worker: its slot goes to the
        next job, which is put on arq's queue without waking anyone: the slot that frees is
        the caller's, which starts the entry returned once it is free. With a hand-over and
        ``start_ms`` (the life of arq's in-progress mark), the script starts that entry for
        the caller instead (``Handed.started``), off the queue. Other jobs the release let
        start (a cap freed) wake the workers as usual. ``done``: the run's arq entry, ended
        in the same round trip (with a hand-over only); ``events``: the run's last changes,
        published in that round trip (with a hand-over) or beside the wake-up. None when
        Redis could not be reached (the reconciler repairs the scheduler; the events are
        lost, as a failed publish loses them). ``worker``: the caller's id among the workers
        that take entries started for them (``HandOver.args``)."""
        try:
            dispatched = await self.scheduler.release(
                [(job_id, version)],
                keep=1,
                done=[done] if done is not None else [],
                events=events,
                start_ms=start_ms,
                worker=worker,
            )
        except (RedisError, OSError) as exc:
            log.warning("could not reach the scheduler to end a run of job %s: %s", job_id, exc)
            return None
        if self.scheduler.hands_over:
            return [
                Handed(keys.arq_job_id(d.job_id, d.version), d.started)
                for d in dispatched
                if d.queued
            ][:1]
        return [Handed(arq_id) for arq_id in await self._hand_over(dispatched, events, keep=1)]

    async def release(self, runs: Sequence[tuple[str, int]]) -> None:
        """Runs (job id, version) that ended: their slots go to the next jobs."""
        await self._settle(self.scheduler.release(runs))

    async def withdraw(self, job_id: str) -> None:
        """``job_id`` will not run (canceled while QUEUED): it leaves the line, or frees
        the slot it was handed."""
        await self._settle(self.scheduler.remove([job_id]))

    async def set_cap(self, owner: str | None, max_running: int) -> None:
        """An owner's cap on jobs running at once (0: none) holds from now on; raised, it
        lets waiting jobs of the owner start."""
        await self._settle(self.scheduler.set_cap(owner, max_running))

    async def register_worker(
        self, worker_id: str, slots: int, ttl: float, *, idle: int = -1, start_ms: int = 0
    ) -> None:
        """A worker's ``slots`` count for ``ttl`` seconds (0 slots: it leaves). With the
        scripts, ``idle`` (not -1) of them idle now: entries are started for them, with
        in-progress marks of ``start_ms``, and given to the worker on its own wake-up
        channel (``adapters.arq_patch.HAND_OVER``)."""
        await self._settle(
            self.scheduler.register(worker_id, slots, ttl, idle=idle, start_ms=start_ms)
        )

    async def _settle(self, scheduled: Awaitable[list[Dispatched]], *, keep: int = 0) -> list[str]:
        """Hand over what a change of the scheduler dispatched; when Redis is down, the
        reconciler repairs what was missed. Returns the first ``keep`` arq ids put on the
        queue, which the caller starts itself (``_hand_over``)."""
        try:
            dispatched = await scheduled
        except (RedisError, OSError) as exc:
            log.warning("could not reach the scheduler: %s", exc)
            return []
        return await self._handed(dispatched, keep=keep)

    async def _handed(self, dispatched: Sequence[Dispatched], *, keep: int) -> list[str]:
        """``_settle``'s hand-over of what was dispatched."""
        if self.scheduler.hands_over:  # queued and woken for by the scheduler's script
            return [keys.arq_job_id(d.job_id, d.version) for d in dispatched if d.queued][:keep]
        return await self._hand_over(dispatched, keep=keep)

    async def _hand_over(
        self, dispatched: Sequence[Dispatched], events: Sequence[bytes] = (), *, keep: int = 0
    ) -> list[str]:
        """Put dispatched jobs on arq's queue, then publish ``events`` and one wake-up
        naming the entries, in one round trip: a woken worker starts a job after its change
        was published. A worker that finds the job on its timer may publish its own change
        first; subscribers drop the older one as stale. The first ``keep`` entries are left
        out of the wake-up and returned: the caller starts them."""
        done = await asyncio.gather(*(self._put(d.job_id, d.version) for d in dispatched))
        due = [
            keys.arq_job_id(d.job_id, d.version)
            for ok, d in zip(done, dispatched, strict=True)
            if ok
        ]
        kept, woken = due[:keep], due[keep:]
        if not events and not woken:
            return kept
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.publish(self._events, event)
                if woken:
                    pipe.publish(self._wake, " ".join(woken))
                await pipe.execute()
        except (RedisError, OSError) as exc:  # the jobs are queued: workers find them
            log.warning("could not publish the changes of queued jobs: %s", exc)
        return kept

    async def _put(self, job_id: str, version: int) -> bool:
        """arq's enqueue of one job run; True also when arq has it already."""
        try:
            await self._redis.enqueue_job(
                keys.RUN_JOB_TASK,
                job_id,
                _job_id=keys.arq_job_id(job_id, version),
                _queue_name=self._queue,
            )
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue job %s: %s", job_id, exc)
            return False
        return True

    async def _wake_workers(self, arq_id: str) -> None:
        """Tell idle workers to start ``arq_id`` now; when this fails, they find it at their
        next read of the queue. A wake-up names the entries it is for, separated by spaces
        (``adapters.arq_patch.WakeableWorker.wake``)."""
        with contextlib.suppress(RedisError, OSError):
            await self._redis.publish(self._wake, arq_id)

    async def enqueue_webhook(
        self, job_id: str, attempt: int, defer: float | None = None, *, lost: bool = False
    ) -> bool:
        """Queue delivery ``attempt`` of a finished job's webhook, one arq job per attempt.

        True when it was queued now; False when that attempt waits on the queue already or
        a worker is making it (requests for the same attempt collapse), or when Redis is
        unreachable (the reconciler retries pending deliveries).

        ``lost``: the caller found the attempt neither recorded nor marked as being made
        past ``webhooks.attempt_seconds``: its worker died during it. arq would run it again
        only once its in-progress key expired (the job timeout + 10 s), so arq's keys of the
        lost run are dropped and the attempt queued afresh, unless it waits on the queue."""
        arq_id = keys.webhook_delivery_id(job_id, attempt)
        try:
            if await self._redis.exists(keys.delivering_key(self._namespace, arq_id)):
                return False  # a worker makes it now
            if lost:
                if await self._redis.zscore(self._queue, arq_id) is not None:
                    return False
                kept = stored(arq_id)
                await self._redis.delete(kept.call, kept.in_progress, kept.tries)
            # arq refuses an id whose stored call exists: one waiting, or one being made
            queued = await self._redis.enqueue_job(
                keys.DELIVER_WEBHOOK_TASK,
                job_id,
                attempt,
                _job_id=arq_id,
                _queue_name=self._queue,
                _defer_by=defer or None,
            )
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue the webhook of job %s: %s", job_id, exc)
            return False
        if queued is not None and not defer:
            await self._wake_workers(arq_id)
        return queued is not None

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
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue job %s: %s", job_id, exc)
            return Placement.UNAVAILABLE
        await self._wake_workers(arq_id)
        return Placement.QUEUED

    async def drop(self, job_id: str, version: int) -> None:
        """Take the entry of ``job_id`` at ``version`` off the queue, with what arq keeps of
        it: a dead worker took it (``ensure_queued``'s TAKEN) and the job moved on to a new
        version. Left there, every read of the queue by every worker would meet it until its
        in-progress mark expired (the job timeout + 10 s). Best effort: the entry is only a
        cost."""
        arq_id = keys.arq_job_id(job_id, version)
        kept = stored(arq_id)
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._queue, arq_id)
                pipe.delete(kept.call, kept.in_progress, kept.tries)
                await pipe.execute()

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
                    pipe.exists(stored(arq_id).in_progress)
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
