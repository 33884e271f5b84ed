"""Subscription events rendered once for all subscribers who asked the same thing.

Without this, graphql-core runs each subscriber's selection set on each event: with many
dashboards following the same jobs, the api spends most of its time producing identical
results. Here a subscription event's result is cached by (operation, variables, event):
subscribers with the same document and variables share it. Subscription resolvers yield
the event objects from ``SharedJobs``, so equal events are the same object.

Only what the document asks about the event is shared; what an event may be seen by is
decided before it is yielded (owners, filters), so sharing leaks nothing.

Over graphql-transport-ws, an event can also skip the subscriber's own path (its task,
strawberry's and graphql-core's async generators, the message built and encoded for it):
``DirectEvents`` writes the shared, already encoded ``next`` message straight to the socket
while the subscription's task waits for events and the socket takes writes. Whatever it
cannot send that way (an error, a result that needs awaiting, a full socket, a terminal
event that must end the operation) goes the usual way.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from graphql import OperationType
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gql_media.adapters.events import Subscriber
from gql_media.api.protocols import LightWebSocketProtocol
from gql_media.api.types import Job, job_from_snapshot
from gql_media.domain import JobSnapshot

if TYPE_CHECKING:
    from gql_media.api.context import Context

log = logging.getLogger(__name__)

RESULTS_KEPT = 4096
JOBS_KEPT = 4096


def shared_job(context: Context, snapshot: JobSnapshot) -> Job:
    """The ``Job`` of a subscription event: one object per job version for every subscriber,
    so the event's result can be rendered once."""
    return context.shared_jobs.get(
        snapshot,
        context.media_base_url,
        lambda: job_from_snapshot(snapshot, context.media_url),
    )


K = TypeVar("K")
V = TypeVar("V")


def keep(cache: OrderedDict[K, V], key: K, value: V, limit: int) -> V:
    """Put ``value`` in ``cache``, dropping the oldest entry beyond ``limit``; returns it."""
    cache[key] = value
    if len(cache) > limit:
        cache.popitem(last=False)
    return value


class SharedJobs:
    """One ``Job`` per (job, version, media base URL) for the subscriptions of a process."""

    def __init__(self, limit: int = JOBS_KEPT) -> None:
        self._jobs: OrderedDict[tuple[str, int, str], Job] = OrderedDict()
        self._limit = limit

    def get(self, snapshot: JobSnapshot, base_url: str, make: Callable[[], Job]) -> Job:
        key = (snapshot.id, snapshot.version, base_url)
        job = self._jobs.get(key)
        if job is None:
            job = keep(self._jobs, key, make(), self._limit)
        return job


@dataclass(slots=True)
class DirectTarget:
    """Where the events of one graphql-transport-ws operation may be written directly."""

    protocol: LightWebSocketProtocol
    operations: dict[str, Any]  # the connection's running operations, by id
    operation: Any  # strawberry's: it runs while ``operations`` maps its id to it
    prefix: bytes  # the ``next`` message up to its payload: {"id":…,"type":"next","payload":
    executor: SharedEventExecution | None = None  # the subscription's, once it is built

    def is_open(self) -> bool:
        return self.operations.get(self.operation.id) is self.operation


# set by the transport handler in the task of each operation it runs
DIRECT_TARGET: ContextVar[DirectTarget | None] = ContextVar("direct_target", default=None)


def direct_target() -> DirectTarget | None:
    """The current operation's target, once its executor is known; None when its events
    cannot be written directly (another protocol, another server)."""
    target = DIRECT_TARGET.get()
    return target if target is not None and target.executor is not None else None


