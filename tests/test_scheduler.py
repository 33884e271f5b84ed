"""The scheduler's order, caps, slots and due times, on Redis itself (and on the embedded
stand-in): every test drives the scripts through ``Scheduler`` and reads what they hand to
the workers."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from gql_media.adapters.scheduling import Dispatched, Scheduler, Waiting, lua
from tests.conftest import TEST_REDIS_URL

BACKENDS = [
    "fake",
    pytest.param(
        "redis",
        marks=[
            pytest.mark.integration,
            pytest.mark.skipif(not TEST_REDIS_URL, reason="set GQL_MEDIA_TEST_REDIS_URL"),
        ],
    ),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "fake":
        client: Any = fakeredis.FakeAsyncRedis()
    else:
        client = Redis.from_url(str(TEST_REDIS_URL))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(redis: Any, clock: Clock, group_cap: int | None = None) -> Scheduler:
    namespace = f"gql_media_test_{uuid.uuid4().hex[:10]}"
    return Scheduler(redis, namespace, group_cap=group_cap, clock=clock)


def ids(dispatched: list[Dispatched]) -> list[str]:
    return [d.job_id for d in dispatched]


def jobs(owner: str, n: int, group: str | None = None, priority: int = 0) -> list[Waiting]:
    return [
        Waiting(f"{owner}-{group or ''}-{priority}-{i}", 1, priority, owner, group)
        for i in range(n)
    ]


async def test_nothing_starts_without_slots_and_a_slot_takes_the_first(
    redis: Any, clock: Clock
) -> None:
    s = make(redis, clock)
    assert await s.add(jobs("a", 3)) == []
    assert ids(await s.register("w1", 1, ttl=10)) == ["a--0-0"]
    assert await s.dispatch() == []  # the one slot is taken
    assert ids(await s.release([("a--0-0", 1)])) == ["a--0-1"]
    assert ids(await s.release([("a--0-1", 1)])) == ["a--0-2"]
    assert await s.release([("a--0-2", 1)]) == []
    assert await s.standing(["a--0-0", "a--0-2"]) == [None, None]


async def test_a_higher_priority_starts_next_behind_a_thousand(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    await s.register("w1", 2, ttl=10)  # two slots, busy with the first two
    first = await s.add(jobs("a", 1000))
    assert len(first) == 2
    assert await s.add([Waiting("urgent", 1, 5, "a")]) == []
    assert ids(await s.release([(first[0].job_id, 1)])) == ["urgent"]
    assert ids(await s.release([(first[1].job_id, 1)])) == ["a--0-2"]


async def test_a_second_owner_starts_among_the_next_behind_a_thousand(
    redis: Any, clock: Clock
) -> None:
    s = make(redis, clock)
    await s.register("w1", 4, ttl=10)
    busy = await s.add(jobs("a", 1000))
    await s.add([Waiting("b-job", 1, 0, "b")])
    following = [(await s.release([(busy[i].job_id, 1)]))[0].job_id for i in range(2)]
    assert following[0] == "b-job"  # an owner that starts waiting takes the next turn
    # then the owners take turns while both wait
    await s.add(jobs("b", 3, group="more"))
    order = [(await s.release([(d, 1)])) for d in following]
    owners = [d[0].job_id[0] for d in order]
    assert sorted(owners) == ["a", "b"]


async def test_groups_of_one_owner_take_turns(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    await s.register("w1", 1, ttl=10)
    (running,) = await s.add(jobs("a", 1000, group="u1"))
    await s.add(jobs("a", 2, group="u2"))
    starts = []
    for _ in range(4):
        (running,) = await s.release([(running.job_id, 1)])
        starts.append(running.job_id.split("-")[1])
    assert starts == ["u2", "u1", "u2", "u1"]  # u2 takes the next turn, then they alternate


async def test_first_come_first_served_within_a_group(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    await s.add(jobs("a", 5, group="g"))
    started = ids(await s.register("w1", 5, ttl=10))
    assert started == [f"a-g-0-{i}" for i in range(5)]


async def test_an_owners_cap_holds_back_only_that_owner(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    capped = [Waiting(f"a{i}", 1, 0, "a", max_running=2) for i in range(10)]
    await s.add(capped + jobs("b", 10))
    started = ids(await s.register("w1", 8, ttl=10))
    assert Counter(j[0] for j in started) == {"a": 2, "b": 6}
    # a slot of b's frees: b runs on, a stays at its cap
    freed = next(j for j in started if j.startswith("b"))
    assert ids(await s.release([(freed, 1)]))[0].startswith("b")
    # a slot of a's frees: a's next job takes it
    freed = next(j for j in started if j.startswith("a"))
    assert ids(await s.release([(freed, 1)])) == ["a2"]


async def test_raising_a_cap_lets_waiting_jobs_start(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    await s.register("w1", 8, ttl=10)
    started = await s.add([Waiting(f"a{i}", 1, 0, "a", max_running=1) for i in range(4)])
    assert ids(started) == ["a0"]
    assert ids(await s.set_cap("a", 3)) == ["a1", "a2"]
    assert ids(await s.set_cap("a", None)) == ["a3"]


async def test_a_groups_cap_holds_back_only_that_group(redis: Any, clock: Clock) -> None:
    s = make(redis, clock, group_cap=1)
    await s.add(jobs("a", 5, group="u1") + jobs("a", 5, group="u2"))
    started = ids(await s.register("w1", 8, ttl=10))
    assert sorted(j.split("-")[1] for j in started) == ["u1", "u2"]
    assert ids(await s.release([(started[0], 1)])) == [started[0][:-1] + "1"]


async def test_jobs_due_later_wait_for_their_time(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    await s.register("w1", 4, ttl=100)
    later = Waiting("later", 1, 0, "a", due_at=clock.now + 30)
    assert await s.add([later]) == []
    assert await s.standing(["later"]) == ["waiting"]
    clock.now += 31
    assert ids(await s.dispatch()) == ["later"]


async def test_removed_jobs_leave_the_line_and_free_their_slots(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    await s.register("w1", 1, ttl=10)
    (running,) = await s.add(jobs("a", 3))
    assert await s.remove(["a--0-1"]) == []  # waiting: out of the line
    assert ids(await s.remove([running.job_id])) == ["a--0-2"]  # in flight: slot frees
    assert await s.standing(["a--0-1", running.job_id, "a--0-2"]) == [None, None, "in flight"]


async def test_a_job_is_scheduled_once_per_version(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    await s.register("w1", 1, ttl=10)
    assert ids(await s.add([Waiting("j", 1)])) == ["j"]
    assert await s.add([Waiting("j", 1)]) == []  # the same version again: nothing new
    await s.add([Waiting("k", 1)])
    # a new version of a job in flight (its worker was lost): the old run's slot frees
    started = await s.add([Waiting("j", 2)])
    assert started == [Dispatched("k", 1)]
    assert await s.standing(["j"]) == ["waiting"]


async def test_slots_lapse_with_their_worker(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    await s.register("w1", 1, ttl=5)
    clock.now += 6
    assert await s.add(jobs("a", 1)) == []
    assert ids(await s.register("w2", 1, ttl=5)) == ["a--0-0"]
    assert await s.register("w2", 0, ttl=5) == []  # unregistered


async def test_rebuilt_running_jobs_hold_their_slots_and_caps(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    await s.occupy([Waiting("r1", 3, 0, "a"), Waiting("r2", 1, 0, "b")])
    await s.add([Waiting("a1", 1, 0, "a", max_running=1), Waiting("b1", 1, 0, "b")])
    assert ids(await s.register("w1", 3, ttl=10)) == ["b1"]
    assert ids(await s.release([("r1", 3)])) == ["a1"]


async def test_random_traffic_keeps_caps_order_and_no_idle_slot(redis: Any, clock: Clock) -> None:
    """Random adds, releases and removals against invariants read off each step: no cap is
    ever exceeded, no slot idles while a job that may run waits, and no job starts while
    one of a higher priority that may run waits."""
    rng = random.Random(7)
    s = make(redis, clock, group_cap=3)
    slots = 6
    await s.register("w1", slots, ttl=1000)
    waiting: dict[str, Waiting] = {}
    flight: dict[str, Waiting] = {}
    caps = {"o0": 2, "o1": None, "o2": 1, "o3": None}

    def may_start(job: Waiting) -> bool:
        cap = caps[str(job.owner)]
        by_owner = sum(1 for f in flight.values() if f.owner == job.owner)
        by_group = sum(1 for f in flight.values() if (f.owner, f.group) == (job.owner, job.group))
        return (cap is None or by_owner < cap) and by_group < 3

    def started(out: list[Dispatched]) -> None:
        for d in out:
            job = waiting.pop(d.job_id)
            assert may_start(job), f"{job} started over a cap"
            higher = [w for w in waiting.values() if w.priority > job.priority and may_start(w)]
            assert not higher, f"{job} started before {higher[0]}"
            flight[d.job_id] = job
        assert len(flight) <= slots
        if len(flight) < slots:
            assert not [w for w in waiting.values() if may_start(w)], "a slot idles"

    for step in range(400):
        action = rng.random()
        if action < 0.5 or not flight:
            owner = rng.choice(list(caps))
            new = [
                Waiting(
                    f"j{step}-{i}",
                    1,
                    rng.choice([-1, 0, 0, 2]),
                    owner,
                    rng.choice(["u1", "u2", None]),
                    max_running=caps[owner],
                )
                for i in range(rng.randint(1, 4))
            ]
            waiting.update({w.job_id: w for w in new})
            started(await s.add(new))
        elif action < 0.9:
            done = rng.choice(list(flight))
            del flight[done]
            started(await s.release([(done, 1)]))
        elif waiting:
            gone = rng.choice(list(waiting))
            del waiting[gone]
            started(await s.remove([gone]))
    assert flight


async def test_the_end_of_an_older_run_leaves_a_newer_one_in_flight(
    redis: Any, clock: Clock
) -> None:
    s = make(redis, clock)
    await s.register("w1", 1, ttl=10)
    await s.add([Waiting("j", 1)])
    await s.add([Waiting("j", 2)])  # v1's worker was lost: v2 takes the slot
    await s.add([Waiting("k", 1)])
    assert await s.release([("j", 1)]) == []  # v1's worker ends late: v2 keeps its slot
    assert await s.in_flight() == {"j": 2}
    assert ids(await s.release([("j", 2)])) == ["k"]


async def test_positions_count_the_jobs_that_start_first(redis: Any, clock: Clock) -> None:
    """Without caps and arrivals, each waiting job's position is its index in the order the
    jobs then start in, one slot at a time."""
    rng = random.Random(11)
    s = make(redis, clock)
    backlog = [
        Waiting(
            f"j{i}",
            1,
            rng.choice([0, 0, 0, 1, -2]),
            f"o{rng.randrange(6)}",
            rng.choice(["g1", "g2", "g3", None]),
        )
        for i in range(300)
    ]
    for start in range(0, 300, 50):  # arriving in batches, rings turning meanwhile
        await s.add(backlog[start : start + 50])
    later = Waiting("later", 1, 0, "o1", due_at=clock.now + 60)
    await s.add([later])
    names = [w.job_id for w in backlog]
    expected = (await s.estimates([*names, "later", "unknown"])).positions
    assert expected[-2:] == [None, None]
    (running,) = await s.register("w1", 1, ttl=1000)
    assert (await s.estimates([running.job_id])).positions == [0]
    order = [running.job_id]
    while next_ := await s.release([(order[-1], 1)]):
        order.append(next_[0].job_id)
    assert len(order) == 300
    assert expected[:-2] == [order.index(name) for name in names]


async def test_the_rate_of_starts_counts_the_last_minute(redis: Any, clock: Clock) -> None:
    s = make(redis, clock)
    clock.now = 1_800_000_000.0  # the start of a 10 s bucket
    await s.add(jobs("a", 30))
    await s.register("w1", 12, ttl=1000)
    clock.now += 30
    estimates = await s.estimates(["a--0-29"])
    assert estimates.positions == [17]
    # the window: the current 10 s bucket and the five before it (from 20 s before the start)
    assert estimates.starts_per_second == pytest.approx(12 / 50)
    clock.now += 61  # a minute later, those starts no longer count
    assert (await s.estimates([])).starts_per_second == 0


async def test_a_job_added_alone_starts_at_once_as_the_picks_would_start_it(
    redis: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job added alone that finds nothing waiting, no cap reached and a slot free starts
    without entering the line (``starts_at_once``). Random traffic (single adds and batches,
    caps set and raised, groups at their cap, jobs due later, releases, removals, slots
    coming and going) through that scheduler and through one whose jobs always enter the
    line dispatches the same jobs at every step, leaves the same jobs in flight and gives
    every waiting job the same position."""
    line = "local function starts_at_once(p, o, g)\n"
    assert line in lua.ADD
    with monkeypatch.context() as patch:
        patch.setattr(lua, "ADD", lua.ADD.replace(line, line + "  do return false end\n"))
        full = make(redis, clock, group_cap=2)
    fast = make(redis, clock, group_cap=2)
    both = (fast, full)
    rng = random.Random(5)
    caps: dict[str, int | None] = {"o0": 1, "o1": None, "o2": 2}
    waiting: set[str] = set()
    flight: set[str] = set()
    started_alone = steps_with_a_line = 0

    async def each(call: Any) -> list[tuple[str, int]]:
        fast_out, full_out = [[(d.job_id, d.version) for d in await call(s)] for s in both]
        assert fast_out == full_out
        waiting.difference_update(j for j, _ in fast_out)
        flight.update(j for j, _ in fast_out)
        return fast_out

    for s in both:
        await s.register("w1", 2, ttl=1000)
    for step in range(600):
        clock.now += rng.choice([0, 0, 0.5, 3])
        action = rng.random()
        if action < 0.3 or not flight:
            owner = rng.choice(list(caps))
            if rng.random() < 0.3:
                caps[owner] = rng.choice([None, 1, 2, 3])
            new = [
                Waiting(
                    f"j{step}-{i}",
                    1,
                    rng.choice([0, 0, 1]),
                    owner,
                    rng.choice(["g1", "g2", None]),
                    due_at=clock.now + rng.choice([0, 0, 0, 0, 2]),
                    max_running=caps[owner],
                )
                for i in range(1 if rng.random() < 0.7 else rng.randint(2, 3))
            ]
            waiting.update(w.job_id for w in new)
            out = await each(lambda s, new=new: s.add(new))
            started_alone += len(new) == 1 and out == [(new[0].job_id, 1)]
        elif action < 0.8:
            done = rng.choice(sorted(flight))
            flight.discard(done)
            await each(lambda s, done=done: s.release([(done, 1)]))
        elif action < 0.88 and waiting:
            gone = rng.choice(sorted(waiting))
            waiting.discard(gone)
            await each(lambda s, gone=gone: s.remove([gone]))
        elif action < 0.94:
            owner = rng.choice(list(caps))
            caps[owner] = rng.choice([None, 1, 2])
            await each(lambda s, owner=owner: s.set_cap(owner, caps[owner]))
        else:
            slots = rng.choice([1, 2, 3])
            await each(lambda s, slots=slots: s.register("w1", slots, ttl=1000))
        assert await fast.in_flight() == await full.in_flight()
        names = sorted(waiting)
        assert (await fast.estimates(names)).positions == (await full.estimates(names)).positions
        steps_with_a_line += len(waiting) > 1
    assert started_alone > 20 and steps_with_a_line > 100, (started_alone, steps_with_a_line)
    # the job that started at once took no turn in the rings
    turns = [int(await redis.get(s._prefix + "turn") or 0) for s in both]
    assert turns[0] < turns[1]


