"""The scheduler inside the service: submitted jobs wait for free slots, a run that ends or
a cancel frees its slot, and the reconciler rebuilds and repairs the scheduler's state from
the database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text, update

from gql_media import keys
from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.scheduling import Dispatched, Waiting
from gql_media.db.models import JobRow, utcnow
from gql_media.domain import JOB_ID_PREFIX, SYSTEM, JobSnapshot, JobStatus, Scheduling, decode_id
from gql_media.runtime import Runtime
from gql_media.services import lease, reconciler, runner
from gql_media.services.control import cancel_job
from gql_media.services.deps import Deps
from gql_media.services.jobs import NewImageJob, create_image_job, create_image_jobs, get_job
from gql_media.worker.main import GqlMediaWorker
from tests.support import statuses_until


def _uuid(job_id: str) -> uuid.UUID:
    parsed = decode_id(JOB_ID_PREFIX, job_id)
    assert parsed is not None
    return parsed


async def _jobs(deps: Deps, n: int) -> list[JobSnapshot]:
    return [
        await create_image_job(deps, NewImageJob(prompt=f"p{i}", provider="mock"), SYSTEM)
        for i in range(n)
    ]


async def _on_arq_queue(runtime: Runtime, job: JobSnapshot) -> bool:
    queue = keys.queue_name(runtime.settings.redis_namespace)
    return await runtime.redis.zscore(queue, keys.arq_job_id(job.id, job.version)) is not None


async def test_jobs_reach_arq_only_for_free_slots(runtime: Runtime) -> None:
    deps = runtime.deps
    jobs = await _jobs(deps, 3)
    assert await deps.queue.depth() == 0  # no worker: every job waits in the scheduler
    assert await deps.queue.scheduler.standing([j.id for j in jobs]) == ["waiting"] * 3
    await deps.queue.register_worker("w", 2, ttl=60)
    assert [await _on_arq_queue(runtime, j) for j in jobs] == [True, True, False]
    # the first run ends: the third job takes its slot
    await deps.queue.finished(jobs[0].id, jobs[0].version)
    assert await _on_arq_queue(runtime, jobs[2])


async def test_a_batch_waits_in_its_input_order(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """generateImages' jobs reach the scheduler in input order (first come, first served
    within a group), also when an earlier round trip to the scheduler is slower than a
    later one."""
    deps = runtime.deps
    add = deps.queue.scheduler.add
    arrived: list[str] = []
    calls = 0
    later = asyncio.Event()

    async def second_call_slow(jobs: Sequence[Waiting], **kwargs: Any) -> list[Dispatched]:
        nonlocal calls
        calls += 1
        if calls == 2:  # its connection is slow: the third call gets there first
            await asyncio.wait_for(later.wait(), 10)
        elif calls == 3:
            later.set()
        arrived.extend(job.job_id for job in jobs)
        return await add(jobs, **kwargs)

    monkeypatch.setattr(deps.queue.scheduler, "add", second_call_slow)
    inputs = [NewImageJob(prompt=f"p{i}", provider="mock") for i in range(10)]
    made = await create_image_jobs(deps, inputs, SYSTEM)
    assert arrived == [job.id for job in made]
    positions = (await deps.queue.scheduler.estimates([job.id for job in made])).positions
    assert positions == list(range(10))


async def test_canceling_a_dispatched_job_frees_its_slot(runtime: Runtime) -> None:
    deps = runtime.deps
    await deps.queue.register_worker("w", 1, ttl=60)
    first, second = await _jobs(deps, 2)
    assert not await _on_arq_queue(runtime, second)
    await cancel_job(deps, first.id, SYSTEM)
    assert await _on_arq_queue(runtime, second)
    assert await deps.queue.scheduler.in_flight() == {second.id: second.version}


async def test_the_state_redis_lost_is_rebuilt_from_the_database(runtime: Runtime) -> None:
    deps = runtime.deps
    await reconciler.reconcile(deps)  # the state is claimed once: from here it exists
    await deps.queue.register_worker("w", 1, ttl=60)
    running, waiting = await _jobs(deps, 2)
    assert await lease.claim(deps, _uuid(running.id), token="t") is not None
    # Redis loses the scheduler's state (the whole namespace: this test's keys)
    namespace = runtime.settings.redis_namespace
    async for key in runtime.redis.scan_iter(match=f"{namespace}:*"):
        await runtime.redis.delete(key)
    await reconciler.reconcile(deps)
    flight = await deps.queue.scheduler.in_flight()
    assert list(flight) == [running.id]  # the RUNNING job holds its slot again
    assert await deps.queue.scheduler.standing([waiting.id]) == ["waiting"]
    # and once the worker is back, the waiting job gets a slot only when one frees
    await deps.queue.register_worker("w", 1, ttl=60)
    assert await deps.queue.scheduler.standing([waiting.id]) == ["waiting"]
    await deps.queue.finished(running.id, flight[running.id])
    assert await _on_arq_queue(runtime, waiting)


async def test_a_retry_waiting_out_its_backoff_still_waits_after_a_rebuild(
    runtime: Runtime,
) -> None:
    """A retry is due when its row's run_after says (its backoff, or the provider's
    Retry-After), also once Redis lost the scheduler's state and it was rebuilt."""
    deps = runtime.deps
    await reconciler.reconcile(deps)
    (job,) = await _jobs(deps, 1)
    async with deps.sessions.begin() as session:  # as a failed attempt leaves it
        await session.execute(
            update(JobRow)
            .where(JobRow.id == _uuid(job.id))
            .values(run_after=utcnow() + timedelta(minutes=5))
        )
    namespace = runtime.settings.redis_namespace
    async for key in runtime.redis.scan_iter(match=f"{namespace}:*"):
        await runtime.redis.delete(key)
    await reconciler.reconcile(deps)
    await deps.queue.register_worker("w", 1, ttl=60)
    assert not await _on_arq_queue(runtime, job)
    assert (await deps.queue.scheduler.estimates([job.id])).positions == [None]  # not due
    assert await deps.queue.scheduler.standing([job.id]) == ["waiting"]


