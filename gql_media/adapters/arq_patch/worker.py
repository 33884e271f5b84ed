"""arq's Worker, woken to start its entries by name (see the package docstring)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, cast

from arq.connections import ArqRedis
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.exceptions import RedisError

from gql_media.adapters.arq_patch.scripts import START
from gql_media.adapters.redis import dump_call, load_call

log = logging.getLogger(__name__)


class _ReadAhead:
    """arq's ``run_job`` begins with one transaction: the stored call, the try count
    incremented, the count's expiry. The start script did that already; this stands for
    the worker's pool in that first use and gives ``run_job`` what the script read."""

    __slots__ = ("call", "unread", "tries")

    def __init__(self, call: bytes | None, tries: int) -> None:
        self.call, self.tries, self.unread = call, tries, True

    def pipeline(self, transaction: bool = True) -> _ReadAhead:
        return self

    async def __aenter__(self) -> _ReadAhead:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def get(self, key: str) -> _ReadAhead:
        return self

    def incr(self, key: str) -> _ReadAhead:
        return self

    def expire(self, key: str, seconds: int) -> _ReadAhead:
        return self

    async def execute(self) -> list[Any]:
        return [self.call, self.tries, True]


# in a run_job task started by the start script: what the script read for it
_READ_AHEAD: ContextVar[_ReadAhead | None] = ContextVar("arq_read_ahead", default=None)


