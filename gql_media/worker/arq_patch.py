"""The one place this project relies on arq's internals: a worker that reads its queue the
moment a job is enqueued, instead of at its next poll.

arq reads its queue every ``poll_delay`` seconds; a job enqueued just after a read waits for
the next one (0.5 s by default). The api publishes on a wake-up channel the queue entries it
enqueued that are due now, and ``WakeableWorker.wake`` has an idle worker start them at
once, with arq's ``Worker.start_jobs`` (which checks that no other worker started an entry,
marks it in progress and runs it with ``run_job``), without reading the queue first. It
drives that, and arq's own read of the queue ``Worker._poll_iteration`` on its timer, from a
loop of its own instead of arq's ``main``, and it learns from
``Worker._release_sem_dec_counter_on_complete`` (called as a job's task ends) that a slot
freed while jobs waited for one, which reads the queue again, or that the slot of a job
that handed it to the next entries (``start_when_free``: the scheduler gave them the slot
as the job ended) is free for them, which starts them by name with no wake-up sent.

Internals relied on, checked by ``tests/test_arq_patch.py`` against the pinned arq minor
version: ``Worker._poll_iteration()`` reads the due entries of the queue and starts what the
free slots allow; ``Worker.start_jobs(ids)`` starts the named entries that are due and not
started elsewhere, as the free slots allow; ``Worker._release_sem_dec_counter_on_complete()``
frees a slot;
``Worker.job_counter``, ``max_jobs``, ``poll_delay_s`` and ``tasks`` (a started job's task
under its id until a read of the queue drops it when done). The keys arq keeps for a job
(``adapters.queue.stored``, from ``arq.constants``) are checked there too.

Without ``arq_wakeups`` in ``GQL_MEDIA_PATCHES`` the wake-ups are off: the worker then reads
its queue only on its timer (``_poll_iteration`` every ``poll_delay``), and a job waits up to
that long to start.

The loop is ours for two more reasons: arq's ``main`` starts by logging Redis ``INFO``,
which the embedded Redis stand-in lacks, and it ends the worker on the first Redis error,
where this one logs and retries (the reconciler re-enqueues from the database whatever Redis
lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from arq.worker import Worker
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class WakeableWorker(Worker):
    """arq's Worker, reading its queue on a timer and whenever ``wake`` is called."""

    def __init__(self, *args: Any, wakeups: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wakeups = wakeups
        self._wake = asyncio.Event()
        # the entries the wake-ups named since the last start, or None to read the queue
        self._named: list[bytes] | None = []
        # the last read of the queue found every slot busy: entries may wait for one
        self._backlog = False
        # a start is under way; a slot freed during it
        self._polling = self._freed = False
        # entries to start as soon as a slot frees (``start_when_free``)
        self._after_release: list[bytes] = []
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
        self._polling, self._freed = True, False
        try:
            if named is None:
                await self._poll_iteration()
            elif self.allow_pick_jobs and self.job_counter < self.max_jobs:
                # arq's start of these entries, without its read of the queue
                await self.start_jobs(named)
            self._redis_down_since = None
        except (RedisError, OSError) as exc:
            if self._redis_down_since is None:
                self._redis_down_since = asyncio.get_running_loop().time()
                log.warning("worker lost Redis: %s; retrying", exc)
            await asyncio.sleep(min(1.0, self.poll_delay_s * 4))
            return
        finally:
            self._polling = False
        if self.job_counter >= self.max_jobs:
            self._backlog = True  # what was left waits for the next free slot
        elif self.wakeups and (self._freed or (named is None and not before >= set(self.tasks))):
            # slots freed meanwhile, or a read started jobs: more may wait, read again
            self._read_queue_soon()

    def _release_sem_dec_counter_on_complete(self) -> None:
        """A slot is free (arq calls this as a job's task ends): when entries may wait for
        one, read the queue now rather than at the next poll. After the release, so that
        the read sees the free slot."""
        super()._release_sem_dec_counter_on_complete()
        handed, self._after_release = self._after_release, []
        if self._polling:
            self._freed = True
        elif self._backlog and self.wakeups:
            self._backlog = False
            self._read_queue_soon()
        elif handed:
            self.wake(handed)