async def test_a_cap_raised_by_a_new_job_starts_the_owners_older_jobs_first(
    redis: Any, clock: Clock
) -> None:
    s = make(redis, clock)
    await s.register("w1", 3, ttl=10)
    assert ids(await s.add([Waiting("a1", 1, 0, "a", max_running=1)])) == ["a1"]
    assert await s.add([Waiting("a2", 1, 0, "a", max_running=1)]) == []  # a's cap
    # nobody else waits, but a2 came first
    assert ids(await s.add([Waiting("a3", 1, 0, "a", max_running=3)])) == ["a2", "a3"]


async def test_a_turn_kept_at_a_cap_is_given_back_by_a_job_that_starts_at_once(
    redis: Any, clock: Clock
) -> None:
    """An owner's turn kept while it was at its cap is dropped when it next starts a job, as
    the pick of that job drops it: it does not put the owner ahead of those that waited
    meanwhile later on."""
    s = make(redis, clock)
    await s.register("w1", 2, ttl=10)
    # a1 starts; a2 is met at a's cap, a leaves the ring of owners keeping its turn
    assert ids(
        await s.add([Waiting("a1", 1, 0, "a", max_running=1), Waiting("a2", 1, 0, "a")])
    ) == ["a1"]
    await s.remove(["a2"])
    await s.release([("a1", 1)])
    assert ids(await s.add([Waiting("a3", 1, 0, "a", max_running=1)])) == ["a3"]
    assert ids(await s.add([Waiting("b1", 1, 0, "b")])) == ["b1"]
    await s.add([Waiting("b2", 1, 0, "b")])
    await s.release([("a3", 1)])  # b2 starts: its slot
    await s.add([Waiting("b3", 1, 0, "b")])
    await s.add([Waiting("a4", 1, 0, "a")])
    # b3 waited first: b's turn comes before a's
    assert ids(await s.release([("b1", 1)])) == ["b3"]