async def test_a_stopping_worker_counts_no_slot_while_its_runs_finish(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that stops leaves the scheduler at once, and its registration, renewed
    every poll while its runs get their grace, keeps it out: no job is handed to slots
    that will not take it."""
    deps = runtime.deps
    calls: list[tuple[bool, int]] = []  # (taking jobs, slots) of each registration
    renewed_while_stopping = asyncio.Event()
    register = deps.queue.register_worker

    async def recorded(worker_id: str, slots: int, ttl: float, **kwargs: Any) -> None:
        calls.append((worker.allow_pick_jobs, slots))
        if sum(1 for taking, _ in calls if not taking) >= 2:  # stop's, then the loop's
            renewed_while_stopping.set()
        await register(worker_id, slots, ttl, **kwargs)

    monkeypatch.setattr(deps.queue, "register_worker", recorded)
    redis = runtime.new_redis()
    worker = GqlMediaWorker(deps, redis)
    pubsub = runtime.redis.pubsub()
    await pubsub.subscribe(keys.events_channel(runtime.settings.redis_namespace))
    try:
        worker.main_task = asyncio.create_task(worker.main())
        job = await create_image_job(
            deps, NewImageJob(prompt="x", provider="mock", extra={"delayMs": 600_000}), SYSTEM
        )
        await statuses_until(pubsub, job.id, "RUNNING")
        stopping = asyncio.create_task(worker.stop(grace=60))
        async with asyncio.timeout(10):
            await renewed_while_stopping.wait()
        assert {slots for taking, slots in calls if not taking} == {0}
        assert (
            await runtime.redis.hget(
                f"{runtime.settings.redis_namespace}:sched:slots", worker.worker_id
            )
            is None
        )
        await cancel_job(deps, job.id, SYSTEM)  # its run ends, and with it the stop
        async with asyncio.timeout(30):
            await stopping
    finally:
        await pubsub.aclose()
        await redis_adapter.close(redis)


async def test_a_slot_whose_release_was_lost_is_freed(runtime: Runtime) -> None:
    deps = runtime.deps
    await reconciler.reconcile(deps)
    await deps.queue.register_worker("w", 1, ttl=60)
    ended, waiting = await _jobs(deps, 2)
    # the run ended in the database, and its worker could not reach Redis to free the slot
    async with deps.sessions.begin() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.id == _uuid(ended.id))
            .values(status=JobStatus.SUCCEEDED.value)
        )
    assert not await _on_arq_queue(runtime, waiting)
    await reconciler.reconcile(deps)
    assert await _on_arq_queue(runtime, waiting)


async def test_a_job_the_scheduler_lost_waits_again(runtime: Runtime) -> None:
    deps = runtime.deps
    await reconciler.reconcile(deps)
    (job,) = await _jobs(deps, 1)
    await deps.queue.scheduler.remove([job.id])  # lost, as by a failed write
    await reconciler.reconcile(deps, at_startup=True)
    assert await deps.queue.scheduler.standing([job.id]) == ["waiting"]


async def _job_due_by(deps: Deps, minutes: float) -> JobSnapshot:
    deadline = utcnow() + timedelta(minutes=minutes)
    job = NewImageJob(prompt="late", provider="mock", scheduling=Scheduling(deadline=deadline))
    return await create_image_job(deps, job, SYSTEM)


async def _pass_deadline(deps: Deps, job: JobSnapshot) -> None:
    """The job's deadline is now in the past (as if its minutes went by)."""
    async with deps.sessions.begin() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.id == _uuid(job.id))
            .values(deadline=utcnow() - timedelta(seconds=1))
        )