class WakeableWorker(Worker):
    """arq's Worker, reading its queue on a timer and whenever ``wake`` is called."""

    def __init__(
        self,
        *args: Any,
        wakeups: bool = True,
        scripts: bool = True,
        leave_queue: bool = False,
        worker_id: str = "",
        idle_slots: str = "",
        **kwargs: Any,
    ) -> None:
        # arq's calls as the clients of adapters.redis store them (and HAND_OVER writes them)
        kwargs.setdefault("job_serializer", dump_call)
        kwargs.setdefault("job_deserializer", load_call)
        super().__init__(*args, **kwargs)
        self.wakeups = wakeups
        self.scripts = scripts
        # with the scripts: an entry started leaves the queue in the same script (arq takes
        # it off only as the job ends)
        self.leaves_queue = scripts and leave_queue
        # this worker's id in the list of idle slots (``HAND_OVER``'s ``IDLE``), that list
        self.worker_id, self._idle_slots = worker_id, idle_slots
        self._start: Any = None  # START, registered on the worker's pool at first use
        # what the start script read for the entries it started, until their run_job reads it
        self._read: dict[str, _ReadAhead] = {}
        self._wake = asyncio.Event()
        # the entries the wake-ups named since the last start, or None to read the queue
        self._named: list[bytes] | None = []
        # the last read of the queue found every slot busy: entries may wait for one
        self._backlog = False
        # the last start was given more entries than it had free slots for
        self._left = False
        # a start is under way; a slot freed during it
        self._polling = self._freed = False
        # entries to start as soon as a slot frees (``start_when_free``)
        self._after_release: list[bytes] = []
        # entries started for this worker, to run as soon as a slot frees (``run_when_free``)
        self._started_for_me: list[tuple[str, int, bytes]] = []
        self._redis_down_since: float | None = None

    def wake(self, arq_ids: Sequence[bytes] = ()) -> None:
        """Start the queue entries ``arq_ids`` names (just enqueued), or read the queue
        when it names none; with every slot busy, read the queue as soon as one frees."""
        if not self.wakeups:
            return
        if self.job_counter >= self.max_jobs:
            self._backlog = True
        elif arq_ids and self._named is not None:
            self._named.extend(arq_ids)
            self._wake.set()
        else:
            self._read_queue_soon()

    def start_when_free(self, arq_ids: Sequence[bytes]) -> None:
        """Start these entries once the next slot frees: a job of this worker that is
        ending handed its slot to them, so nobody else is woken for them."""
        self._after_release.extend(arq_ids)

    def run_now(self, arq_id: str, score: int, call: bytes) -> None:
        """Run this entry now: a scheduler's script started it for this worker, as
        ``run_when_free`` says, for a slot that idled (``idle_id``); with every slot busy
        (the count of idle slots was behind), as the next slot frees. Once only: the
        entry waits on the queue too, for this worker's read should this call not come
        (``HAND_OVER``), and that read may have started it first."""
        if self._holds(arq_id):
            return
        self._started_for_me.append((arq_id, score, call))
        self._wake.set()

    def _holds(self, arq_id: str) -> bool:
        """Whether this worker runs the entry, or holds it to run."""
        return arq_id in self.tasks or any(held == arq_id for held, _, _ in self._started_for_me)

    def run_when_free(self, arq_id: str, score: int, call: bytes) -> None:
        """Run this entry once the next slot frees: a job of this worker that is ending
        handed its slot to it, and the script that released that slot started the entry
        for this worker (stored its ``call``, marked it in progress, counted try 1, and did
        not queue it), as ``start_jobs`` would."""
        self._started_for_me.append((arq_id, score, call))

    @property
    def start_mark_ms(self) -> int:
        """The life of the in-progress mark a script may set when it starts an entry for
        this worker (``run_when_free``); 0 where this worker starts its entries itself:
        without the scripts, with entries left on the queue as they start, or with arq's
        aborts (its run_job then reads the call itself)."""
        if not (self.scripts and self.leaves_queue and self.allow_pick_jobs):
            return 0  # (not taking jobs: a stopping worker)
        if self.allow_abort_jobs:
            return 0
        return int(self.in_progress_timeout_s * 1000)

    @property
    def idle_id(self) -> str:
        """This worker's id in the list of idle slots, where the scheduler's scripts find
        a worker to start an entry for (``run_now``); '' when they may not: without
        wake-ups, without that list or id, or where ``start_mark_ms`` is 0."""
        if not (self.wakeups and self._idle_slots and self.worker_id and self.start_mark_ms):
            return ""
        return self.worker_id

    @property
    def idle_now(self) -> int:
        """How many of this worker's slots idle now, for the list of idle slots: all, when
        nothing runs here or waits to; 0 when entries may not be started for it; -1 when
        it runs jobs (the list is kept as runs end and starts take slots)."""
        if not self.idle_id:
            return 0
        if self.job_counter or self._started_for_me or self._after_release or self._named:
            return -1
        return self.max_jobs

    async def give_back_started(self) -> None:
        """Put the entries started for this worker that it has not run (it stops) back on
        the queue, unstarted (no in-progress mark, no try counted), for any worker's next
        read; best effort: an entry left started is one the reconciler moves to a new
        version, as for a worker that died."""
        entries, self._started_for_me = self._started_for_me, []
        if not entries:
            return
        try:
            async with self.pool.pipeline(transaction=True) as pipe:
                for arq_id, score, _ in entries:
                    pipe.delete(in_progress_key_prefix + arq_id, retry_key_prefix + arq_id)
                    pipe.zadd(self.queue_name, {arq_id: score})
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not give back %d started entries: %s", len(entries), exc)

    def _read_queue_soon(self) -> None:
        self._named = None
        self._wake.set()

    async def poll_forever(self) -> None:
        """Read the queue every ``poll_delay`` seconds and when slots free while entries
        wait; start the entries wake-ups name as they come."""
        named: list[bytes] | None = None  # at first, read the queue
        while True:
            await self._poll_safely(named)
            timed_out = False
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that
            # arrives as the event is set, and shutdown would wait for ever
            try:
                async with asyncio.timeout(self.poll_delay_s):
                    await self._wake.wait()
            except TimeoutError:
                timed_out = True
            self._wake.clear()
            named = None if timed_out else self._named
            self._named = []

    async def _poll_safely(self, named: list[bytes] | None) -> None:
        """Start ``named`` entries, or read the queue (None) and start what it holds;
        while Redis is down, log and back off instead of dying."""
        before = set(self.tasks)
        # what the start leaves for want of a slot; a read of the queue that does not reach
        # start_jobs (every slot busy) may leave anything
        self._left = named is None
        self._polling, self._freed = True, False
        try:
            while self._started_for_me and self.allow_pick_jobs:
                if self.job_counter >= self.max_jobs:
                    break  # run as the next slot frees
                await self.sem.acquire()  # free while job_counter < max_jobs: it never waits
                self.job_counter += 1
                arq_id, score, call = self._started_for_me.pop(0)
                self._run_started(arq_id, score, _ReadAhead(call, 1))
            if named is None:
                await self._poll_iteration()
            elif self.allow_pick_jobs:
                # arq's start of these entries, without its read of the queue, as many as
                # slots are free; the rest (slots handed to them went to a start under
                # way, or the jobs that handed them are still ending) start by name as the
                # next slots free
                while named and self.job_counter < self.max_jobs:
                    free = self.max_jobs - self.job_counter
                    await self.start_jobs(named[:free])
                    named = named[free:]
                self._after_release.extend(named)
            self._redis_down_since = None
        except (RedisError, OSError) as exc:
            if self._redis_down_since is None:
                self._redis_down_since = asyncio.get_running_loop().time()
                log.warning("worker lost Redis: %s; retrying", exc)
            await asyncio.sleep(min(1.0, self.poll_delay_s * 4))
            return
        finally:
            self._polling = False
        started = not before >= set(self.tasks)
        if self.job_counter >= self.max_jobs:
            # what was left waits for the next free slot
            self._backlog = self._backlog or self._left
        elif self.wakeups and (self._freed or (named is None and started and self._left)):
            # slots freed meanwhile, or a read started jobs and found more: read again
            self._read_queue_soon()

    def _release_sem_dec_counter_on_complete(self) -> None:
        """A slot is free (arq calls this as a job's task ends): when entries may wait for
        one, read the queue now rather than at the next poll. After the release, so that
        the read sees the free slot."""
        super()._release_sem_dec_counter_on_complete()
        handed, self._after_release = self._after_release, []
        if self._started_for_me:
            self._wake.set()  # the loop runs them, after a start under way if any
        if self._polling and handed:
            self.wake(handed)  # started by name once the start under way is done
        elif self._polling:
            self._freed = True
        elif self._backlog and self.wakeups:
            self._backlog = False
            self._read_queue_soon()
        elif handed:
            self.wake(handed)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's ``start_jobs`` with its checks and marks in one script (``START``) for as
        many of the entries as there are free slots, then arq's ``run_job`` for each one
        started (not those it runs already: an entry started for it waits on the queue
        too, see ``run_now``)."""
        if not self.scripts:
            self._left = len(job_ids) > self.max_jobs - self.job_counter
            return await super().start_jobs(job_ids)
        job_ids = [i for i in job_ids if not self._holds(i.decode() if isinstance(i, bytes) else i)]
        self._left = len(job_ids) > self.max_jobs - self.job_counter
        if self._start is None:
            self._start = self.pool.register_script(START)
        free = min(self.max_jobs - self.job_counter, len(job_ids))
        if free <= 0:
            return None
        for _ in range(free):  # the slots, taken as arq takes them
            await self.sem.acquire()  # free while job_counter < max_jobs: it never waits
        self.job_counter += free
        mark_ms = int(self.in_progress_timeout_s * 1000)
        # with arq's aborts, run_job's first read also takes the entry off the abort set
        # (an abort may come between start and run): then run_job reads the call itself
        read_ahead = not self.allow_abort_jobs
        try:
            out = await self._start(
                keys=[self.queue_name],
                args=[
                    in_progress_key_prefix,
                    timestamp_ms(),
                    mark_ms,
                    free,
                    int(self.leaves_queue),
                    job_key_prefix if read_ahead else "",
                    retry_key_prefix,
                    self._idle_slots,
                    self.worker_id,
                    *job_ids,
                ],
            )
        except BaseException:
            self._unstarted(free)
            raise
        self._unstarted(free - len(out) // 4)  # the rest were started elsewhere, or not due
        for i in range(0, len(out), 4):
            read = _ReadAhead(out[i + 2], int(out[i + 3])) if read_ahead else None
            self._run_started(out[i].decode(), int(float(out[i + 1])), read)
        return None

    def _run_started(self, job_id: str, score: int, read: _ReadAhead | None) -> None:
        """arq's ``run_job`` of an entry started in a slot taken for it, given what was read
        or is known of its call and try count (None: ``run_job`` reads them itself)."""
        if read is not None:
            self._read[job_id] = read
        self.starting(job_id)  # first: what it begins goes out before run_job's own steps
        task = self.loop.create_task(self.run_job(job_id, score))
        task.add_done_callback(functools.partial(self._ran, job_id))
        self.tasks[job_id] = task

    def _ran(self, job_id: str, task: asyncio.Task[None]) -> None:
        """A job's task ended: its slot is free, and what was read for it goes (its
        run_job may never have begun, cancelled at once). A task that returned leaves
        ``tasks`` now, as arq's read of the queue would drop it: a busy worker starts its
        entries by name and reads the queue seldom, and would keep every task it ran. One
        that raised or was cancelled stays for that read, which raises what it raised."""
        self._read.pop(job_id, None)
        self.ended(job_id)
        returned = not task.cancelled() and task.exception() is None
        if returned and self.tasks.get(job_id) is task:
            del self.tasks[job_id]
        self._release_sem_dec_counter_on_complete()

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's ``run_job``, given what the start script read for the entry, if it did,
        in place of its first transaction (``pool``)."""
        read = self._read.pop(job_id, None)
        if read is not None:
            _READ_AHEAD.set(read)  # in this task's context only
        await super().run_job(job_id, score)

    @property
    def pool(self) -> ArqRedis:
        """The worker's Redis, except for the first use by a ``run_job`` whose entry the
        start script read: that use is its transaction reading the call."""
        read = _READ_AHEAD.get()
        if read is not None and read.unread:
            read.unread = False
            return cast(ArqRedis, read)
        return cast(ArqRedis, self._pool)

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's end of an entry (after its function returned or raised). With the scripts,
        a subclass may end it in the round trip that ends the run (``ending``); arq's own
        ``finish_job`` ends the rest."""
        finished = finish and result_data is None and keep_in_progress is None
        if self.scripts and await self.ending(job_id, finished):
            return None
        return await super().finish_job(
            job_id,
            finish,
            result_data,
            result_timeout_s,
            keep_result_forever,
            incr_score,
            keep_in_progress,
        )

    async def ending(self, job_id: str, finished: bool) -> bool:
        """arq ends the entry ``job_id`` now (with ``arq_scripts`` only). ``finished``: arq
        would drop its keys and take it off the queue, and nothing else; a subclass that
        does that itself, in the same round trip as its own end of the run, returns True
        and arq's ``finish_job`` is skipped."""
        return False

    def starting(self, job_id: str) -> None:
        """The entry ``job_id`` started and arq's ``run_job`` is about to read its call: a
        subclass may begin here what the job's function will need and does not depend on
        the call, ahead of ``run_job`` (with ``arq_scripts`` only; arq's own start does not
        call it)."""

    def ended(self, job_id: str) -> None:
        """The task of an entry ``starting`` was called for ended (returned, raised or was
        cancelled, maybe before ``run_job`` began)."""

    def _unstarted(self, count: int) -> None:
        """Give back the slots taken for entries that were not started, as arq does."""
        for _ in range(count):
            self.job_counter -= 1
            self.sem.release()
