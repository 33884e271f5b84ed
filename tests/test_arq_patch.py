"""Guard tests of ``gql_media/adapters/arq_patch/``: they fail when arq changes what the
wake-up relies on (see the module's docstring), so that an upgrade of arq is noticed here
and not as jobs that wait for the next poll."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import os
import uuid
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.jobs import Job, deserialize_job_raw, serialize_job
from arq.worker import Worker, func

from gql_media import keys
from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.arq_patch import WakeableWorker
from gql_media.adapters.queue import Handed, JobQueue, stored
from gql_media.adapters.scheduling import Waiting
from gql_media.domain import SYSTEM, JobStatus
from gql_media.runtime import Runtime, open_runtime
from gql_media.services.jobs import NewImageJob, create_image_job, get_job
from gql_media.worker.main import running_worker
from tests.support import eventually, needs_patches


def test_arq_is_the_minor_version_the_patch_knows() -> None:
    assert version("arq").startswith("0.28."), "check adapters/arq_patch/ against this arq"


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


def _job_worker(redis: ArqRedis, namespace: str, run: Any, **kwargs: Any) -> WakeableWorker:
    """A worker of ``namespace``'s queue whose job runs are ``run``."""
    return WakeableWorker(
        functions=[func(run, name=keys.RUN_JOB_TASK)],
        redis_pool=redis,
        queue_name=keys.queue_name(namespace),
        poll_delay=600,  # no read of the queue on the timer during the test
        keep_result=0,
        handle_signals=False,
        **kwargs,
    )


