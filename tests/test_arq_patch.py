"""Guard tests of ``gql_media/worker/arq_patch.py``: they fail when arq changes what the
wake-up relies on (see the module's docstring), so that an upgrade of arq is noticed here
and not as jobs that wait for the next poll."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from importlib.metadata import version
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker, func

from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.queue import stored
from gql_media.worker.arq_patch import WakeableWorker


def test_arq_is_the_minor_version_the_patch_knows() -> None:
    assert version("arq").startswith("0.28."), "check worker/arq_patch.py against this arq"


def test_the_internals_the_patch_uses_are_there() -> None:
    for name in ("_poll_iteration", "_release_sem_dec_counter_on_complete", "start_jobs"):
        assert hasattr(Worker, name), name
    assert inspect.iscoroutinefunction(Worker._poll_iteration)
    assert list(inspect.signature(Worker._poll_iteration).parameters) == ["self"]
    assert inspect.iscoroutinefunction(Worker.start_jobs)
    assert list(inspect.signature(Worker.start_jobs).parameters) == ["self", "job_ids"]
    release = Worker._release_sem_dec_counter_on_complete
    assert not inspect.iscoroutinefunction(release)
    assert list(inspect.signature(release).parameters) == ["self"]


async def _worker(redis: ArqRedis, queue: str, task: Any, **kwargs: Any) -> WakeableWorker:
    return WakeableWorker(
        functions=[func(task, name="task")],
        redis_pool=redis,
        queue_name=queue,
        poll_delay=600,  # no read of the queue on the timer during the test
        keep_result=0,
        handle_signals=False,
        **kwargs,
    )


class _ReadCounter:
    """Counts the worker's reads of the queue (arq's ``_poll_iteration``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.first = asyncio.Event()
        poll_iteration = Worker._poll_iteration

        async def counted(worker: Worker) -> None:
            self.count += 1
            await poll_iteration(worker)
            self.first.set()

        monkeypatch.setattr(Worker, "_poll_iteration", counted)


async def test_a_wake_up_reads_the_queue_and_a_freed_slot_reads_it_again() -> None:
    """One slot, two jobs: the wake-up starts the first through arq's own start path; the
    second, left waiting, starts as the first's slot frees, with no poll in between."""
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    queue = f"test-{uuid.uuid4().hex}"
    ran: list[str] = []
    started, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def task(ctx: dict[str, Any], name: str) -> None:
        ran.append(name)
        if name == "first":
            started.set()
            await release.wait()
        else:
            done.set()

    worker = await _worker(redis, queue, task, max_jobs=1)
    loop = asyncio.create_task(worker.poll_forever())
    try:
        # ids in queue order where their scores (enqueue times in ms) are equal
        await redis.enqueue_job("task", "first", _queue_name=queue, _job_id=f"{queue}-a")
        await redis.enqueue_job("task", "second", _queue_name=queue, _job_id=f"{queue}-b")
        worker.wake()
        await asyncio.wait_for(started.wait(), 10)
        assert ran == ["first"] and worker.job_counter == 1
        worker.wake()  # every slot is busy: remembered until one frees
        release.set()
        await asyncio.wait_for(done.wait(), 10)
        assert ran == ["first", "second"]
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await redis_adapter.close(redis)


