"""Job events over Redis pub/sub: workers publish snapshots, each api process fans them out.

One pub/sub connection per process feeds every local subscriber. Subscribers hold bounded
queues that keep only the newest snapshot of each job, so a slow client never blocks the
dispatcher and never makes Redis buffer for it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gql_media import keys
from gql_media.adapters.webhook_signing import remember_webhook_id
from gql_media.batching import Batcher
from gql_media.domain import JobSnapshot

log = logging.getLogger(__name__)


def encode_event(snapshot: JobSnapshot) -> bytes:
    """A job change as it travels on the events channel."""
    return snapshot.to_json()


class EventPublisher:
    """Publishes a job's snapshot after each committed change.

    Changes published while earlier publishes are out travel together, in one write and one
    round trip: a worker running many jobs publishes several at once, and each socket write
    is a large part of what a change costs.
    """

    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._channel = keys.events_channel(namespace)
        self._publish = Batcher(self._send)

    async def publish(self, snapshot: JobSnapshot) -> None:
        """Publish ``snapshot``; returns once Redis has it (or failed, which is logged)."""
        await self._publish((snapshot.id, encode_event(snapshot)))

    async def _send(self, events: list[tuple[str, bytes]]) -> list[None]:
        # A lost event costs nothing lasting: subscribers re-read snapshots on reconnect.
        try:
            if len(events) == 1:
                await self._redis.publish(self._channel, events[0][1])
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for _, event in events:
                        pipe.publish(self._channel, event)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            ids = ", ".join(job_id for job_id, _ in events)
            log.warning("could not publish events for jobs %s: %s", ids, exc)
        return [None] * len(events)

    async def nudge_provider(self, webhook_id: str, external_id: str) -> None:
        """Tell the workers that provider-side work ``external_id`` changed (a webhook
        ``webhook_id`` said so), once per webhook id. Raises RedisError when Redis is down,
        so the sender retries."""
        if await remember_webhook_id(self._redis, self._namespace, webhook_id):
            await self._redis.publish(keys.provider_nudge_channel(self._namespace), external_id)


class Resync:
    """Marker delivered when events may have been missed (Redis reconnected)."""


RESYNC = Resync()


class Subscriber:
    """One subscription's inbox: newest snapshot per job, oldest job first, bounded.

    One task reads it. It waits on a single future rather than an asyncio.Event (or
    Queue): an api holds one inbox per subscribed socket, and the Event's waiter deque
    alone weighed more than the rest of the inbox.

    ``direct``, when set, may take a snapshot to deliver itself (it returns whether it
    did): it is asked only while the reader waits with nothing pending, so everything the
    reader took before has gone out; what it declines goes to the reader, and so does what
    it took and could not deliver after all (``enqueue``, in order).
    """

    __slots__ = (
        "_maxsize",
        "_pending",
        "_predicate",
        "_resync",
        "_waiter",
        "alike",
        "direct",
        "dropped",
    )

    def __init__(
        self,
        maxsize: int,
        predicate: Callable[[JobSnapshot], bool] | None,
        alike: Hashable | None = None,
    ) -> None:
        self._pending: OrderedDict[str, JobSnapshot] = OrderedDict()
        self._maxsize = maxsize
        self._predicate = predicate
        self.alike = alike  # subscribers with the same ``alike`` have equivalent predicates
        self._waiter: asyncio.Future[None] | None = None
        self._resync = False
        self.dropped = 0
        self.direct: Callable[[JobSnapshot], bool] | None = None

    def wants(self, snapshot: JobSnapshot) -> bool:
        return self._predicate is None or self._predicate(snapshot)

    def resize(self, maxsize: int) -> None:
        """Hold up to ``maxsize`` jobs from now on (a replay widens the inbox while it
        runs, so that what changes meanwhile waits for it instead of being dropped); a
        smaller size drops nothing already pending."""
        self._maxsize = maxsize

    def offer(self, snapshot: JobSnapshot) -> None:
        if self.wants(snapshot):
            self.accept(snapshot)

    def accept(self, snapshot: JobSnapshot) -> None:
        """Take ``snapshot`` (the caller has checked that it is wanted)."""
        waiter = self._waiter
        if (
            self.direct is not None
            and waiter is not None
            and not waiter.done()
            and not self._pending
            and self._deliver_directly(snapshot)
        ):
            return
        self.enqueue(snapshot)

    def enqueue(self, snapshot: JobSnapshot) -> None:
        """Take ``snapshot`` for the reader (never ``direct``)."""
        current = self._pending.get(snapshot.id)
        if current is not None:
            if current.version >= snapshot.version:
                return
            self._pending[snapshot.id] = snapshot
        else:
            if len(self._pending) >= self._maxsize:
                self._pending.popitem(last=False)
                self.dropped += 1
            self._pending[snapshot.id] = snapshot
        self._wake()

    def _deliver_directly(self, snapshot: JobSnapshot) -> bool:
        assert self.direct is not None
        try:
            return self.direct(snapshot)
        except Exception:  # the reader sends it, and meets the problem where it is handled
            log.exception("direct delivery of job %s failed", snapshot.id)
            self.direct = None
            return False

    def request_resync(self) -> None:
        self._resync = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> JobSnapshot | Resync:
        """The next snapshot (or RESYNC), waiting for one; for a single reader at a time."""
        while not self._pending and not self._resync:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._resync:
            self._resync = False
            return RESYNC
        _, snapshot = self._pending.popitem(last=False)
        return snapshot


class _Alike:
    """The token of subscribers whose ``alike`` keys are equal."""

    __slots__ = ("__weakref__",)


class EventHub:
    """The process-wide pub/sub reader; ``subscribe`` hands out local subscribers."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        queue_size: int = 256,
        reconnect_max_delay: float = 2.0,
    ) -> None:
        self._redis = redis
        self._channel = keys.events_channel(namespace)
        self._queue_size = queue_size
        self._reconnect_max_delay = reconnect_max_delay
        self._by_job: dict[str, set[Subscriber]] = {}
        self._all: set[Subscriber] = set()
        # alike key → its subscribers' token, while one of them holds it
        self._alike: weakref.WeakValueDictionary[Hashable, _Alike] = weakref.WeakValueDictionary()
        # newest version dispatched per job (of jobs some subscriber followed as it came),
        # for the catch-up to skip what arrived
        self._delivered: OrderedDict[str, int] = OrderedDict()
        self._delivered_limit = 100_000
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.connected = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gql-media-event-hub")

    async def wait_listening(self) -> None:
        """Wait until the channel subscription is active (used at start-up and in tests)."""
        await self._listening.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def subscriber_count(self) -> int:
        return len(self._all) + sum(len(s) for s in self._by_job.values())

    def subscribe(
        self,
        job_id: str | None,
        predicate: Callable[[JobSnapshot], bool] | None = None,
        alike: Hashable | None = None,
    ) -> Subscriber:
        """A subscriber for one job, or for all jobs matching ``predicate`` when job_id is None.
        Subscribers given equal ``alike`` keys must have equivalent predicates: an event asks
        one of them, not each (many dashboards watching the same jobs)."""
        token: _Alike | None = None
        if alike is not None:
            # one token per distinct key, hashed by identity: the dispatcher looks each
            # subscriber's up per event, and hashing the key itself costs more
            token = self._alike.get(alike)
            if token is None:
                token = self._alike[alike] = _Alike()
        subscriber = Subscriber(self._queue_size, predicate, token)
        if job_id is None:
            self._all.add(subscriber)
        else:
            self._by_job.setdefault(job_id, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, job_id: str | None, subscriber: Subscriber) -> None:
        if job_id is None:
            self._all.discard(subscriber)
            return
        subscribers = self._by_job.get(job_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._by_job[job_id]

    def wants(self, job_id: str, version: int) -> bool:
        """True if some subscriber here could take this version of the job and no newer or
        equal one was dispatched lately."""
        if not self._all and job_id not in self._by_job:
            return False
        return self._delivered.get(job_id, 0) < version

    def dispatch(self, snapshot: JobSnapshot) -> None:
        """Hand a snapshot to the subscribers it concerns, unless a newer or equal version of
        the job went out already (events of several workers may cross)."""
        if self._delivered.get(snapshot.id, 0) >= snapshot.version:
            return
        self._delivered[snapshot.id] = snapshot.version
        self._delivered.move_to_end(snapshot.id)
        if len(self._delivered) > self._delivered_limit:
            self._delivered.popitem(last=False)
        for subscriber in self._by_job.get(snapshot.id, ()):
            subscriber.offer(snapshot)
        decided: dict[Hashable, bool] = {}
        for subscriber in self._all:
            alike = subscriber.alike
            if alike is None:
                subscriber.offer(snapshot)
                continue
            wanted = decided.get(alike)
            if wanted is None:
                wanted = decided[alike] = subscriber.wants(snapshot)
            if wanted:
                subscriber.accept(snapshot)

    def _resync_all(self) -> None:
        for subscriber in self._all:
            subscriber.request_resync()
        for subscribers in self._by_job.values():
            for subscriber in subscribers:
                subscriber.request_resync()

    async def _run(self) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                await self._listen(resync=not first)
            except (RedisError, OSError) as exc:
                if self.connected:
                    delay = 0.1
                log.warning("event hub lost Redis (%s); reconnecting in %.1fs", exc, delay)
            self.connected = False
            first = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max_delay)

    async def _listen(self, resync: bool) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            self.connected = True
            self._listening.set()
            if resync:
                self._resync_all()
            async for message in pubsub.listen():
                self._handle(message)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        try:
            data = orjson.loads(message["data"])
            if not self._all and data["id"] not in self._by_job:
                return  # no subscriber here follows the job: not decoded further
            snapshot = JobSnapshot.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropping malformed job event: %s", exc)
            return
        self.dispatch(snapshot)
