"""arq worker that runs jobs through ``services.runner``.

arq polls its queue every ``poll_delay``; this worker also listens on a wake-up channel so
a job enqueued while it idles starts at once, with the poll kept as the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from arq import func
from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from arq.worker import Worker
from redis.exceptions import RedisError

from gql_media import keys
from gql_media.adapters import redis as redis_adapter
from gql_media.db.engine import is_unavailable
from gql_media.runtime import Runtime
from gql_media.services import retention, runner, webhooks
from gql_media.services.deps import Deps

log = logging.getLogger(__name__)


async def run_job_task(ctx: dict[str, Any], job_id: str) -> str:
    deps: Deps = ctx["deps"]
    # arq keeps a running job on its queue until it ends. A killed worker's entries would
    # stay at the head of the queue, skipped as "running elsewhere" until their in-progress
    # keys expire, and could starve the jobs behind them; redelivery is the reconciler's.
    with contextlib.suppress(RedisError, OSError):
        await ctx["redis"].zrem(keys.queue_name(deps.settings.redis_namespace), ctx["job_id"])
    outcome = await runner.run_job(deps, job_id)
    return outcome.value


async def deliver_webhook_task(ctx: dict[str, Any], job_id: str, attempt: int) -> str:
    """A delivery started by arq itself. Workers take delivery entries directly (see
    ``start_jobs``); this stays registered so that no entry could fail as unknown."""
    return await webhooks.deliver(ctx["deps"], job_id, attempt)


class GqlMediaWorker(Worker):
    """arq's Worker with a wake-up channel and a periodic reconciler."""

    def __init__(self, deps: Deps, redis: ArqRedis, *, handle_signals: bool = False) -> None:
        settings = deps.settings
        super().__init__(
            functions=[
                func(run_job_task, name=keys.RUN_JOB_TASK, keep_result=0, max_tries=5),
                func(deliver_webhook_task, name=keys.DELIVER_WEBHOOK_TASK, keep_result=0),
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
        )
        self.deps = deps
        self._wake = asyncio.Event()
        # entries may wait on the queue that no slot was free for: read it when one frees
        self._backlog = False
        self._redis_down_since: float | None = None
        self._take = redis.register_script(_TAKE)

    async def main(self) -> None:
        # arq's own main() first logs Redis INFO, which the embedded stand-in lacks.
        settings = self.deps.settings
        self.ctx["redis"] = self.pool
        background = [
            asyncio.create_task(self._listen_for_wakeups(settings.redis_namespace)),
            asyncio.create_task(self._reconcile_forever(settings.reconcile_interval)),
            asyncio.create_task(self._retain_forever(settings.retention_interval)),
        ]
        try:
            while True:
                await self._poll_safely()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel
                # that arrives as the event is set, and shutdown would wait for ever
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_delay_s):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    async def _poll_safely(self) -> None:
        """One arq poll; while Redis is down, log and back off instead of dying (the
        reconciler re-enqueues from the database whatever Redis lost)."""
        try:
            await self._poll_iteration()
            self._redis_down_since = None
        except (RedisError, OSError) as exc:
            if self._redis_down_since is None:
                self._redis_down_since = asyncio.get_running_loop().time()
                log.warning("worker lost Redis: %s; retrying", exc)
            await asyncio.sleep(min(1.0, self.poll_delay_s * 4))

    async def _listen_for_wakeups(self, namespace: str) -> None:
        delay = 0.1
        while True:
            pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
            try:
                wake, nudge = keys.wake_channel(namespace), keys.provider_nudge_channel(namespace)
                await pubsub.subscribe(wake, nudge)
                delay = 0.1
                async for message in pubsub.listen():
                    if _text(message.get("channel")) == nudge:
                        self._nudge_providers(_text(message.get("data")))
                    elif not self._start_directly(_text(message.get("data"))):
                        # not a job, or no free slot: the poll takes it, now or when one frees
                        self._backlog = True
                        self._wake.set()
            except (RedisError, OSError) as exc:
                log.warning("wake-up listener lost Redis: %s", exc)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _poll_iteration(self) -> None:
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
            self._backlog = False  # arq reads the queue now; start_jobs says what it left
        await super()._poll_iteration()

    def _release_sem_dec_counter_on_complete(self) -> None:
        """A slot is free (arq calls this as a task ends): when entries wait for one, read
        the queue now rather than at the next poll. After the release, so that the poll
        sees the free slot."""
        super()._release_sem_dec_counter_on_complete()
        if self._backlog:
            self._wake.set()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Start polled jobs and webhook deliveries the way a wake-up does (take the queue
        entry, then run it): one round trip where arq's start and finish take about seven.
        A taken delivery leaves no arq key behind that would refuse its id, so one lost
        with its worker can be queued again (``webhooks.requeue_lost``)."""
        if len(job_ids) >= self.queue_read_limit:
            self._backlog = True  # the read was cut at its limit: more may wait
        for raw in job_ids:
            arq_id = raw.decode()
            if not _runs_a_job(arq_id) and keys.parse_webhook_delivery_id(arq_id) is None:
                await super().start_jobs([raw])
                continue
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                self._backlog = True
                return
            self._run_in_slot(arq_id)

    def _start_directly(self, arq_id: str) -> bool:
        """Start the job a wake-up names (``<job id>:v<version>``) here and now when a slot
        is free, instead of after arq's next read of the queue. Whoever removes the queue
        entry runs the job (arq skips an entry that is gone), and running it claims its row,
        so it runs once; the poll stays the fallback. Returns whether it started: a started
        job needs no poll, which would only race its take of the queue entry."""
        if not self.allow_pick_jobs or not _runs_a_job(arq_id):
            return False
        if self.job_counter >= self.max_jobs or self.sem.locked():
            return False
        # take a slot as arq's start_jobs does (semaphore and counter), without waiting: a
        # slot is free, so this is what acquire() would do at once
        self.sem._value -= 1
        self._run_in_slot(arq_id)
        return True

    def _run_in_slot(self, arq_id: str) -> None:
        """Run ``arq_id`` in the slot the caller took; the slot is freed when it ends."""
        self.job_counter += 1
        task = asyncio.create_task(self._run_directly(arq_id))
        task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[f"direct:{arq_id}:{id(task)}"] = task

    async def _run_directly(self, arq_id: str) -> None:
        delivery = keys.parse_webhook_delivery_id(arq_id)
        take_keys, take_args = [self.queue_name, job_key_prefix + arq_id], [arq_id]
        if delivery is not None:  # mark the attempt as being made, for as long as it may take
            namespace = self.deps.settings.redis_namespace
            take_keys.append(keys.delivering_key(namespace, arq_id))
            take_args.append(str(round(webhooks.attempt_seconds(self.deps.settings) * 1000)))
        try:
            if not await self._take(keys=take_keys, args=take_args):
                return  # another worker, or another path of this one, has it
            if delivery is None:
                await runner.run_job(self.deps, arq_id.rsplit(":v", 1)[0])
            else:
                outcome = await webhooks.deliver(self.deps, *delivery)
                log.info("webhook %s: %s", arq_id, outcome)
        except (RedisError, OSError) as exc:
            log.warning("could not start %s directly: %s", arq_id, exc)
        except Exception:
            log.exception("job %s failed outside the runner", arq_id)

    def _nudge_providers(self, external_id: str) -> None:
        """A webhook said this provider-side work changed: whoever waits on it looks now."""
        for provider in self.deps.providers.values():
            nudge = getattr(provider, "nudge", None)
            if nudge is not None:
                nudge(external_id)

    async def _reconcile_forever(self, interval: float) -> None:
        at_startup = True
        while True:
            try:
                count = await runner.reconcile(self.deps, at_startup=at_startup)
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

    async def _retain_forever(self, interval: float) -> None:
        while True:
            try:
                await retention.expire_media(self.deps)
                await retention.sweep_orphans(self.deps)
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(interval)

    async def stop(self, grace: float) -> None:
        """Stop taking jobs, give running ones ``grace`` seconds, then cancel the rest."""
        self.allow_pick_jobs = False
        running = {arq_id: t for arq_id, t in self.tasks.items() if not t.done()}
        if running:
            jobs = sum(1 for key in running if _runs_a_job(_arq_id(key)))
            log.info(
                "stopping: waiting up to %gs (GQL_MEDIA_SHUTDOWN_GRACE) for %d running job(s)"
                " and %d other task(s) to finish; what still runs then goes back to the queue",
                grace,
                jobs,
                len(running) - jobs,
            )
            await asyncio.wait(running.values(), timeout=grace)
        if self.main_task is not None:
            self.main_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.main_task
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


# Take a queue entry (and drop its stored arguments, which the id carries): 1 for the caller
# who removed it, 0 for everyone else. KEYS: queue, job key, and for a webhook delivery its
# delivering key. ARGV: arq id, and for a delivery how many ms its mark lasts.
_TAKE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
if KEYS[3] then redis.call('PSETEX', KEYS[3], ARGV[2], '1') end
return 1
"""


def _arq_id(task_key: str) -> str:
    """The queue entry a worker task runs: its key in ``tasks``, or inside a direct start's."""
    if task_key.startswith("direct:"):
        return task_key.removeprefix("direct:").rpartition(":")[0]
    return task_key


def _runs_a_job(arq_id: str) -> bool:
    """Whether a queue entry is a job run (``<job id>:v<version>``), not another task."""
    head, _, version = arq_id.rpartition(":v")
    return bool(head) and version.isdigit()


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
