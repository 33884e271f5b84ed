"""The arq worker: arq reads the queue and starts each job run and webhook delivery as an
arq function (``worker.tasks``: ``run_job_task``, ``deliver_webhook_task``); ``services``
does the work.

What is arq's and what is ours, and why:

- The order is ours (``adapters.scheduling``): jobs wait in the scheduler by priority, owner
  and group, and one is handed to the workers only while a slot is free, which arq's queue
  (first come, first served) cannot express. Each worker registers its slots there
  (``_register_forever``) and a run that ends frees its slot (``run_job_task``; with
  ``arq_scripts``, in the script that ends arq's entry: ``GqlMediaWorker.ending``).
- Enqueue and start are arq's: a job the scheduler hands over is put on arq's queue as
  ``ArqRedis.enqueue_job`` puts it, arq's worker reads the queue, starts the function in a
  slot (``GQL_MEDIA_WORKER_CONCURRENCY``) and bounds it with its timeout. The additions are
  in ``adapters.arq_patch``, each switchable in ``GQL_MEDIA_PATCHES``: the wake-up
  (``arq_wakeups``: a job enqueued while a worker idles starts at once instead of at the
  next poll) and the one-round-trip enqueue, start and end (``arq_scripts``; off, arq's
  ``enqueue_job``, ``start_jobs`` and ``finish_job`` serve).
- Retries are ours, in the database: a job's attempts, backoff and error are part of its row,
  which clients read and which outlives a Redis restart. Each retry is a new arq job (a new
  version of the row); arq never runs one twice (``max_tries=1``). A webhook attempt that
  failed queues the next attempt, deferred by the backoff.
- Timeouts: ``GQL_MEDIA_JOB_TIMEOUT`` is the runner's, which records JOB_TIMEOUT on the job
  and stops its provider work; arq's timeout is a backstop 60 s later.
- A worker that dies: a run leaves arq's queue as it starts (``run_job_task``) and holds a
  lease on its row; the reconciler gives back jobs whose lease expired. arq would run the
  entry again only once its in-progress key expired (the job timeout + 10 s), and meanwhile
  every read of the queue by every worker would meet it again at the head of the queue. A
  delivery marks itself for ``webhooks.attempt_seconds`` instead, and the reconciler queues
  an attempt lost with its worker once that mark is gone.
- The reconciler and retention are loops of the worker, not arq cron jobs: the reconciler is
  what repairs a lost or restarted Redis, so it must run while Redis is unreachable, and both
  run at intervals arq's cron cannot express (it fires on whole seconds of the clock; tests
  run the reconciler every 0.2 s). Both are idempotent, so every worker may run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from arq import func
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from gql_media import keys
from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.arq_patch import WakeableWorker
from gql_media.adapters.queue import Handed
from gql_media.db.engine import is_unavailable
from gql_media.runtime import Runtime
from gql_media.services import reconciler, retention, runner, webhooks
from gql_media.services.deps import Deps
from gql_media.worker.tasks import deliver_webhook_task, run_job_task

log = logging.getLogger(__name__)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Read an unused task's outcome, so a failure is logged here, once."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("an unused claim failed: %s", task.exception())


class GqlMediaWorker(WakeableWorker):
    """arq's Worker with this service's functions, a wake-up listener, the reconciler and
    retention."""

    def __init__(self, deps: Deps, redis: ArqRedis, *, handle_signals: bool = False) -> None:
        settings = deps.settings
        worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        super().__init__(
            functions=[
                func(run_job_task, name=keys.RUN_JOB_TASK, max_tries=1),
                func(deliver_webhook_task, name=keys.DELIVER_WEBHOOK_TASK, max_tries=1),
            ],
            redis_pool=redis,
            queue_name=keys.queue_name(settings.redis_namespace),
            max_jobs=settings.worker_concurrency,
            job_timeout=settings.job_timeout + 60,
            poll_delay=settings.worker_poll_delay,
            keep_result=0,
            handle_signals=handle_signals,
            ctx={"deps": deps},
            health_check_key=f"{keys.queue_name(settings.redis_namespace)}:health-check",
            wakeups="arq_wakeups" in settings.patches_on,
            scripts="arq_scripts" in settings.patches_on,
            leave_queue=True,  # see run_job_task
            worker_id=worker_id,
            idle_slots=keys.idle_slots(settings.redis_namespace),
        )
        self.deps = deps
        # claims begun as arq starts an entry, until its run_job_task takes them
        self._early: dict[str, asyncio.Task[runner.Claim]] = {}
        # runs that ended, by entry, until arq ends the entry (``ending``)
        self._ending: dict[str, tuple[str, int, list[bytes]]] = {}
        # entries end_run ended already, until arq ends them (``ending``)
        self._ended: set[str] = set()
        self._lapse = max(5.0, 10 * settings.worker_poll_delay)

    def starting(self, job_id: str) -> None:
        """A job run's entry started: its row is claimed now, before arq's ``run_job``
        begins (and, unless the start script read the call, reads it), rather than after
        it; ``run_job_task`` takes the claim."""
        run = keys.arq_job_run(job_id)
        if run is None:  # a webhook delivery
            return
        self._early[job_id] = asyncio.ensure_future(runner.claim_run(self.deps, *run))

    async def end_run(self, arq_id: str, job_id: str, version: int, last: list[bytes]) -> bool:
        """The run of ``job_id`` at ``version`` (the entry ``arq_id``) returned: its slot
        is released, its ``last`` changes published and, with a hand-over, arq's entry
        ended as ``finish_job`` ends it, in one round trip now rather than after arq's
        bookkeeping (arq's own end of the entry is then skipped: ``ending``). False when
        Redis could not be reached: the release is tried again as arq ends the entry."""
        done = arq_id if self.deps.queue.scheduler.hands_over else None
        if not await self._release(job_id, version, done, last):
            return False
        if done is not None:
            self._ended.add(arq_id)
        return True

    def release_as_entry_ends(
        self, arq_id: str, job_id: str, version: int, last: list[bytes]
    ) -> None:
        """The run of ``job_id`` at ``version`` (the entry ``arq_id``) ended: its slot is
        released as arq ends the entry (``ending``), in one round trip with arq's end and
        the publish of the run's ``last`` changes."""
        self._ending[arq_id] = (job_id, version, last)

    async def ending(self, job_id: str, finished: bool) -> bool:
        """arq ends the entry ``job_id``: the run's slot goes to the next job, and, when
        ``finished``, the entry's keys go in the same script; then this worker starts the
        job handed to it as the slot frees."""
        if job_id in self._ended:  # by end_run, as the run returned
            self._ended.discard(job_id)
            return True
        run = self._ending.pop(job_id, None)
        if run is None:  # a webhook delivery, or a run end_run released
            return False
        done = job_id if finished and self.deps.queue.scheduler.hands_over else None
        run_job_id, version, last = run
        if not await self._release(run_job_id, version, done, last):
            return False  # Redis unreachable: arq tries its own end of the entry
        return done is not None

    async def _release(
        self, job_id: str, version: int, done: str | None, last: list[bytes]
    ) -> bool:
        """Release the slot of the run of ``job_id`` at ``version`` (``JobQueue.finished``,
        ending the entry ``done`` and publishing ``last``) and take what it hands this
        worker; False when Redis could not be reached."""
        handed = await self.deps.queue.finished(
            job_id,
            version,
            done=done,
            events=last,
            start_ms=self.start_mark_ms,
            worker=self.idle_id,
        )
        if handed is None:
            return False
        self.take_handed(handed)
        return True

    def take_handed(self, handed: Sequence[Handed]) -> None:
        """Start the entries handed to this worker as its slot frees: by name, or, where
        the script that handed them started them for this worker, run them."""
        for entry in handed:
            if entry.started:
                self.run_when_free(entry.arq_id, entry.started, entry.call)
            else:
                self.start_when_free([entry.arq_id.encode()])

    def claimed_early(self, job_id: str) -> asyncio.Task[runner.Claim] | None:
        """The claim ``starting`` began for the entry ``job_id``, for its run to use."""
        return self._early.pop(job_id, None)

    def ended(self, job_id: str) -> None:
        """An entry's task ended. If arq ended it without running it (its call expired,
        say), a claim begun for it stays unused: the job's lease lapses and the reconciler
        queues it again."""
        early = self._early.pop(job_id, None)
        if early is None:
            return
        log.warning("job entry %s ended without running; its claim lapses", job_id)
        early.add_done_callback(_retrieved)

    async def main(self) -> None:
        settings = self.deps.settings
        self.ctx["redis"] = self.pool
        self.ctx["worker"] = self
        background = [
            asyncio.create_task(self._register_forever()),
            asyncio.create_task(self._listen_for_wakeups(settings.redis_namespace)),
            asyncio.create_task(self._reconcile_forever(settings.reconcile_interval)),
        ]
        if settings.retention_seconds > 0:  # without retention media is kept forever
            background.append(
                asyncio.create_task(self._retain_forever(settings.retention_interval))
            )
        try:
            await self.poll_forever()
        finally:
            await cancel_until_done(background)
            await asyncio.gather(*background, return_exceptions=True)

    async def _listen_for_wakeups(self, namespace: str) -> None:
        delay = 0.1
        while True:
            pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
            try:
                wake, nudge = keys.wake_channel(namespace), keys.provider_nudge_channel(namespace)
                mine = keys.worker_wake_channel(namespace, self.worker_id)
                await pubsub.subscribe(wake, nudge, mine)
                delay = 0.1
                async for message in pubsub.listen():
                    channel = _text(message.get("channel"))
                    if channel == nudge:
                        self._nudge_providers(_text(message.get("data")))
                    elif channel == mine:
                        self._run_started_for_me(_text(message.get("data")))
                    elif self.allow_pick_jobs:
                        self.wake(_raw(message.get("data")).split())
            except (RedisError, OSError) as exc:
                log.warning("wake-up listener lost Redis: %s", exc)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _run_started_for_me(self, message: str) -> None:
        """ "<started, ms> <entry>": a scheduler's script started the entry for one of this
        worker's idle slots (``adapters.arq_patch.HAND_OVER``). A stopping worker gives it
        back (``stop``)."""
        started, _, arq_id = message.partition(" ")
        if not started.isdigit() or not arq_id:
            log.warning("ignoring a malformed start on this worker's channel: %.80r", message)
            return
        self.run_now(arq_id, int(started), Handed(arq_id, int(started)).call)

    async def _register_forever(self) -> None:
        """Count this worker's slots in the scheduler, again every poll: jobs are handed to
        the workers only while slots are free, and a worker that dies stops counting once
        its registration lapses. Each call also hands over jobs that became due. A worker
        that stops (``stop``) counts no slot from then on."""
        while True:
            await self.deps.queue.register_worker(
                self.worker_id,
                self.max_jobs if self.allow_pick_jobs else 0,
                self._lapse,
                idle=self.idle_now,
                start_ms=self.start_mark_ms,
            )
            await asyncio.sleep(self.poll_delay_s)

    def _nudge_providers(self, external_id: str) -> None:
        """A webhook said this provider-side work changed: whoever waits on it looks now."""
        for provider in self.deps.providers.values():
            nudge = getattr(provider, "nudge", None)
            if nudge is not None:
                nudge(external_id)

    async def _reconcile_forever(self, interval: float) -> None:
        at_startup = True
        history: str | None = None
        while True:
            try:
                history, changed = await self._redis_history(history)
                at_startup = at_startup or changed
                count = await reconciler.reconcile(self.deps, at_startup=at_startup)
                at_startup = False
                if count:
                    log.info("re-enqueued %d overdue jobs", count)
                if self.deps.settings.webhook_secret is not None:
                    lost = await webhooks.requeue_lost(self.deps)
                    if lost:
                        log.info("re-enqueued %d webhook deliveries", lost)
            except Exception as exc:
                if is_unavailable(exc):  # an outage, not a bug: no traceback every pass
                    log.warning("reconciler: database unavailable (%r); retrying", exc)
                else:
                    log.exception("reconciler failed")
            await asyncio.sleep(interval)

    async def _redis_history(self, known: str | None) -> tuple[str | None, bool]:
        """Redis's history now, and whether it differs from ``known``: a Redis restarted, or
        a replica promoted in its place by a failover, may have lost the last writes, and the
        reconciler then looks at every QUEUED job at once, as at start-up, instead of those
        overdue by GQL_MEDIA_RECONCILE_AFTER. While Redis is unreachable: ``known``, unchanged
        (the reconciler's repairs in the database go on)."""
        try:
            now = await self.deps.queue.scheduler.history()
        except (RedisError, OSError):
            return known, False
        changed = known is not None and now != known
        if changed:
            log.info("Redis restarted or failed over; looking at every queued job")
        return now, changed

    async def _retain_forever(self, interval: float) -> None:
        while True:
            try:
                await retention.retain_once(self.deps)
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(interval)

    async def stop(self, grace: float) -> None:
        """Stop taking jobs, give running ones ``grace`` seconds, then cancel the rest."""
        self.allow_pick_jobs = False
        await self.deps.queue.register_worker(self.worker_id, 0, self._lapse, idle=0)
        await self.give_back_started()
        running = {arq_id: t for arq_id, t in self.tasks.items() if not t.done()}
        if running:
            jobs = sum(1 for arq_id in running if _runs_a_job(arq_id))
            log.info(
                "stopping: waiting up to %gs (GQL_MEDIA_SHUTDOWN_GRACE) for %d running job(s)"
                " and %d other task(s) to finish; what still runs then goes back to the queue",
                grace,
                jobs,
                len(running) - jobs,
            )
            await asyncio.wait(running.values(), timeout=grace)
        if self.main_task is not None:
            await cancel_until_done([self.main_task])
            with contextlib.suppress(asyncio.CancelledError):
                await self.main_task
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.give_back_started()  # handed on by runs that ended meanwhile


async def cancel_until_done(tasks: Sequence[asyncio.Task[Any]], every: float = 1.0) -> None:
    """Cancel ``tasks`` and wait for them to end, cancelling again every ``every`` seconds
    those still running: on Python 3.11 ``asyncio.wait_for`` (which asyncpg and redis-py
    use to connect) loses a cancel that arrives as what it waits for completes, and a loop
    that retries an unreachable database would then run on after the worker was stopped."""
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=every)
        pending = [task for task in pending if not task.done()]


def _runs_a_job(arq_id: str) -> bool:
    """Whether a queue entry is a job run (``<job id>:v<version>``), not another task."""
    return keys.arq_job_version(arq_id) is not None


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.asynccontextmanager
async def running_worker(
    runtime: Runtime, grace: float | None = None
) -> AsyncIterator[GqlMediaWorker]:
    """A worker running in this event loop until the block exits; on exit, running jobs get
    ``grace`` seconds (default: settings.shutdown_grace) and are then handed back."""
    redis = runtime.new_redis()
    worker = GqlMediaWorker(runtime.deps, redis)
    worker.main_task = asyncio.create_task(worker.main(), name="gql-media-worker")
    try:
        yield worker
    finally:
        await worker.stop(runtime.settings.shutdown_grace if grace is None else grace)
        await redis_adapter.close(redis)
