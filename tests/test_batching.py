"""Writes of one event-loop turn sent together: the batcher, job inserts and enqueues."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from arq.constants import job_key_prefix
from sqlalchemy import func, select

from gql_media import keys
from gql_media.adapters.scheduling import Dispatched, Waiting
from gql_media.batching import Batcher
from gql_media.db.models import JobRow, utcnow
from gql_media.domain import SYSTEM, JobKind, JobStatus
from gql_media.runtime import Runtime
from gql_media.services.jobs import NewImageJob, create_image_job
from tests.support import open_slots


class Recorder:
    """A send that records its batches and can be made to fail or to wait."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.fail: Exception | None = None
        self.release: asyncio.Event | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        if self.release is not None:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


async def _until_sent(send: Recorder, batches: int) -> None:
    while len(send.batches) < batches:
        await asyncio.sleep(0)


async def _first_call_out() -> tuple[Recorder, Batcher[int, int], asyncio.Future[int]]:
    """A batcher with one send out at a time, whose first call, of 1, is being sent and
    waits for ``release``."""
    send = Recorder()
    send.release = asyncio.Event()
    batcher = Batcher(send, in_flight=1)
    first = asyncio.ensure_future(batcher(1))
    await _until_sent(send, 1)  # sent at once, without waiting for company
    return send, batcher, first


async def test_a_lone_call_goes_at_once_and_later_ones_go_together() -> None:
    send, batcher, first = await _first_call_out()
    later = asyncio.gather(*(batcher(n) for n in (2, 3)))
    send.release.set()
    assert await first == 10
    assert await later == [20, 30]  # each gets its own result
    assert send.batches == [[1], [2, 3]]
    assert await batcher(4) == 40
    assert send.batches == [[1], [2, 3], [4]]


async def test_a_failed_send_fails_every_call_of_its_batch() -> None:
    send, batcher, first = await _first_call_out()
    later = asyncio.gather(batcher(2), batcher(3), return_exceptions=True)
    send.fail = RuntimeError("down")
    send.release.set()
    with pytest.raises(RuntimeError, match="down"):
        await first
    assert [str(error) for error in await later] == ["down", "down"]
    send.fail = None
    assert await batcher(4) == 40  # the next batch is unaffected


async def test_a_canceled_caller_leaves_the_send_of_the_others() -> None:
    send, batcher, first = await _first_call_out()
    canceled = asyncio.ensure_future(batcher(2))
    kept = asyncio.ensure_future(batcher(3))
    await asyncio.sleep(0)
    canceled.cancel()
    send.release.set()
    assert await first == 10
    assert await kept == 30
    assert canceled.cancelled()
    assert send.batches == [[1], [2, 3]]


async def test_a_canceled_lone_call_does_not_stop_later_ones() -> None:
    send, batcher, first = await _first_call_out()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    send.release.set()
    assert await batcher(2) == 20


async def test_a_stuck_send_leaves_the_other_lane_to_later_calls() -> None:
    """With two sends allowed out, a send that hangs (a lock, a dead connection) holds up
    only its own callers: later calls go, and pile up, on the other lane."""
    stuck = asyncio.Event()
    batches: list[list[int]] = []

    async def send(items: list[int]) -> list[int]:
        batches.append(items)
        if items == [1]:
            await stuck.wait()
        return [item * 10 for item in items]

    batcher = Batcher(send, in_flight=2)
    first = asyncio.ensure_future(batcher(1))
    await asyncio.sleep(0)
    assert await batcher(2) == 20
    assert await asyncio.gather(batcher(3), batcher(4)) == [30, 40]
    assert not first.done()
    stuck.set()
    assert await first == 10
    assert batches[:2] == [[1], [2]]


async def _job_count(runtime: Runtime) -> int:
    async with runtime.deps.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(JobRow)) or 0)


async def test_jobs_created_together_are_all_stored_and_a_repeated_key_gives_one_job(
    runtime: Runtime,
) -> None:
    """A batch with a conflicting idempotency key is undone and inserted row by row: the
    others are stored once, and both requests with the key get the same job."""
    deps = runtime.deps
    jobs = [NewImageJob(prompt=f"p{n}", provider="mock") for n in range(4)]
    jobs += [NewImageJob(prompt="same", provider="mock", idempotency_key="k")] * 2
    created = await asyncio.gather(*(create_image_job(deps, job, SYSTEM) for job in jobs))
    assert created[4].id == created[5].id
    assert len({job.id for job in created}) == 5
    assert await _job_count(runtime) == 5

    again = NewImageJob(prompt="same", provider="mock", idempotency_key="k")
    more = [NewImageJob(prompt="fresh", provider="mock"), again]
    fresh, replayed = await asyncio.gather(*(create_image_job(deps, job, SYSTEM) for job in more))
    assert replayed.id == created[4].id
    assert fresh.id not in {job.id for job in created}
    assert await _job_count(runtime) == 6