async def test_a_wake_up_naming_an_entry_starts_it_without_reading_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The named entry starts through arq's start_jobs; the queue is read only at first
    (the timer is ten minutes away), and an entry the wake-up does not name waits."""
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    queue = f"test-{uuid.uuid4().hex}"
    ran: list[str] = []
    started = asyncio.Event()

    async def task(ctx: dict[str, Any], name: str) -> None:
        ran.append(name)
        started.set()

    reads = _ReadCounter(monkeypatch)
    worker = await _worker(redis, queue, task, max_jobs=4)
    loop = asyncio.create_task(worker.poll_forever())
    try:
        await asyncio.wait_for(reads.first.wait(), 10)  # an empty queue
        await redis.enqueue_job("task", "unnamed", _queue_name=queue, _job_id=f"{queue}-a")
        await redis.enqueue_job("task", "named", _queue_name=queue, _job_id=f"{queue}-b")
        worker.wake([f"{queue}-b".encode()])
        await asyncio.wait_for(started.wait(), 10)
        assert ran == ["named"]
        assert reads.count == 1
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await redis_adapter.close(redis)


async def test_entries_handed_to_an_ending_job_start_as_its_slot_frees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job that ends hands its slot to an entry (``start_when_free``): the entry starts
    as the slot frees, by name, with no wake-up and no read of the queue."""
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    queue = f"test-{uuid.uuid4().hex}"
    ran: list[str] = []
    done = asyncio.Event()
    worker: WakeableWorker | None = None

    async def task(ctx: dict[str, Any], name: str) -> None:
        ran.append(name)
        if name == "first":
            await redis.enqueue_job("task", "next", _queue_name=queue, _job_id=f"{queue}-b")
            assert worker is not None
            worker.start_when_free([f"{queue}-b".encode()])
        else:
            done.set()

    reads = _ReadCounter(monkeypatch)
    # two slots: a full worker reads the queue when a slot frees, whatever was handed
    worker = await _worker(redis, queue, task, max_jobs=2)
    loop = asyncio.create_task(worker.poll_forever())
    try:
        await asyncio.wait_for(reads.first.wait(), 10)  # an empty queue
        await redis.enqueue_job("task", "first", _queue_name=queue, _job_id=f"{queue}-a")
        worker.wake([f"{queue}-a".encode()])
        await asyncio.wait_for(done.wait(), 10)
        assert ran == ["first", "next"]
        assert reads.count == 1
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await redis_adapter.close(redis)


async def test_arq_keeps_a_job_under_the_keys_the_patch_names() -> None:
    """What ``stored`` names is what arq keeps: the call from enqueue to end, the mark of
    a running job and its count of tries while it runs, and nothing once it ended."""
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    queue = f"test-{uuid.uuid4().hex}"
    arq_id = f"{queue}-job"
    keys = stored(arq_id)
    running, release, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def task(ctx: dict[str, Any]) -> None:
        running.set()
        await release.wait()

    async def after_job_end(ctx: dict[str, Any]) -> None:
        ended.set()  # arq calls it once it has ended the job in Redis

    async def present() -> list[bool]:
        return [bool(await redis.exists(key)) for key in (keys.call, keys.in_progress, keys.tries)]

    await redis.enqueue_job("task", _queue_name=queue, _job_id=arq_id)
    assert await present() == [True, False, False]
    worker = await _worker(redis, queue, task, max_jobs=1, after_job_end=after_job_end)
    loop = asyncio.create_task(worker.poll_forever())
    try:
        await asyncio.wait_for(running.wait(), 10)
        assert await present() == [True, True, True]
        release.set()
        await asyncio.wait_for(ended.wait(), 10)
        assert await present() == [False, False, False]
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await redis_adapter.close(redis)


async def test_one_wake_up_drains_a_queue_of_quick_jobs() -> None:
    """Jobs that end while a read of the queue starts others free slots the read no longer
    sees: the worker reads again at once instead of leaving the rest to its timer."""
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    queue = f"test-{uuid.uuid4().hex}"
    count, done = 0, asyncio.Event()

    async def task(ctx: dict[str, Any], n: int) -> None:
        nonlocal count
        count += 1
        if count == 60:
            done.set()

    for n in range(60):
        await redis.enqueue_job("task", n, _queue_name=queue)
    worker = await _worker(redis, queue, task, max_jobs=4)
    loop = asyncio.create_task(worker.poll_forever())  # its first read: no timer after it
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await redis_adapter.close(redis)


async def test_with_wake_ups_off_a_wake_up_does_nothing() -> None:
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    worker = WakeableWorker(
        functions=[func(_nothing, name="task")],
        redis_pool=redis,
        handle_signals=False,
        wakeups=False,
    )
    worker.wake()
    assert not worker._wake.is_set()
    worker.wakeups = True
    worker.wake()
    assert worker._wake.is_set()
    await redis_adapter.close(redis)


async def _nothing(ctx: dict[str, Any]) -> None:
    return None