def _count_starts(worker: WakeableWorker, monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """The entries each call of ``worker.start_jobs`` is given, from now on."""
    starts: list[list[bytes]] = []
    start_jobs = worker.start_jobs

    async def counted(job_ids: list[bytes]) -> None:
        starts.append(list(job_ids))
        await start_jobs(job_ids)

    monkeypatch.setattr(worker, "start_jobs", counted)
    return starts


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


@contextlib.asynccontextmanager
async def _polling(
    worker: WakeableWorker, redis: ArqRedis, reads: _ReadCounter
) -> AsyncIterator[None]:
    """``worker``'s loop running, past its first read of the (empty) queue; on exit the loop
    stops and ``redis`` is closed."""
    loop = asyncio.create_task(worker.poll_forever())
    try:
        await asyncio.wait_for(reads.first.wait(), 10)  # an empty queue
        yield
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await redis_adapter.close(redis)


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
    async with _polling(worker, redis, reads):
        await redis.enqueue_job("task", "unnamed", _queue_name=queue, _job_id=f"{queue}-a")
        await redis.enqueue_job("task", "named", _queue_name=queue, _job_id=f"{queue}-b")
        worker.wake([f"{queue}-b".encode()])
        await asyncio.wait_for(started.wait(), 10)
        assert ran == ["named"]
        assert reads.count == 1


@pytest.mark.parametrize("slots", [1, 2])
async def test_entries_handed_to_an_ending_job_start_as_its_slot_frees(
    monkeypatch: pytest.MonkeyPatch, slots: int
) -> None:
    """A job that ends hands its slot to an entry (``start_when_free``): the entry starts
    as the slot frees, by name, with no wake-up and no read of the queue; also when the
    job had taken the worker's last free slot (a start by name that filled the slots left
    nothing waiting on the queue)."""
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
    worker = await _worker(redis, queue, task, max_jobs=slots)
    async with _polling(worker, redis, reads):
        await redis.enqueue_job("task", "first", _queue_name=queue, _job_id=f"{queue}-a")
        worker.wake([f"{queue}-a".encode()])
        await asyncio.wait_for(done.wait(), 10)
        assert ran == ["first", "next"]
        assert reads.count == 1
        await asyncio.gather(*list(worker.tasks.values()))
        assert worker.tasks == {}  # with no read of the queue, the tasks that ran are dropped


async def test_a_slot_handed_on_while_a_start_is_under_way_goes_to_its_entry_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job that ends while the worker's start script is out (starting other entries)
    hands its slot to an entry: the entry starts by name once that start is done, with no
    read of the queue."""
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    queue = f"test-{uuid.uuid4().hex}"
    ran: list[str] = []
    first_ran, first_may_end, next_ran = asyncio.Event(), asyncio.Event(), asyncio.Event()
    worker: WakeableWorker | None = None

    async def task(ctx: dict[str, Any], name: str) -> None:
        ran.append(name)
        assert worker is not None
        if name == "first":
            first_ran.set()
            await first_may_end.wait()
            await redis.enqueue_job("task", "next", _queue_name=queue, _job_id=f"{queue}-n")
            worker.start_when_free([f"{queue}-n".encode()])
        elif name == "next":
            next_ran.set()

    reads = _ReadCounter(monkeypatch)
    worker = await _worker(redis, queue, task, max_jobs=2)
    async with _polling(worker, redis, reads):
        try:
            await redis.enqueue_job("task", "first", _queue_name=queue, _job_id=f"{queue}-f")
            worker.wake([f"{queue}-f".encode()])
            await asyncio.wait_for(first_ran.wait(), 10)
            first_task = worker.tasks[f"{queue}-f"]
            start_script = worker._start

            async def first_ends_meanwhile(**kwargs: Any) -> Any:
                first_may_end.set()
                await asyncio.gather(first_task, return_exceptions=True)  # its slot is free
                return await start_script(**kwargs)

            monkeypatch.setattr(worker, "_start", first_ends_meanwhile)
            await redis.enqueue_job("task", "second", _queue_name=queue, _job_id=f"{queue}-s")
            worker.wake([f"{queue}-s".encode()])
            await asyncio.wait_for(next_ran.wait(), 10)
            assert ran == ["first", "second", "next"]
            assert reads.count == 1
        finally:
            first_may_end.set()
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


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


async def test_entries_handed_before_their_slots_free_start_by_name_one_slot_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two ending jobs hand their slots on before the first slot frees: that slot starts
    the first entry and the second starts as the next slot frees, by name, with no read of
    the queue."""
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    queue = f"test-{uuid.uuid4().hex}"
    ran: list[str] = []
    y_handed, second_ran = asyncio.Event(), asyncio.Event()
    worker: WakeableWorker | None = None

    async def task(ctx: dict[str, Any], name: str) -> None:
        ran.append(name)
        assert worker is not None
        if name in ("x", "y"):
            if name == "x":
                await y_handed.wait()
            await redis.enqueue_job(
                "task", f"after {name}", _queue_name=queue, _job_id=f"{queue}-after-{name}"
            )
            worker.start_when_free([f"{queue}-after-{name}".encode()])
            if name == "y":
                y_handed.set()
                await second_ran.wait()  # y's slot stays busy until both entries ran
        elif name == "after x":
            second_ran.set()

    reads = _ReadCounter(monkeypatch)
    worker = await _worker(redis, queue, task, max_jobs=2)
    async with _polling(worker, redis, reads):
        try:
            for name in ("x", "y"):
                await redis.enqueue_job("task", name, _queue_name=queue, _job_id=f"{queue}-{name}")
            worker.wake([f"{queue}-x".encode(), f"{queue}-y".encode()])
            await asyncio.wait_for(second_ran.wait(), 10)
            assert ran[2:] == ["after y", "after x"]
            assert reads.count == 1
        finally:
            second_ran.set()
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


async def test_an_entry_handed_a_slot_that_a_read_under_way_fills_starts_as_the_next_frees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job ends while a read of the queue is out and hands its slot to an entry the read
    did not find; the read's start then fills every slot. The entry starts by name as the
    next slot frees, not at the next poll (ten minutes away here)."""
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    queue = f"test-{uuid.uuid4().hex}"
    ran: list[str] = []
    first_ran, first_may_end, handed_ran = asyncio.Event(), asyncio.Event(), asyncio.Event()
    may_end = {name: asyncio.Event() for name in ("a", "b")}
    both_run = asyncio.Event()
    worker: WakeableWorker | None = None

    async def task(ctx: dict[str, Any], name: str) -> None:
        ran.append(name)
        assert worker is not None
        if name == "first":
            first_ran.set()
            await first_may_end.wait()
            await redis.enqueue_job("task", "handed", _queue_name=queue, _job_id=f"{queue}-h")
            worker.start_when_free([f"{queue}-h".encode()])
        elif name == "handed":
            handed_ran.set()
        else:
            if {"a", "b"} <= set(ran):
                both_run.set()
            await may_end[name].wait()

    reads = _ReadCounter(monkeypatch)
    worker = await _worker(redis, queue, task, max_jobs=2)
    async with _polling(worker, redis, reads):
        try:
            await redis.enqueue_job("task", "first", _queue_name=queue, _job_id=f"{queue}-f")
            worker.wake([f"{queue}-f".encode()])
            await asyncio.wait_for(first_ran.wait(), 10)
            first_task = worker.tasks[f"{queue}-f"]
            for name in ("a", "b"):
                await redis.enqueue_job("task", name, _queue_name=queue, _job_id=f"{queue}-{name}")

            async def read_as_the_slot_frees(self: Worker) -> None:
                # arq's read found a and b; the first job ends before they start
                first_may_end.set()
                await asyncio.gather(first_task, return_exceptions=True)
                await self.start_jobs([f"{queue}-a".encode(), f"{queue}-b".encode()])

            monkeypatch.setattr(Worker, "_poll_iteration", read_as_the_slot_frees)
            worker.wake()  # a read of the queue, with one slot free
            await asyncio.wait_for(both_run.wait(), 10)
            assert (
                sorted(ran) == ["a", "b", "first"] and worker.job_counter == 2
            )  # a and b took both slots
            may_end["a"].set()
            await asyncio.wait_for(handed_ran.wait(), 10)
            assert ran[-1] == "handed"
        finally:
            first_may_end.set()
            for event in may_end.values():
                event.set()
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


async def _nothing(ctx: dict[str, Any]) -> None:
    return None


# -- arq_scripts: arq's enqueue, start and end in one round trip each -----------------------

# sha256 of the source each script mirrors, in the arq the patch was written against: a new
# arq that changes them fails here, and HAND_OVER / START are checked against it before the
# digests are updated
MIRRORED = {
    "ArqRedis.enqueue_job": "7da8706a747c1171",
    "Worker.start_jobs": "b45797cfa40bed7f",
    "serialize_job": "1fc854cc50e16e5c",
    "Worker.finish_job": "903f09c92830d3fd",
    "Worker.run_job": "589a19059ff84ee7",  # its first transaction: START's read of the call
}


async def test_the_scripts_mirror_the_arq_source_they_were_written_from() -> None:
    for function in (
        ArqRedis.enqueue_job,
        Worker.start_jobs,
        serialize_job,
        Worker.finish_job,
        Worker.run_job,
    ):
        digest = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
        assert digest == MIRRORED[function.__qualname__], function.__qualname__
    redis = redis_adapter.connect(None, redis_adapter.new_fake_server())
    worker = Worker(functions=[func(_nothing, name="t")], redis_pool=redis, handle_signals=False)
    for name in ("sem", "job_counter", "in_progress_timeout_s", "tasks", "queue_name"):
        assert name in worker.__dict__, name
    await redis_adapter.close(redis)


def _redis_targets() -> list[str | None]:
    """The in-process stand-in, and the real Redis when the integration tests have one."""
    real = os.environ.get("GQL_MEDIA_TEST_REDIS_URL")
    return [None, real] if real else [None]


@pytest.fixture(params=_redis_targets(), ids=lambda url: "redis" if url else "fakeredis")
async def arq_redis(request: pytest.FixtureRequest) -> AsyncIterator[ArqRedis]:
    redis = redis_adapter.connect(
        request.param, None if request.param else redis_adapter.new_fake_server()
    )
    yield redis
    await redis_adapter.close(redis)


# a change as orjson writes it, with what a prompt may hold: quotes, backslashes, escapes,
# control characters, characters beyond the BMP; the script publishes it byte for byte
EVENT = '{"prompt":"\\"q\\" \\\\ \\/ \\u0001 é ☃ 🦊 \\n","v":1}'.encode()


async def test_the_hand_over_writes_the_entry_enqueue_job_writes(arq_redis: ArqRedis) -> None:
    """A job the scheduler dispatches is on arq's queue as ``enqueue_job`` puts it (the
    same call, the same expiry, scored now), its change is published before the wake-up
    naming it, and arq's public read of the entry (``Job.info``) sees the call."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    assert queue.scheduler.hands_over
    pubsub = arq_redis.pubsub()
    await pubsub.subscribe(keys.events_channel(namespace), keys.wake_channel(namespace))
    for _ in range(2):
        await pubsub.get_message(timeout=5)  # the subscriptions' confirmations
    try:
        await queue.register_worker("w", 1, 60)
        job_id = uuid.uuid4().hex
        assert await queue.enqueue(Waiting(job_id, 3), EVENT)
        arq_id = keys.arq_job_id(job_id, 3)
        # arq's own enqueue of the same call, for comparison
        theirs = f"{namespace}-theirs"
        await arq_redis.enqueue_job(keys.RUN_JOB_TASK, job_id, _job_id=theirs, _queue_name="x")

        ours_raw = await arq_redis.get(stored(arq_id).call)
        theirs_raw = await arq_redis.get(stored(theirs).call)
        ours, mine = json.loads(ours_raw), json.loads(theirs_raw)
        assert ours.keys() == mine.keys() and ours.pop("et") > 0 and mine.pop("et") > 0
        assert ours == mine == {"t": None, "f": keys.RUN_JOB_TASK, "a": [job_id], "k": {}}
        assert deserialize_job_raw(ours_raw, deserializer=redis_adapter.load_call)[:3] == (
            keys.RUN_JOB_TASK,
            [job_id],
            {},
        )
        ttl, their_ttl = (
            await arq_redis.pttl(stored(arq_id).call),
            await arq_redis.pttl(stored(theirs).call),
        )
        assert abs(ttl - their_ttl) < 5_000
        score = await arq_redis.zscore(keys.queue_name(namespace), arq_id)
        assert score == json.loads(ours_raw)["et"]
        info = await Job(
            arq_id,
            arq_redis,
            _queue_name=keys.queue_name(namespace),
            _deserializer=redis_adapter.load_call,
        ).info()
        assert info is not None and info.function == keys.RUN_JOB_TASK and info.args == [job_id]

        event = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        wake = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert event is not None and event["data"] == EVENT
        assert wake is not None and wake["data"] == arq_id.encode()

        # an id arq has seen (its call still stored) is not written again: enqueue_job's rule
        await queue.release([(job_id, 3)])
        await arq_redis.zrem(keys.queue_name(namespace), arq_id)
        assert await queue.enqueue(Waiting(job_id, 3))
        assert await arq_redis.zscore(keys.queue_name(namespace), arq_id) is None
    finally:
        await pubsub.aclose()


