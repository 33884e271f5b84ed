"""The one place this project relies on arq's internals. It does two things, each switched
by its own name in ``GQL_MEDIA_PATCHES``, each falling back to arq's public path when off.

``arq_wakeups``: a worker reads its queue the moment a job is enqueued, instead of at its
next poll. arq reads its queue every ``poll_delay`` seconds; a job enqueued just after a
read waits for the next one (0.5 s by default). The api publishes on a wake-up channel the
queue entries it enqueued that are due now, and ``WakeableWorker.wake`` has an idle worker
start them at once, with arq's ``Worker.start_jobs`` (which checks that no other worker
started an entry, marks it in progress and runs it with ``run_job``), without reading the
queue first. It drives that, and arq's own read of the queue ``Worker._poll_iteration`` on
its timer, from a loop of its own instead of arq's ``main``, and it learns from
``Worker._release_sem_dec_counter_on_complete`` (called as a job's task ends) that a slot
freed while jobs waited for one, which reads the queue again, or that the slot of a job
that handed it to the next entries (``start_when_free``: the scheduler gave them the slot
as the job ended) is free for them, which starts them by name with no wake-up sent.
Off, the worker reads its queue only on its timer (``_poll_iteration`` every
``poll_delay``), and a job waits up to that long to start.

``arq_scripts``: arq's enqueue, its start of an entry and its end of it in one round trip
each, where arq takes three (``enqueue_job``: WATCH, EXISTS, MULTI/EXEC), five
(``start_jobs``: WATCH, EXISTS, ZSCORE, MULTI/EXEC; then ``run_job``'s read of the call:
MULTI/EXEC) and one more beside the release of the run's slot (``finish_job``: MULTI/EXEC).
Across hosts every round trip is a network latency on the path of every job
(docs/performance.md, "Several hosts"), and locally each costs the worker some CPU in
redis-py. ``HAND_OVER`` is a Lua function the scheduler's scripts run on what they dispatch:
it writes each entry as ``enqueue_job`` would (the stored call under ``arq:job:<id>`` unless
that key or ``arq:result:<id>`` exists, then the id on the queue sorted set, scored now) and
publishes the jobs' changes and the wake-up, in the same script.
``WakeableWorker.start_jobs`` checks and marks the entries it starts in one script
(``START``) with the semantics of arq's: an entry is started when it is on the queue, due,
and not marked in progress; the mark is set for ``in_progress_timeout_s``. The same script
then does for each what arq's ``run_job`` does first, in a transaction of its own: it reads
the stored call, increments the try count and sets the count's expiry. arq's own ``run_job``
then runs each, given what the script read in place of that transaction (``_ReadAhead``,
which stands for the worker's pool in ``run_job``'s first use of it); with arq's aborts on
(``allow_abort_jobs``, which this service does not use) ``run_job`` reads the call itself.
As arq ends the entry, ``WakeableWorker.finish_job`` lets the worker (``ending``) end it in
the scheduler's script that releases the run's slot: for an entry that finished with no
result kept, the hand-over drops what ``finish_job`` drops (the call, the try count, the
in-progress mark, the entry on the queue and in the abort set); any other end is arq's
``finish_job``. That script also starts, for the worker, the entry of the job it hands the
freed slot to, as ``START`` would (the call stored, the in-progress mark set, try 1
counted) without putting it on the queue it would leave as it starts; the worker runs it
with arq's ``run_job`` as the slot frees (``WakeableWorker.run_when_free``), given that
call and try; a worker that stops first puts it back on the queue unstarted
(``give_back_started``), and one that dies leaves it to the reconciler, which moves the job
to a new version as it does for an entry taken and never claimed. Off, ``enqueue_job``,
arq's ``start_jobs`` and its ``finish_job`` serve.

Internals relied on, checked by ``tests/test_arq_patch.py`` against the pinned arq minor
version: ``Worker._poll_iteration()`` reads the due entries of the queue and starts what the
free slots allow; ``Worker.start_jobs(ids)`` starts the named entries that are due and not
started elsewhere, as the free slots allow (its source is compared with the one the
``START`` script mirrors); ``Worker._release_sem_dec_counter_on_complete()`` frees a slot;
``Worker.finish_job(job_id, finish, result_data, ...)`` ends an entry after its function
(its source is compared with the one ``HAND_OVER``'s ``done`` mirrors);
``Worker.run_job(job_id, score)`` begins with one transaction on ``Worker.pool`` (the call,
the try count, its expiry of 88,400 s), which ``START`` mirrors (its source is compared too);
``Worker.job_counter``, ``max_jobs``, ``sem``, ``in_progress_timeout_s``, ``poll_delay_s``
and ``tasks`` (a started job's task under its id until a read of the queue drops it when
done; the entries started here leave it as they return). ``ArqRedis.enqueue_job``'s writes
(its source is compared too) and the stored call's fields (``arq.jobs.serialize_job``'s
dict, here in JSON: ``adapters.redis.dump_call``), and the keys arq keeps for a job
(``adapters.queue.stored``, from ``arq.constants``).

The loop is ours for two more reasons: arq's ``main`` starts by logging Redis ``INFO``,
which the embedded Redis stand-in lacks, and it ends the worker on the first Redis error,
where this one logs and retries (the reconciler re-enqueues from the database whatever Redis
lost).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import orjson
from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.exceptions import RedisError

from gql_media import keys
from gql_media.adapters.redis import dump_call, load_call
from gql_media.adapters.scheduling.lua import lua_string

log = logging.getLogger(__name__)

# A Lua function for the scheduler's scripts (``adapters.scheduling.lua``): ``out`` holds
# what they dispatched, triples of job id, version and a flag set here (the entry is on
# arq's queue, put there now or, when arq has seen its id, as enqueue_job leaves it: a
# duplicate enqueue is harmless; 2 for one it started for the caller). Its arguments
# (``HandOver.args``) are ARGV[5] how many of the first entries are the caller's (left out
# of the wake-up), ARGV[6] the life (ms) of the in-progress mark of those it starts for the
# caller (0: none is started, they are put on the queue), ARGV[7] how many entries ended
# follow (their keys go as finish_job drops them), then those entries, then the changes to
# publish, up to the script's own arguments (ARGV[A]). An entry of the caller's whose id
# arq has not seen (no call, result, mark or try count) is started as START starts one, in
# this script: its call stored, marked in progress, its try counted, and not put on the
# queue (it would leave it as it starts); the caller runs it with what it knows (the
# entry's id and call, try 1). The names it writes
# under are constants (``HandOver.lua``). The stored call is the JSON of arq's
# ``serialize_job`` dict (``adapters.redis.dump_call``) for ``run_job(job_id)``, the
# entry's id ``keys.arq_job_id``'s (MARK), its score and enqueue time now (ARGV[2], in ms).
HAND_OVER = """
local TRIES_LIFE = 88400  -- arq's run_job: the try count's expiry, in s
local function hand_over(out)
  local keep, mark_ms, ended = tonumber(ARGV[5]), tonumber(ARGV[6]), 7 + tonumber(ARGV[7])
  for i = 8, ended do
    local id = ARGV[i]
    redis.call('DEL', PROGRESS .. id, TRIES .. id, CALL .. id)
    redis.call('ZREM', ABORT, id)
    redis.call('ZREM', QUEUE, id)
  end
  local woken, kept = {}, 0
  for i = 1, #out, 3 do
    local id = out[i] .. MARK .. out[i + 1]
    local call = CALL .. id
    local mine, state, fresh = kept < keep, 1, false
    if mine and mark_ms > 0
        and redis.call('EXISTS', call, RESULT .. id, PROGRESS .. id, TRIES .. id) == 0 then
      state, fresh = 2, true
    else
      fresh = redis.call('EXISTS', call, RESULT .. id) == 0  -- else as enqueue_job leaves it
    end
    if fresh then
      redis.call('PSETEX', call, EXPIRES, '{"t":null,"f":' .. FN ..
        ',"a":[' .. cjson.encode(out[i]) .. '],"k":{},"et":' .. ARGV[2] .. '}')
    end
    if state == 2 then
      redis.call('PSETEX', PROGRESS .. id, mark_ms, '1')
      redis.call('SET', TRIES .. id, 1, 'EX', TRIES_LIFE)
    elseif fresh then
      redis.call('ZADD', QUEUE, ARGV[2], id)
    end
    out[i + 2] = state
    if mine then kept = kept + 1 else woken[#woken + 1] = id end
  end
  for i = ended + 1, A - 1 do redis.call('PUBLISH', CHANNEL, ARGV[i]) end
  if #woken > 0 then redis.call('PUBLISH', WAKE, table.concat(woken, ' ')) end
  return out
end
"""

# KEYS[1]: the queue; ARGV[1]: the in-progress prefix, ARGV[2]: now (ms), ARGV[3]: the
# mark's life (ms), ARGV[4]: how many to start at most, ARGV[5]: '1' to take the started
# entries off the queue, ARGV[6]: the stored call's prefix, or '' not to read it, ARGV[7]:
# the try count's prefix, ARGV[8..]: entries, in order. Starts entries as arq's start_jobs
# does, going down the list: one is started when it is on the queue, due and not marked in
# progress (by another worker); the others are passed over. For each one started it then
# does what arq's run_job does first (reads the stored call, counts the try and sets the
# count's expiry) and returns, flat: the entry, its score, the call (false when gone) and
# the try (0 when not read).
START = """
local TRIES_LIFE = 88400  -- arq's run_job: the try count's expiry, in s
local out, limit = {}, tonumber(ARGV[4])
for i = 8, #ARGV do
  if #out >= 4 * limit then break end
  local mark = ARGV[1] .. ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[2]) and redis.call('EXISTS', mark) == 0 then
    redis.call('PSETEX', mark, ARGV[3], '1')
    if ARGV[5] == '1' then redis.call('ZREM', KEYS[1], ARGV[i]) end
    local call, try = false, 0
    if ARGV[6] ~= '' then
      call = redis.call('GET', ARGV[6] .. ARGV[i])
      try = redis.call('INCR', ARGV[7] .. ARGV[i])
      redis.call('EXPIRE', ARGV[7] .. ARGV[i], TRIES_LIFE)
    end
    out[#out + 1] = ARGV[i]
    out[#out + 1] = score
    out[#out + 1] = call
    out[#out + 1] = try
  end
end
return out
"""


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


@dataclass(frozen=True, slots=True)
class HandOver:
    """What the scheduler's scripts need to put the jobs they dispatch on arq's queue
    (``HAND_OVER``), publish the jobs' changes on ``channel`` and wake the workers."""

    queue: str
    wake: str
    channel: str
    expires_ms: int

    @classmethod
    def of(cls, redis: ArqRedis, namespace: str) -> HandOver:
        return cls(
            keys.queue_name(namespace),
            keys.wake_channel(namespace),
            keys.events_channel(namespace),
            redis.expires_extra_ms,
        )

    @property
    def lua(self) -> str:
        """``HAND_OVER`` with the names it writes under, as constants of the script."""
        names = {
            "QUEUE": self.queue,
            "CALL": job_key_prefix,
            "RESULT": result_key_prefix,
            "PROGRESS": in_progress_key_prefix,
            "TRIES": retry_key_prefix,
            "ABORT": abort_jobs_ss,
            "FN": orjson.dumps(keys.RUN_JOB_TASK).decode(),  # as JSON, in the stored call
            "MARK": keys.ARQ_VERSION_MARK,  # the entry's id: keys.arq_job_id
            "EXPIRES": str(self.expires_ms),
            "WAKE": self.wake,
            "CHANNEL": self.channel,
        }
        constants = "".join(f"local {k} = {lua_string(v)}\n" for k, v in names.items())
        return constants + HAND_OVER

    def args(
        self,
        keep: int,
        events: Sequence[bytes],
        done: Sequence[str] = (),
        start_ms: int = 0,
    ) -> list[str | int | bytes]:
        """The script's arguments: the first ``keep`` entries are left out of the wake-up
        (the caller starts them; with ``start_ms``, the life of arq's in-progress mark, the
        script starts those it can for the caller); ``events`` are published before it; the
        entries ``done`` (arq ids) ended, and their keys go as arq's ``finish_job`` drops
        them (``WakeableWorker.finish_job``)."""
        return [keep, start_ms, len(done), *done, *events]


class WakeableWorker(Worker):
    """arq's Worker, reading its queue on a timer and whenever ``wake`` is called."""

    def __init__(
        self,
        *args: Any,
        wakeups: bool = True,
        scripts: bool = True,
        leave_queue: bool = False,
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
        started."""
        self._left = len(job_ids) > self.max_jobs - self.job_counter
        if not self.scripts:
            return await super().start_jobs(job_ids)
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
        task = self.loop.create_task(self.run_job(job_id, score))
        task.add_done_callback(functools.partial(self._ran, job_id))
        self.tasks[job_id] = task
        self.starting(job_id, task)

    def _ran(self, job_id: str, task: asyncio.Task[None]) -> None:
        """A job's task ended: its slot is free, and what was read for it goes (its
        run_job may never have begun, cancelled at once). A task that returned leaves
        ``tasks`` now, as arq's read of the queue would drop it: a busy worker starts its
        entries by name and reads the queue seldom, and would keep every task it ran. One
        that raised or was cancelled stays for that read, which raises what it raised."""
        self._read.pop(job_id, None)
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

    def starting(self, job_id: str, task: asyncio.Task[None]) -> None:
        """The entry ``job_id`` started and arq's ``run_job`` reads its call now (``task``):
        a subclass may begin here what the job's function will need and does not depend on
        the call (with ``arq_scripts`` only; arq's own start does not call it)."""

    def _unstarted(self, count: int) -> None:
        """Give back the slots taken for entries that were not started, as arq does."""
        for _ in range(count):
            self.job_counter -= 1
            self.sem.release()