async def test_a_queued_job_past_its_deadline_never_starts(runtime: Runtime) -> None:
    deps = runtime.deps
    await deps.queue.register_worker("w", 1, ttl=60)
    job = await _job_due_by(deps, 10)  # dispatched: a worker is about to start it
    await _pass_deadline(deps, job)
    assert await runner.run_job(deps, job.id) is runner.Outcome.FAILED
    failed = await get_job(deps, job.id, SYSTEM)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.started_at is None and failed.attempts == 0  # it never ran
    assert failed.error is not None and failed.error.code == "DEADLINE_EXCEEDED"
    assert await deps.queue.scheduler.in_flight() == {}  # its slot is free


async def test_waiting_jobs_past_their_deadline_are_failed_by_the_reconciler(
    runtime: Runtime,
) -> None:
    deps = runtime.deps
    await reconciler.reconcile(deps)
    late, on_time = await _job_due_by(deps, 10), await _job_due_by(deps, 10)
    await _pass_deadline(deps, late)
    await reconciler.reconcile(deps)
    failed, waiting = [await get_job(deps, j.id, SYSTEM) for j in (late, on_time)]
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "DEADLINE_EXCEEDED"
    assert waiting is not None and waiting.status is JobStatus.QUEUED
    assert await deps.queue.scheduler.standing([late.id, on_time.id]) == [None, "waiting"]


async def test_the_deadline_pass_reads_an_index_of_only_the_jobs_with_a_deadline(
    runtime: Runtime, backend: str
) -> None:
    """The index of the reconciler's pass for QUEUED jobs past their deadline holds only
    jobs with a deadline, so a change of any other job does not write it; behind 20,000
    jobs without one, the pass (as ``deadlines.expire_overdue`` asks it, in a prepared
    statement's plan for any instant) still reads that index."""
    if backend != "postgres":
        pytest.skip("the plans of PostgreSQL")
    async with runtime.deps.sessions.begin() as session:
        await session.execute(
            text(
                """
                INSERT INTO jobs (id, kind, status, progress, version, provider, parameters,
                                  attempts, max_attempts, run_after, created_at, updated_at,
                                  priority, deadline)
                SELECT gen_random_uuid(), 'GENERATE_IMAGE', 'QUEUED', 0, 1, 'mock', '{}', 0, 3,
                       now(), now(), now(), 0,
                       CASE WHEN i % 4000 = 0 THEN now() + interval '1 hour' END
                FROM generate_series(1, 20000) AS i
                """
            )
        )
        await session.execute(text("ANALYZE jobs"))
    async with runtime.deps.sessions() as session:
        definition = await session.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_status_deadline'")
        )
        await session.execute(text("SET plan_cache_mode = force_generic_plan"))
        await session.execute(
            text(
                "PREPARE overdue(varchar, timestamptz, int) AS "
                "SELECT id FROM jobs WHERE status = $1 AND deadline <= $2 LIMIT $3"
            )
        )
        explained = await session.execute(text("EXPLAIN EXECUTE overdue('QUEUED', now(), 500)"))
        plan = "\n".join(explained.scalars())
    assert definition is not None and definition.endswith("WHERE (deadline IS NOT NULL)")
    assert "ix_jobs_status_deadline" in plan, plan