@pytest.mark.parametrize("scripts", [True, False], ids=["script", "arq"])
async def test_the_start_script_starts_what_start_jobs_starts(
    arq_redis: ArqRedis, scripts: bool
) -> None:
    """Entries that are due and not marked start, in order, as many as slots are free;
    one deferred, one marked in progress by another worker and one gone from the queue are
    passed over. The same with the script and with arq's own start_jobs (which leaves the
    started entries on the queue: ``leave_queue`` is the script's)."""
    queue = f"test-{uuid.uuid4().hex}"
    started: list[str] = []
    hold = asyncio.Event()

    async def task(ctx: dict[str, Any], name: str) -> None:
        started.append(name)
        await hold.wait()

    for name in ("gone", "marked", "later", "a", "b", "c"):
        defer = 600 if name == "later" else None
        await arq_redis.enqueue_job(
            "task", name, _queue_name=queue, _job_id=f"{queue}-{name}", _defer_by=defer
        )
    await arq_redis.zrem(queue, f"{queue}-gone")
    await arq_redis.set(stored(f"{queue}-marked").in_progress, b"1", px=60_000)
    worker = await _worker(arq_redis, queue, task, max_jobs=2, scripts=scripts, leave_queue=True)
    try:
        names = [f"{queue}-{n}".encode() for n in ("gone", "marked", "later", "a", "b", "c")]
        await worker.start_jobs(names)
        assert worker.job_counter == 2 and set(worker.tasks) == {f"{queue}-a", f"{queue}-b"}
        await asyncio.sleep(0)  # the tasks run up to the hold
        while len(started) < 2:
            await asyncio.sleep(0.01)
        assert sorted(started) == ["a", "b"]
        for name in ("a", "b"):
            mark = await arq_redis.pttl(stored(f"{queue}-{name}").in_progress)
            assert 0 < mark <= worker.in_progress_timeout_s * 1000
        assert not await arq_redis.exists(stored(f"{queue}-later").in_progress)
        # the script takes what it started off the queue when asked; arq leaves it there
        on_queue = await arq_redis.zmscore(queue, [f"{queue}-a", f"{queue}-b", f"{queue}-c"])
        assert [score is not None for score in on_queue] == [not scripts, not scripts, True]
        await worker.start_jobs(names)  # every slot busy: nothing more starts
        assert worker.job_counter == 2 and len(worker.tasks) == 2
    finally:
        hold.set()
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    assert worker.job_counter == 0