class DirectEvents:
    """``Subscriber.direct`` for one subscription. It takes each newer version of a job
    (terminal ones only if ``terminal_too``: the others end the operation, which its own
    path does) and, once the event loop has run what is ready, writes every version taken
    meanwhile, the newest of each job, in one write. ``seen`` (job id → version sent) is
    shared with the subscription's own path, which gets back, in order, whatever could not
    be written this way."""

    __slots__ = ("_context", "_loop", "_seen", "_subscriber", "_taken", "_target", "_terminal_too")

    def __init__(
        self,
        target: DirectTarget,
        subscriber: Subscriber,
        context: Context,
        seen: dict[str, int],
        terminal_too: bool,
    ) -> None:
        self._target = target
        self._subscriber = subscriber
        self._context = context  # the socket's: where its jobs' media are fetched
        self._seen = seen
        self._terminal_too = terminal_too
        self._loop = asyncio.get_running_loop()
        self._taken: dict[str, JobSnapshot] | None = None

    def __call__(self, snapshot: JobSnapshot) -> bool:
        taken = self._taken
        if taken is None:
            if snapshot.version <= self._seen.get(snapshot.id, 0):
                return True  # sent already: the usual path would drop it too
            if snapshot.status.terminal and not self._terminal_too:
                return False
            taken = self._taken = {}
            self._loop.call_soon(self._write)
        elif snapshot.status.terminal and not self._terminal_too:
            # after the ones taken: they go back to the reader first, in order
            self._write()
            return False
        current = taken.get(snapshot.id)
        if current is None or current.version < snapshot.version:
            taken.pop(snapshot.id, None)  # a job's newest version takes its latest place
            taken[snapshot.id] = snapshot
        return True

    def _write(self) -> None:
        taken, self._taken = self._taken, None
        if not taken:
            return
        target, seen = self._target, self._seen
        assert target.executor is not None
        messages: list[bytes] = []
        sent: list[JobSnapshot] = []
        left: list[JobSnapshot] = []
        for snapshot in taken.values():
            if left:
                left.append(snapshot)
                continue
            if snapshot.version <= seen.get(snapshot.id, 0):
                continue
            try:
                payload = target.executor.render_payload(shared_job(self._context, snapshot))
            except Exception:  # the reader's path meets it again, where errors are handled
                log.exception("could not render job %s for a subscriber", snapshot.id)
                payload = None
            if payload is None:  # an error, or a result to await: the reader's path has both
                left.append(snapshot)
                continue
            messages.append(target.prefix + payload + b"}")
            sent.append(snapshot)
        if messages and target.is_open() and target.protocol.send_texts_now(messages):
            for snapshot in sent:
                remember(seen, snapshot)
        else:
            left[:0] = sent
        for snapshot in left:
            self._subscriber.enqueue(snapshot)


def remember(seen: dict[str, int], snapshot: JobSnapshot) -> None:
    """Record ``snapshot`` as sent (bounded: a long-lived dashboard sees many jobs)."""
    if len(seen) > 10_000:
        seen.clear()
    seen[snapshot.id] = snapshot.version


class SharedEventExecution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, sharing the results of subscription events."""

    # (id of the operation node, variables, id of the event) → (event, operation, result);
    # the entry holds the event and the operation so their ids are not reused meanwhile
    _results: OrderedDict[tuple[int, str, int], tuple[Any, Any, Any]] = OrderedDict()
    # the same keys → (event, operation, the result's ``next`` payload as JSON)
    _payloads: OrderedDict[tuple[int, str, int], tuple[Any, Any, bytes]] = OrderedDict()
    # the subscription's variables as text, made once and copied into each event's executor
    _variables: str | None = None

    def build_resolve_info(self, *args: Any, **kwargs: Any) -> Any:
        # the subscription's field is resolved first, by the executor whose copies run its
        # events: the operation's direct target gets it
        target = DIRECT_TARGET.get()
        if target is not None and target.executor is None:
            target.executor = self
        return super().build_resolve_info(*args, **kwargs)

    def _key(self, event: Any) -> tuple[int, str, int] | None:
        variables = self._variables
        if variables is None:
            try:
                # as text: orjson's bytes keep the 4 KB buffer they were written in, which
                # the cache would hold for each of its entries
                variables = orjson.dumps(
                    self.variable_values.coerced, option=orjson.OPT_SORT_KEYS
                ).decode()
            except TypeError:
                return None
            self._variables = variables
        return (id(self.operation), variables, id(event))

    def render_payload(self, event: Job) -> bytes | None:
        """The ``next`` payload of ``event`` for this subscription, as JSON, rendered once
        for everyone asking the same; None when it has errors or is not ready at once."""
        key = self._key(event)
        if key is None:
            return None
        cached = self._payloads.get(key)
        if cached is not None:
            return cached[2]
        executor = cast(SharedEventExecution, self.build_per_event_executor(event))
        result = executor._shared_result(key, False)
        if isinstance(result, asyncio.Future) or result.errors:
            return None
        # exact-size bytes: orjson's own keep the 4 KB buffer they were written in
        payload = orjson.dumps({"data": result.data}).decode().encode()
        keep(self._payloads, key, (event, self.operation, payload), RESULTS_KEPT)
        return payload

    def execute_operation(self, serially: bool | None = None) -> Any:
        event = self.root_value
        if self.operation.operation is not OperationType.SUBSCRIPTION or not isinstance(event, Job):
            return super().execute_operation(serially)
        key = self._key(event)
        if key is None:
            return super().execute_operation(serially)
        result = self._shared_result(key, serially)
        if isinstance(result, asyncio.Future):
            return _shared(result)
        return result

    def _shared_result(self, key: tuple[int, str, int], serially: bool | None) -> Any:
        """This event's result for everyone with ``key``: made once, a Future while it is
        awaited."""
        cached = self._results.get(key)
        if cached is not None:
            return cached[2]
        result = super().execute_operation(serially)
        if self.is_awaitable(result):
            result = asyncio.ensure_future(result)
        keep(self._results, key, (self.root_value, self.operation, result), RESULTS_KEPT)
        return result


async def _shared(future: asyncio.Future[Any]) -> Any:
    # shield: one subscriber going away must not cancel the work the others wait on
    return await asyncio.shield(future)
