"""The scheduler: which waiting job starts next, and when, across every api and worker.

Order: among jobs due to run, the highest priority first; within a priority, starts go
round the owners that have jobs waiting, one each in turn; within an owner, round its
groups; within a group, first come first served. A cap on the jobs an owner (its key's
max_running) or a group (``GQL_MEDIA_MAX_RUNNING_PER_GROUP``) may have running holds that
owner or group back and nobody else: it leaves the rings until one of its jobs ends.

How: jobs wait here, in Redis, not on arq's queue. Workers register their slots; a job is
handed to them (*dispatched*: put on arq's queue, where a free slot starts it at once) only
while fewer jobs are in flight than there are slots, so arq's queue never holds more than
the free slots and the order is decided here, at the moment a slot frees. Every change
that can free a slot or make a job due (a job added, a run ended, a worker registered, a
cap changed) dispatches in the same script, so a free slot does not wait for a timer.

Redis keeps only what PostgreSQL can rebuild: the waiting jobs are the QUEUED rows, the
jobs in flight the RUNNING ones (see ``services.scheduling``).

Each call is one script (one round trip, atomic); picking the next job costs a few sorted
set operations whatever the number of waiting jobs, owners and groups.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gql_media.adapters.scheduling import lua

PRIORITY_MIN = lua.PRIORITY_MIN
PRIORITY_MAX = lua.PRIORITY_MAX
NO_OWNER = "-"  # the owner of jobs made with auth off


@dataclass(frozen=True, slots=True)
class Waiting:
    """A job to schedule: one version of its row, with what orders it."""

    job_id: str
    version: int
    priority: int = 0
    owner: str | None = None
    group: str | None = None
    due_at: float = 0.0  # when it may start (epoch seconds); 0: now
    # its owner's cap on jobs running at once: 0 for none, None to leave it as it is
    max_running: int | None = None


@dataclass(frozen=True, slots=True)
class Dispatched:
    """A job handed to the workers: put it on arq's queue (``queued``: the scheduler's
    hand-over did, or started it for a worker; ``started``: the time, in ms, its entry was
    stored and started at for the caller; 0 when it was not)."""

    job_id: str
    version: int
    queued: bool = False
    started: int = 0


class HandOver(Protocol):
    """What the scripts do with the jobs they dispatch, in the same round trip
    (``adapters.arq_patch.HandOver``): ``lua`` defines ``hand_over(out)``, which reads its
    arguments (``args``) from ARGV[5] on."""

    @property
    def lua(self) -> str: ...

    def args(
        self,
        keep: int,
        events: Sequence[bytes],
        done: Sequence[str] = (),
        start_ms: int = 0,
        worker: str = "",
        idle: int = -1,
    ) -> list[str | int | bytes]:
        """The hand-over's arguments: the first ``keep`` jobs queued are the caller's to
        start (with ``start_ms``, started for it where they can be), ``events`` are
        published, the queue's entries ``done`` are ended; ``worker``, the calling worker,
        has ``idle`` slots idle (-1: as counted)."""
        ...


@dataclass(frozen=True, slots=True)
class Estimates:
    """Where waiting jobs stand, and how fast jobs start."""

    # per job asked about: how many jobs start before it in the current order, if nothing
    # arrives and no cap holds anyone back (0: handed to the workers; None: not due yet, or
    # not waiting here)
    positions: list[int | None]
    starts_per_second: float  # over the last minute or so, across every worker


def _owner(owner: str | None) -> str:
    return owner or NO_OWNER


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Scheduler:
    """The scheduler's state in Redis under ``<namespace>:sched:``."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        group_cap: int | None = None,
        clock: Callable[[], float] = time.time,
        hand_over: HandOver | None = None,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._prefix = f"{namespace}:sched:"
        self._group_cap = str(group_cap or 0)
        self._hand_over = hand_over

        def script(text: str) -> Any:
            handing = hand_over.lua if hand_over is not None else lua.NO_HAND_OVER
            return redis.register_script(text.replace(lua.HAND_OVER_SLOT, handing))

        self._add = script(lua.ADD)
        self._release = script(lua.RELEASE)
        self._remove = script(lua.REMOVE)
        self._register = script(lua.REGISTER)
        self._occupy = script(lua.OCCUPY)
        self._set_cap = script(lua.SET_CAP)
        self._positions = script(lua.POSITIONS)

    @property
    def hands_over(self) -> bool:
        """Whether the scripts put what they dispatch on arq's queue themselves."""
        return self._hand_over is not None

    async def _run(
        self,
        script: object,
        args: Sequence[str | int],
        *,
        keep: int = 0,
        events: Sequence[bytes] = (),
        done: Sequence[str] = (),
        start_ms: int = 0,
        worker: str = "",
        idle: int = -1,
    ) -> list[Dispatched]:
        now = _ms(self._clock())
        handing = (
            ()
            if self._hand_over is None
            else self._hand_over.args(keep, events, done, start_ms, worker, idle)
        )
        head = [self._prefix, now, self._group_cap, len(handing), *handing]
        out = await script(args=[*head, *args])  # type: ignore[operator]
        return [
            Dispatched(
                _text(out[i]), int(out[i + 1]), int(out[i + 2]) > 0, now if out[i + 2] == 2 else 0
            )
            for i in range(0, len(out or ()), 3)
        ]

    async def add(
        self, jobs: Sequence[Waiting], *, events: Sequence[bytes] = ()
    ) -> list[Dispatched]:
        """Jobs to wait their turn (a job waiting or in flight at this version or a newer
        one is left as it is); returns what is dispatched now, these or others. With a
        hand-over, ``events`` are published in the same script."""
        args: list[str | int] = []
        for job in jobs:
            args += [
                job.job_id,
                job.priority,
                job.version,
                _owner(job.owner),
                job.group or "",
                _ms(job.due_at),
                "" if job.max_running is None else str(job.max_running),
            ]
        return await self._run(self._add, args, events=events)

    async def release(
        self,
        runs: Sequence[tuple[str, int]],
        *,
        keep: int = 0,
        done: Sequence[str] = (),
        events: Sequence[bytes] = (),
        start_ms: int = 0,
        worker: str = "",
    ) -> list[Dispatched]:
        """Runs (job id, version) that ended, or were lost with their worker: their slots
        and caps free, unless the job is in flight at another version by then. With a
        hand-over, the first ``keep`` jobs queued are not woken for: the caller starts them
        (with ``start_ms``, the script starts them for it where it can: ``Dispatched.started``);
        the queue's entries ``done`` are ended and ``events`` published; ``worker`` is the
        calling worker (``HandOver.args``)."""
        runs_ = [x for run in runs for x in run]
        return await self._run(
            self._release,
            runs_,
            keep=keep,
            done=done,
            events=events,
            start_ms=start_ms,
            worker=worker,
        )

    async def remove(self, job_ids: Sequence[str]) -> list[Dispatched]:
        """Jobs that will not run (canceled, past their deadline): out of the line, or out
        of flight if they were handed to the workers."""
        return await self._run(self._remove, list(job_ids))

    async def register(
        self, worker_id: str, slots: int, ttl: float, *, idle: int = -1, start_ms: int = 0
    ) -> list[Dispatched]:
        """A worker's slots count for ``ttl`` seconds (call again before then); 0 slots
        unregisters it. Returns what is dispatched now. With a hand-over, ``idle`` (not -1)
        of its slots idle now, and entries are started for them with in-progress marks of
        ``start_ms``."""
        lapses = _ms(self._clock() + ttl)
        return await self._run(
            self._register,
            [worker_id, slots, lapses],
            start_ms=start_ms,
            worker=worker_id if idle >= 0 else "",
            idle=idle,
        )

    async def dispatch(self) -> list[Dispatched]:
        """Hand waiting jobs to free slots (jobs that became due meanwhile, too)."""
        return await self._run(self._release, [])

    async def set_cap(self, owner: str | None, max_running: int | None) -> list[Dispatched]:
        """Change an owner's cap on jobs running at once (None: no cap)."""
        return await self._run(self._set_cap, [_owner(owner), max_running or 0])

    async def occupy(self, jobs: Sequence[Waiting]) -> None:
        """Jobs found running when the state is rebuilt: they hold slots and caps."""
        args: list[str | int] = []
        for job in jobs:
            args += [job.job_id, job.priority, job.version, _owner(job.owner), job.group or ""]
        await self._run(self._occupy, args)

    async def estimates(self, job_ids: Sequence[str]) -> Estimates:
        """Each job's position (``positions``) and the recent rate of starts, in one round
        trip; each job costs a pass over the owners with jobs waiting at its priority and
        the groups of its owner."""
        now = _ms(self._clock())
        out = await self._positions(args=[self._prefix, now, self._group_cap, 0, *job_ids])
        starts, span_ms = int(out[0]), int(out[1])
        rate = starts * 1000 / span_ms if span_ms > 0 else 0.0
        return Estimates([None if n < 0 else int(n) for n in out[2:]], rate)

    async def in_flight(self) -> dict[str, int]:
        """The jobs handed to the workers and not released: job id -> version."""
        flight: dict[bytes, bytes] = await self._redis.hgetall(self._prefix + "flight")  # type: ignore[misc]
        return {_text(j): int(json.loads(w)[1]) for j, w in flight.items()}

    async def claim_rebuild(self) -> bool:
        """True once per life of the scheduler's state in Redis (at first, and after Redis
        lost it): the caller then rebuilds it from the database."""
        return bool(await self._redis.set(self._prefix + "epoch", b"1", nx=True))

    async def history(self) -> str | None:
        """The replication id of the Redis holding the state. It changes when that Redis
        restarts or a replica is promoted in its place (a failover), which may have lost the
        last writes; None where it cannot be told (the in-process stand-in has no INFO)."""
        try:
            info = await self._redis.info("replication")
        except ResponseError:
            return None
        replid = info.get("master_replid")
        return str(replid) if replid else None

    async def standing(self, job_ids: Sequence[str]) -> list[str | None]:
        """For each job: "waiting", "in flight" or None (not here)."""
        if not job_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._prefix + "where", list(job_ids))
            pipe.hmget(self._prefix + "flight", list(job_ids))
            waiting, flight = await pipe.execute()
        return [
            "waiting" if w is not None else "in flight" if f is not None else None
            for w, f in zip(waiting, flight, strict=True)
        ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
