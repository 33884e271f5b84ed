"""The arq functions the worker runs (``worker.main``, which says what is arq's and what
is ours): a run of a job (``run_job_task``) and an attempt to deliver a webhook
(``deliver_webhook_task``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from gql_media import keys
from gql_media.services import events, runner, webhooks
from gql_media.services.deps import Deps


async def run_job_task(ctx: dict[str, Any], job_id: str) -> str:
    """Run one job (one version of its row: ``ctx["job_id"]`` is ``<job id>:v<version>``)."""
    deps: Deps = ctx["deps"]
    # Off the queue as it starts (in the worker's start script with arq_scripts, else here
    # beside the claim): redelivery after a lost worker is the reconciler's (see the
    # docstring of worker.main), and an entry left at the head of the queue would be read
    # again by every worker until this run ends.
    redis: ArqRedis = ctx["redis"]
    worker = ctx.get("worker")
    leave = None
    if worker is None or not worker.leaves_queue:  # else the start took it off
        leave = asyncio.create_task(_leave_queue(redis, deps, ctx["job_id"]))  # beside the claim
    queued_at = keys.arq_job_version(ctx["job_id"])  # the version the run claims
    version = queued_at or 0
    early = worker.claimed_early(ctx["job_id"]) if worker is not None else None
    last: list[bytes] = []  # the change that finished the job, without scripts
    ended = False  # the run's slot released (with scripts)

    async def release(event: bytes) -> bool:
        """The run's slot released as the change that finishes the job commits, that change
        published in the same round trip: not after the rest of the run (its lease keeper
        stopped, its log line), which a busy worker's loop may hold up for milliseconds."""
        nonlocal ended
        if ended or scripted is None:
            return False
        ended = bool(await scripted.end_run(ctx["job_id"], job_id, version, [event]))
        return ended

    scripted = worker if worker is not None and worker.scripts else None  # arq_scripts on
    try:
        with events.run_ending(release if scripted is not None else None) as last:
            outcome = await runner.run_job(deps, job_id, early, version=queued_at)
        if leave is not None:
            await leave
        if scripted is not None and not ended:
            ended = await scripted.end_run(ctx["job_id"], job_id, version, last)
    except asyncio.CancelledError:
        # The worker stops: the runner handed the job back under a new version, so arq's
        # stored call of this one, which arq keeps to run a canceled job again, is dropped,
        # and the entry leaves the queue if it is there (one started for this worker while
        # it idled waits there while it runs: adapters.arq_patch.HAND_OVER); left there,
        # another worker's read would start it with no call, and its claim would lapse.
        await asyncio.shield(deps.queue.drop(job_id, version))
        raise
    finally:
        # the slot goes to the next job in the scheduler's order (a run handed back under
        # a new version was released as that version was scheduled); this worker starts it
        # as the slot frees, with no wake-up sent round every worker. With arq_scripts, in
        # the round trip that ends arq's entry: above (end_run), as the change that
        # finishes the job commits (``release``, which publishes that change in the same
        # round trip) or else as the run returns, or else as arq ends it
        # (GqlMediaWorker.ending).
        if scripted is not None:
            if not ended:
                scripted.release_as_entry_ends(ctx["job_id"], job_id, version, last)
        else:
            handed = await asyncio.shield(deps.queue.finished(job_id, version, events=last))
            if handed and worker is not None:
                worker.take_handed(handed)
    return outcome.value


async def _leave_queue(redis: ArqRedis, deps: Deps, arq_id: str) -> None:
    with contextlib.suppress(RedisError, OSError):
        await redis.zrem(keys.queue_name(deps.settings.redis_namespace), arq_id)


async def deliver_webhook_task(ctx: dict[str, Any], job_id: str, attempt: int) -> str:
    """Make delivery ``attempt`` of a finished job's webhook, unless a worker makes it now."""
    deps: Deps = ctx["deps"]
    settings = deps.settings
    arq_id = ctx["job_id"]
    mark_ms = round(webhooks.attempt_seconds(settings) * 1000)
    # Mark the attempt as being made, for as long as it may take, and take its entry off
    # the queue: the reconciler queues the attempt again if the mark expires unrecorded.
    async with ctx["redis"].pipeline(transaction=True) as pipe:
        pipe.set(keys.delivering_key(settings.redis_namespace, arq_id), b"1", px=mark_ms, nx=True)
        pipe.zrem(keys.queue_name(settings.redis_namespace), arq_id)
        marked, _ = await pipe.execute()
    if not marked:
        return "being made by another worker"
    return await webhooks.deliver(deps, job_id, attempt)
