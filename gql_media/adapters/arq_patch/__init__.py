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
to a new version as it does for an entry taken and never claimed. The same goes for a job
dispatched while a worker idles: a worker lists its idle slots in Redis
(``keys.idle_slots``: its id once per slot; all of them when it registers with nothing
running or waiting to, one more each time a run of its ends with nothing handed to it, one
less for each entry it starts itself), and ``HAND_OVER`` starts an entry for the worker at
the head of that list and publishes it on that worker's own wake-up channel
(``keys.worker_wake_channel``), where ``WakeableWorker.run_now`` runs it with ``run_job``:
no worker's start script stands between the wake-up and the run. Such an entry also
waits on the queue, due a second later, its in-progress mark holding that worker's id:
other workers' starts pass it over, and should the message be lost (the worker's
connection dropped, Redis failed over), that worker's next read of the queue starts it
(``START``), once. The list may be behind (a start it did not hear of): an entry given to
a worker whose slots are all busy runs as the next one frees. Off, ``enqueue_job``, arq's
``start_jobs`` and its ``finish_job`` serve.

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

The package holds the scripts (``scripts``: ``HAND_OVER``, ``START``, ``HandOver``) and the
worker (``worker``: ``WakeableWorker`` and the ``_ReadAhead`` it gives ``run_job``).
"""

from __future__ import annotations

from gql_media.adapters.arq_patch.scripts import HAND_OVER, START, HandOver
from gql_media.adapters.arq_patch.worker import WakeableWorker

__all__ = ["HAND_OVER", "START", "HandOver", "WakeableWorker"]