@pytest.mark.parametrize("scripts", [True, False], ids=["script", "arq"])
async def test_an_entry_the_hand_over_wrote_runs_on_either_start(
    arq_redis: ArqRedis, scripts: bool
) -> None:
    """Processes with ``arq_scripts`` on and off work together: an entry the scheduler's
    script wrote is started and run, with its argument, by the start script and by arq's
    own ``start_jobs``."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    ran: list[str] = []

    async def run(ctx: dict[str, Any], job_id: str) -> None:
        ran.append(job_id)

    await queue.register_worker("w", 1, 60)
    job_id = uuid.uuid4().hex
    assert await queue.enqueue(Waiting(job_id, 1))
    worker = _job_worker(arq_redis, namespace, run, scripts=scripts)
    await worker.start_jobs([keys.arq_job_id(job_id, 1).encode()])
    await asyncio.gather(*worker.tasks.values())
    assert ran == [job_id]


@pytest.mark.parametrize("scripts", [True, False], ids=["script", "arq"])
async def test_the_start_script_reads_the_call_as_run_job_would(
    arq_redis: ArqRedis, scripts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the scripts, what arq's ``run_job`` reads first (the call, the try count
    incremented, with its expiry) comes from the start script, and ``run_job`` sends no
    transaction of its own before the function runs; the function gets the same call and
    try either way. An entry whose call is gone fails as arq fails it ("job expired"), and
    one past its tries is not run, on either start."""
    queue = f"test-{uuid.uuid4().hex}"
    seen: list[tuple[str, int, int]] = []
    pipelines = 0
    pipeline = ArqRedis.pipeline

    def counted(self: ArqRedis, *args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return pipeline(self, *args, **kwargs)

    counts: list[tuple[bytes | None, int]] = []

    async def task(ctx: dict[str, Any], name: str) -> None:
        seen.append((name, ctx["job_try"], pipelines))
        tries = stored(ctx["job_id"]).tries
        counts.append((await arq_redis.get(tries), await arq_redis.ttl(tries)))

    names = ("a", "gone", "tried", "b")
    for name in names:
        await arq_redis.enqueue_job("task", name, _queue_name=queue, _job_id=f"{queue}-{name}")
    await arq_redis.delete(stored(f"{queue}-gone").call)
    await arq_redis.set(stored(f"{queue}-tried").tries, b"5")
    worker = await _worker(arq_redis, queue, task, max_jobs=4, scripts=scripts, max_tries=3)
    finished: list[str] = []
    finish_failed = worker.finish_failed_job

    async def failed(job_id: str, result_data: bytes | None) -> None:
        finished.append(job_id.removeprefix(f"{queue}-"))
        await finish_failed(job_id, result_data)

    monkeypatch.setattr(worker, "finish_failed_job", failed)
    monkeypatch.setattr(ArqRedis, "pipeline", counted)
    await worker.start_jobs([f"{queue}-{name}".encode() for name in ("a", "b")])
    await asyncio.gather(*worker.tasks.values())
    # arq's own read is a transaction per entry, before its function runs
    assert [name for name, _, _ in sorted(seen)] == ["a", "b"]
    assert all(job_try == 1 and (reads == 0) == scripts for _, job_try, reads in seen)
    await worker.start_jobs([f"{queue}-{name}".encode() for name in ("gone", "tried")])
    await asyncio.gather(*worker.tasks.values())
    monkeypatch.undo()
    assert len(seen) == 2 and sorted(finished) == ["gone", "tried"]
    assert worker._read == {}  # nothing read ahead is left behind
    assert all(tries == b"1" and 88_000 < life <= 88_400 for tries, life in counts)


async def test_a_run_s_end_drops_what_finish_job_drops(arq_redis: ArqRedis) -> None:
    """The release of a run's slot ends its entry as arq's ``finish_job`` does for a job
    that finished with no result kept: its call, try count and in-progress mark are gone,
    and it is off the queue and the abort set; the slot goes to the next job, in the same
    script. arq's own ``finish_job`` on a twin entry leaves the same."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    await queue.register_worker("w", 1, 60)
    ours, next_job = uuid.uuid4().hex, uuid.uuid4().hex
    assert await queue.enqueue(Waiting(ours, 1))
    assert await queue.enqueue(Waiting(next_job, 1))  # waits: the one slot is taken
    ours_id, theirs_id = keys.arq_job_id(ours, 1), f"{namespace}-theirs"
    await arq_redis.enqueue_job(
        keys.RUN_JOB_TASK, ours, _job_id=theirs_id, _queue_name=keys.queue_name(namespace)
    )
    for arq_id in (ours_id, theirs_id):  # as a start, arq's read of the call and an abort
        kept = stored(arq_id)
        await arq_redis.psetex(kept.in_progress, 60_000, b"1")
        await arq_redis.incr(kept.tries)
        await arq_redis.zadd(abort_jobs_ss, {arq_id: 1})
    worker = Worker(
        functions=[func(_nothing, name=keys.RUN_JOB_TASK)],
        redis_pool=arq_redis,
        queue_name=keys.queue_name(namespace),
        keep_result=0,
        handle_signals=False,
    )
    await worker.finish_job(theirs_id, True, None, None, False, None, None)
    handed = await queue.finished(ours, 1, done=ours_id)

    assert handed == [Handed(keys.arq_job_id(next_job, 1))]  # the slot went to the next job
    assert await queue.scheduler.in_flight() == {next_job: 1}
    for arq_id in (ours_id, theirs_id):
        kept = stored(arq_id)
        assert await arq_redis.exists(kept.call, kept.tries, kept.in_progress) == 0, arq_id
        assert await arq_redis.zscore(keys.queue_name(namespace), arq_id) is None, arq_id
        assert await arq_redis.zscore(abort_jobs_ss, arq_id) is None, arq_id


async def test_the_release_starts_the_next_entry_for_the_worker_as_start_would(
    arq_redis: ArqRedis,
) -> None:
    """With the in-progress mark's life, the script that releases a run's slot starts the
    next job's entry for that worker: its call stored as enqueue_job stores it, marked in
    progress as the start script marks it, try 1 counted with arq's expiry, and not queued.
    An entry whose id arq has seen is queued for a start by name, as before."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    await queue.register_worker("w", 1, 60)
    first, fresh, seen = (uuid.uuid4().hex for _ in range(3))
    for job_id in (first, fresh, seen):
        assert await queue.enqueue(Waiting(job_id, 1))
    (handed,) = await queue.finished(first, 1, done=keys.arq_job_id(first, 1), start_ms=60_000)
    entry = stored(keys.arq_job_id(fresh, 1))
    assert handed.arq_id == keys.arq_job_id(fresh, 1) and handed.started > 0
    assert await arq_redis.get(entry.call) == handed.call
    assert deserialize_job_raw(handed.call, deserializer=redis_adapter.load_call)[:3] == (
        keys.RUN_JOB_TASK,
        [fresh],
        {},
    )
    assert 50_000 < await arq_redis.pttl(entry.in_progress) <= 60_000  # 60 s, less the wait
    assert await arq_redis.get(entry.tries) == b"1"
    assert 88_000 < await arq_redis.ttl(entry.tries) <= 88_400
    assert await arq_redis.zscore(keys.queue_name(namespace), handed.arq_id) is None
    assert await queue.scheduler.in_flight() == {fresh: 1}

    await arq_redis.set(stored(keys.arq_job_id(seen, 1)).tries, b"1")  # a try counted before
    (handed,) = await queue.finished(fresh, 1, done=keys.arq_job_id(fresh, 1), start_ms=60_000)
    assert handed == Handed(keys.arq_job_id(seen, 1))
    assert await arq_redis.zscore(keys.queue_name(namespace), handed.arq_id) is not None


async def test_an_entry_the_release_started_runs_as_the_slot_frees_with_no_start(
    arq_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that ends hands its slot to the next job's entry, which the release started
    for this worker: it runs as the slot frees, with try 1 and its call, and the worker
    sends no start script and no read of its own for it."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    await queue.register_worker("w", 1, 60)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    for job_id in (first, second):
        assert await queue.enqueue(Waiting(job_id, 1))
    ran: list[tuple[str, int]] = []
    done = asyncio.Event()
    worker: WakeableWorker | None = None

    async def run(ctx: dict[str, Any], job_id: str) -> None:
        ran.append((job_id, ctx["job_try"]))
        assert worker is not None
        if job_id == first:
            handed = await queue.finished(
                first, 1, done=keys.arq_job_id(first, 1), start_ms=worker.start_mark_ms
            )
            assert handed is not None and handed[0].started
            worker.run_when_free(handed[0].arq_id, handed[0].started, handed[0].call)
        else:
            done.set()

    worker = _job_worker(arq_redis, namespace, run, max_jobs=1, scripts=True, leave_queue=True)
    starts = _count_starts(worker, monkeypatch)
    loop = asyncio.create_task(worker.poll_forever())
    try:
        worker.wake([keys.arq_job_id(first, 1).encode()])
        await asyncio.wait_for(done.wait(), 10)
        assert ran == [(first, 1), (second, 1)]
        # the first read of the queue at start-up found the first entry, or the wake-up did
        assert all(keys.arq_job_id(second, 1).encode() not in ids for ids in starts)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


async def test_a_stopping_worker_gives_back_the_entries_started_for_it(
    arq_redis: ArqRedis,
) -> None:
    """A worker that stops before running an entry a release started for it puts it back
    on the queue unstarted, where another worker's start runs it as its first try; a
    stopping worker is not handed started entries."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    await queue.register_worker("w", 1, 60)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    for job_id in (first, second):
        assert await queue.enqueue(Waiting(job_id, 1))
    ran: list[tuple[str, int]] = []

    async def run(ctx: dict[str, Any], job_id: str) -> None:
        ran.append((job_id, ctx["job_try"]))

    def worker() -> WakeableWorker:
        return _job_worker(arq_redis, namespace, run, scripts=True, leave_queue=True)

    stopping, other = worker(), worker()
    (handed,) = await queue.finished(
        first, 1, done=keys.arq_job_id(first, 1), start_ms=stopping.start_mark_ms
    )
    assert handed.started
    stopping.run_when_free(handed.arq_id, handed.started, handed.call)
    stopping.allow_pick_jobs = False
    assert stopping.start_mark_ms == 0
    await stopping.give_back_started()
    entry = stored(handed.arq_id)
    assert await arq_redis.exists(entry.in_progress, entry.tries) == 0
    assert await arq_redis.zscore(keys.queue_name(namespace), handed.arq_id) == handed.started
    await other.start_jobs([handed.arq_id.encode()])
    await asyncio.gather(*other.tasks.values())
    assert ran == [(second, 1)]


async def test_an_entry_dispatched_while_a_worker_idles_is_started_for_it(
    arq_redis: ArqRedis,
) -> None:
    """A worker's slots that idle are listed; a job dispatched then is started for the
    worker at the head of the list (its call stored, marked in progress with that worker's
    mark, try 1, not queued) and given to it on its own channel, after its change; with no
    slot listed, it is queued and every worker is woken. A run that ends with nothing
    handed on lists its slot again; a worker no longer registered is passed over, and one
    that leaves takes its slots off the list."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    idle = keys.idle_slots(namespace)
    pubsub = arq_redis.pubsub()
    channels = [keys.events_channel(namespace), keys.wake_channel(namespace)]
    channels += [keys.worker_wake_channel(namespace, w) for w in ("w", "gone")]
    await pubsub.subscribe(*channels)
    for _ in channels:
        await pubsub.get_message(timeout=5)  # the subscriptions' confirmations

    async def said() -> dict[str, list[bytes]]:
        """What was published since, by channel."""
        heard: dict[str, list[bytes]] = {}
        while message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2):
            heard.setdefault(message["channel"].decode(), []).append(message["data"])
        return heard

    try:
        await queue.register_worker("w", 4, 60, idle=1, start_ms=60_000)
        assert await arq_redis.lrange(idle, 0, -1) == [b"w"]
        a, b, c = (uuid.uuid4().hex for _ in range(3))
        assert await queue.enqueue(Waiting(a, 1), EVENT)
        entry_a = keys.arq_job_id(a, 1)
        kept = stored(entry_a)
        assert 50_000 < await arq_redis.pttl(kept.in_progress) <= 60_000  # the worker's mark
        assert await arq_redis.get(kept.tries) == b"1"
        heard = await said()
        assert list(heard) == [keys.events_channel(namespace), channels[2]]  # in this order
        started, named = heard[channels[2]][0].decode().split(" ")
        assert named == entry_a and heard[channels[0]] == [EVENT]
        assert await arq_redis.get(kept.call) == Handed(entry_a, int(started)).call
        # on the queue too, due a second later, marked for that worker: its own read finds
        # it should the message be lost
        score = await arq_redis.zscore(keys.queue_name(namespace), entry_a)
        assert score == int(started) + 1000
        assert await arq_redis.get(kept.in_progress) == b"w"
        assert await arq_redis.llen(idle) == 0

        # no slot listed: queued, and every worker woken
        assert await queue.enqueue(Waiting(b, 1))
        assert await said() == {keys.wake_channel(namespace): [keys.arq_job_id(b, 1).encode()]}
        assert await arq_redis.zscore(keys.queue_name(namespace), keys.arq_job_id(b, 1))

        # a worker whose registration lapsed is passed over; a run that ends with nothing
        # handed on lists its slot
        await queue.register_worker("gone", 1, 0, idle=1, start_ms=60_000)
        handed = await queue.finished(a, 1, done=entry_a, start_ms=60_000, worker="w")
        assert handed == [] and await arq_redis.lrange(idle, 0, -1) == [b"gone", b"w"]
        assert await queue.enqueue(Waiting(c, 1))
        heard = await said()
        assert list(heard) == [channels[2]]
        assert heard[channels[2]][0].endswith(b" " + keys.arq_job_id(c, 1).encode())
        assert await arq_redis.llen(idle) == 0

        # a worker that leaves takes its slots off the list
        await queue.register_worker("w", 4, 60, idle=2, start_ms=60_000)
        assert await arq_redis.lrange(idle, 0, -1) == [b"w", b"w"]
        await queue.register_worker("w", 0, 60, idle=0)
        assert await arq_redis.llen(idle) == 0
    finally:
        await pubsub.aclose()


async def test_a_worker_s_start_takes_its_idle_slots_off_the_list(arq_redis: ArqRedis) -> None:
    """Entries a worker starts itself (woken, or read off the queue) take as many of its
    slots off the list of idle ones; other workers' stay."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    idle = keys.idle_slots(namespace)
    jobs = [uuid.uuid4().hex for _ in range(2)]
    for job_id in jobs:
        assert await queue.enqueue(Waiting(job_id, 1))  # no worker yet: they wait
    ran: list[str] = []

    async def run(ctx: dict[str, Any], job_id: str) -> None:
        ran.append(job_id)

    worker = _job_worker(
        arq_redis,
        namespace,
        run,
        scripts=True,
        leave_queue=True,
        worker_id="w",
        idle_slots=idle,
        max_jobs=4,
    )
    await queue.register_worker("w", 4, 60)  # dispatched to the queue: no slot was said idle
    await arq_redis.rpush(idle, "other", "w", "w", "w")
    await worker.start_jobs([keys.arq_job_id(job_id, 1).encode() for job_id in jobs])
    await asyncio.gather(*worker.tasks.values())
    assert sorted(ran) == sorted(jobs)
    assert await arq_redis.lrange(idle, 0, -1) == [b"other", b"w"]


@needs_patches("arq_wakeups", "arq_scripts")
async def test_a_job_created_while_the_worker_idles_runs_with_no_start_of_its_own(
    settings_factory: Any, fake_redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker lists its slots as idle; a job created then is started for it by the script
    that schedules the job and handed to it on its own channel: it runs with no start script
    and no read of the queue for it, and its slot is listed again as the run ends. (No
    read of the queue on the timer here: one could start the entry first, as it does when
    the message is lost.)"""
    async with (
        open_runtime(settings_factory(worker_poll_delay=600), fake_redis_server) as runtime,
        running_worker(runtime) as worker,
    ):
        deps, redis = runtime.deps, runtime.redis
        idle = keys.idle_slots(deps.settings.redis_namespace)
        starts = _count_starts(worker, monkeypatch)
        mine = keys.worker_wake_channel(deps.settings.redis_namespace, worker.worker_id)

        async def listed() -> bool:
            return await redis.llen(idle) == worker.max_jobs

        async def ready() -> bool:
            ((_, subscribed),) = await redis.pubsub_numsub(mine)
            return subscribed == 1 and await listed()

        await eventually(ready)
        job = await create_image_job(deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)

        async def succeeded() -> bool:
            found = await get_job(deps, job.id, SYSTEM)
            return found is not None and found.status is JobStatus.SUCCEEDED

        await eventually(succeeded)
        await eventually(listed)
    entry = keys.arq_job_id(job.id, job.version).encode()
    assert all(entry not in job_ids for job_ids in starts)


@needs_patches("arq_scripts")
async def test_running_goes_out_as_the_claim_commits_before_arq_runs_the_job(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker claims a job's row as its entry starts, and the claim publishes RUNNING
    as it commits: arq's own steps before the job's function (held here) are not on the
    path of that change."""
    deps = runtime.deps
    gate = asyncio.Event()
    run_job = WakeableWorker.run_job

    async def held(worker: WakeableWorker, job_id: str, score: int) -> None:
        await gate.wait()
        await run_job(worker, job_id, score)

    monkeypatch.setattr(WakeableWorker, "run_job", held)
    pubsub = runtime.redis.pubsub()
    await pubsub.subscribe(keys.events_channel(deps.settings.redis_namespace))

    async def reaches(job_id: str, status: str) -> None:
        async with asyncio.timeout(10):
            async for message in pubsub.listen():
                if message["type"] == "message":
                    event = json.loads(message["data"])
                    if (event["id"], event["status"]) == (job_id, status):
                        return

    try:
        async with running_worker(runtime):
            job = await create_image_job(deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)
            await reaches(job.id, "RUNNING")
            assert not gate.is_set()
            gate.set()
            await reaches(job.id, "SUCCEEDED")
    finally:
        await pubsub.aclose()


async def test_an_entry_started_for_a_worker_whose_message_is_lost_runs_there_once(
    arq_redis: ArqRedis,
) -> None:
    """An entry started for an idle worker whose message never came is started by that
    worker's own read of the queue, as its first try; another worker's start passes it
    over, and the message coming late does not run it again."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    ran: list[tuple[str, int]] = []

    async def run(ctx: dict[str, Any], job_id: str) -> None:
        ran.append((job_id, ctx["job_try"]))

    def worker(worker_id: str) -> WakeableWorker:
        return _job_worker(
            arq_redis,
            namespace,
            run,
            scripts=True,
            leave_queue=True,
            worker_id=worker_id,
            idle_slots=keys.idle_slots(namespace),
        )

    mine, other = worker("w"), worker("other")
    await queue.register_worker("w", 1, 60, idle=1, start_ms=mine.start_mark_ms)
    await queue.register_worker("other", 1, 60)
    job_id = uuid.uuid4().hex
    assert await queue.enqueue(Waiting(job_id, 1))  # started for "w"; its message is lost
    entry = keys.arq_job_id(job_id, 1)
    await mine.start_jobs([entry.encode()])  # not due for a second yet: not started
    assert not mine.tasks
    # a second later (its score, as if it had passed)
    await arq_redis.zadd(keys.queue_name(namespace), {entry: 1})
    await other.start_jobs([entry.encode()])
    assert other.job_counter == 0 and not other.tasks
    await mine.start_jobs([entry.encode()])
    mine.run_now(entry, 1, b"")  # the message, late: dropped
    assert not mine._started_for_me
    await asyncio.gather(*mine.tasks.values())
    assert ran == [(job_id, 1)]
    assert await arq_redis.zscore(keys.queue_name(namespace), entry) is None


async def test_an_entry_a_worker_runs_is_not_started_again_by_its_read_of_the_queue(
    arq_redis: ArqRedis,
) -> None:
    """An entry started for an idle worker waits on the queue, marked for that worker,
    while the worker runs it (its message came): the worker's read of the queue, once the
    entry is due there, does not start it a second time."""
    namespace = f"test-{uuid.uuid4().hex}"
    queue = JobQueue(arq_redis, namespace, scripts=True)
    ran: list[str] = []
    running, may_end = asyncio.Event(), asyncio.Event()

    async def run(ctx: dict[str, Any], job_id: str) -> None:
        ran.append(job_id)
        running.set()
        await may_end.wait()

    worker = _job_worker(
        arq_redis,
        namespace,
        run,
        scripts=True,
        leave_queue=True,
        worker_id="w",
        idle_slots=keys.idle_slots(namespace),
    )
    await queue.register_worker("w", 2, 60, idle=1, start_ms=worker.start_mark_ms)
    job_id = uuid.uuid4().hex
    assert await queue.enqueue(Waiting(job_id, 1))  # started for "w"
    entry = keys.arq_job_id(job_id, 1)
    score = int(await arq_redis.zscore(keys.queue_name(namespace), entry) or 0)
    loop = asyncio.create_task(worker.poll_forever())
    try:
        worker.run_now(entry, score - 1000, Handed(entry, score - 1000).call)  # the message
        await asyncio.wait_for(running.wait(), 10)
        await arq_redis.zadd(keys.queue_name(namespace), {entry: 1})  # due there now
        await worker.start_jobs([entry.encode()])
        assert list(worker.tasks) == [entry]
        may_end.set()
        await asyncio.gather(*worker.tasks.values())
        assert ran == [job_id]
    finally:
        may_end.set()
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


@needs_patches("arq_wakeups", "arq_scripts")
async def test_a_run_handed_back_as_its_worker_stops_leaves_no_entry_on_the_queue(
    settings_factory: Any, fake_redis_server: Any
) -> None:
    """A job started for an idle worker waits on the queue while it runs there (for that
    worker's read should the message be lost). When the worker stops and hands the run
    back, the entry leaves the queue with its call: left there, another worker's read would
    start it with no call, and the claim it begins would lapse (a lease and an attempt)."""
    settings = settings_factory(worker_poll_delay=600)
    async with open_runtime(settings, fake_redis_server) as runtime:
        deps, redis = runtime.deps, runtime.redis
        queue = keys.queue_name(settings.redis_namespace)
        async with running_worker(runtime, grace=0) as worker:
            mine = keys.worker_wake_channel(settings.redis_namespace, worker.worker_id)

            async def ready() -> bool:
                ((_, subscribed),) = await redis.pubsub_numsub(mine)
                idle = await redis.llen(keys.idle_slots(settings.redis_namespace))
                return subscribed == 1 and idle == worker.max_jobs

            await eventually(ready)
            job = await create_image_job(
                deps, NewImageJob(prompt="x", provider="mock", extra={"delayMs": 60_000}), SYSTEM
            )
            entry = keys.arq_job_id(job.id, job.version)
            # started for the idle worker by the add that queued it: it waits on the queue
            # as it runs there (read now, before it falls due there for the worker's own read)
            assert await redis.zscore(queue, entry) is not None

            async def running() -> bool:
                found = await get_job(deps, job.id, SYSTEM)
                return found is not None and found.status is JobStatus.RUNNING

            await eventually(running)
        handed_back = await get_job(deps, job.id, SYSTEM)
        assert handed_back is not None and handed_back.status is JobStatus.QUEUED
        assert await redis.zscore(queue, entry) is None
        assert await redis.exists(stored(entry).call) == 0