async def test_jobs_enqueued_together_share_the_publishing_and_one_wake_up(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's change is published once arq has the job, with the wake-up after it, so a
    woken worker starts only jobs whose change is out; the jobs queued while others are
    sent share one round trip for their changes and one wake-up."""
    deps = runtime.deps
    namespace = deps.settings.redis_namespace
    queue = keys.queue_name(namespace)
    ids = [f"job_{uuid.uuid4().hex}" for _ in range(5)]  # arq's job keys are not namespaced
    sends: list[int] = []
    pipeline, add = runtime.redis.pipeline, deps.queue.scheduler.add

    def counted(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("transaction") is False:  # not arq's own (a transaction)
            sends.append(1)
        return pipeline(*args, **kwargs)

    async def counted_add(*args: Any, **kwargs: Any) -> Any:
        sends.append(1)
        return await add(*args, **kwargs)

    await open_slots(deps)
    if deps.queue.scheduler.hands_over:  # the scheduler's script queues and publishes
        monkeypatch.setattr(deps.queue.scheduler, "add", counted_add)
    else:  # enqueue_job per job, then one pipeline publishes
        monkeypatch.setattr(runtime.redis, "pipeline", counted)
    seen: list[tuple[str, bool]] = []  # (channel, whether the job named was on the queue)
    async with runtime.redis.pubsub() as pubsub:
        await pubsub.subscribe(keys.events_channel(namespace), keys.wake_channel(namespace))
        # two go at once (as many as may be out), the three queued meanwhile share a send
        pairs = [(job_id, job_id.encode()) for job_id in ids]
        done = await asyncio.gather(*(deps.queue.enqueue(Waiting(i, 1), e) for i, e in pairs))
        assert done == [True] * 5
        while len(seen) < 8:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            if message is None:  # a subscription's confirmation, or nothing in 5 s
                continue
            channel = message["channel"].decode()
            if channel == keys.wake_channel(namespace):
                seen.append(("wake", True))
            else:
                arq_id = keys.arq_job_id(message["data"].decode(), 1)
                seen.append(("change", await runtime.redis.zscore(queue, arq_id) is not None))
    assert sends == [1, 1, 1]
    assert [channel for channel, _ in seen].count("wake") == 3
    assert all(on_queue for _, on_queue in seen)
    assert seen[-1][0] == "wake"


async def test_a_job_arq_has_already_counts_as_queued(runtime: Runtime) -> None:
    """Queueing a version arq holds already (a duplicate enqueue) is harmless: it stays
    once on the queue and the call reports it queued."""
    deps = runtime.deps
    queue = keys.queue_name(deps.settings.redis_namespace)
    job_id = f"job_{uuid.uuid4().hex}"
    await open_slots(deps)
    assert await deps.queue.enqueue(Waiting(job_id, 1))
    assert await deps.queue.enqueue(Waiting(job_id, 1))
    assert await runtime.redis.zcard(queue) >= 1
    assert await runtime.redis.exists(job_key_prefix + keys.arq_job_id(job_id, 1)) == 1


def _job_row(job_id: uuid.UUID, prompt: str) -> dict[str, Any]:
    now = utcnow()
    return dict(
        id=job_id,
        kind=JobKind.GENERATE_IMAGE.value,
        status=JobStatus.QUEUED.value,
        progress=0.0,
        version=1,
        prompt=prompt,
        provider="mock",
        model=None,
        parameters={},
        attempts=0,
        max_attempts=3,
        idempotency_key=None,
        request_hash=None,
        owner_id=None,
        webhook_url=None,
        run_after=now,
        created_at=now,
        updated_at=now,
    )


async def test_a_conflicting_row_fails_alone_and_the_rest_of_its_batch_is_stored(
    runtime: Runtime,
) -> None:
    taken = uuid.uuid4()
    # the first two occupy both lanes; the other three pile up into one batch
    rows = [_job_row(uuid.uuid4(), f"lane {n}") for n in (1, 2)]
    rows += [_job_row(taken, "first"), _job_row(taken, "again"), _job_row(uuid.uuid4(), "other")]
    results = await asyncio.gather(
        *(runtime.deps.job_inserts(row) for row in rows), return_exceptions=True
    )
    assert [type(r).__name__ for r in results[2:]] == ["NoneType", "IntegrityError", "NoneType"]
    assert results[:2] == [None, None]
    async with runtime.deps.sessions() as session:
        prompts = set((await session.execute(select(JobRow.prompt))).scalars())
    assert prompts == {"lane 1", "lane 2", "first", "other"}


async def test_a_worker_keeps_the_entry_its_ending_job_freed_a_slot_for(
    runtime: Runtime,
) -> None:
    """A release that hands out several entries: the first is the ending job's worker's to
    start (no wake-up names it), the others wake the workers."""
    deps = runtime.deps
    namespace = deps.settings.redis_namespace
    mine, other = (Dispatched(f"job_{uuid.uuid4().hex}", 1) for _ in range(2))
    async with runtime.redis.pubsub() as pubsub:
        await pubsub.subscribe(keys.wake_channel(namespace))
        kept = await deps.queue._hand_over([mine, other], keep=1)
        message = None
        while message is None:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    assert kept == [keys.arq_job_id(mine.job_id, 1)]
    assert message["data"].decode() == keys.arq_job_id(other.job_id, 1)
    queue = keys.queue_name(namespace)
    assert await runtime.redis.zscore(queue, keys.arq_job_id(mine.job_id, 1)) is not None
