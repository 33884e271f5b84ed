"""The client side of the fan-out scenarios: many subscribed sockets, in one or more processes.

Each client process (or the bench's own loop, with one) runs ``serve_plan``: it opens its
share of the sockets, subscribes, reports ``ready``, waits for ``go`` and then records every
event until its sockets have what they expect. The latency of an event is the receiving
wall clock minus the job's ``updatedAt``, the time the worker stamped on the change just
before committing and publishing it: on one machine both are read from the same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from gql_media.bench.http import Api
from gql_media.bench.ws import EVENTS, FOLLOW, TERMINAL, GraphQLSocket, age_ms, field_of


@dataclass(frozen=True)
class Plan:
    """What one client process does."""

    kind: str  # "updated": one jobUpdated per socket; "events": one jobEvents per socket
    base_url: str
    key: str | None
    compression: bool
    connections: int
    connect_concurrency: int
    job_ids: tuple[str, ...] = ()  # "updated": the job of each socket
    job_ms: int = 0  # "updated" without ids: each socket submits a job of this duration
    job_filter: dict[str, Any] | None = None  # "events"


class Control(Protocol):
    async def send(self, message: tuple[str, dict[str, Any]]) -> None: ...

    async def recv(self) -> tuple[str, dict[str, Any]]: ...


class LocalControl:
    """Both ends of a control channel inside one event loop."""

    def __init__(
        self,
        inbox: asyncio.Queue[tuple[str, dict[str, Any]]],
        outbox: asyncio.Queue[tuple[str, dict[str, Any]]],
    ) -> None:
        self._inbox, self._outbox = inbox, outbox

    async def send(self, message: tuple[str, dict[str, Any]]) -> None:
        await self._outbox.put(message)

    async def recv(self) -> tuple[str, dict[str, Any]]:
        return await self._inbox.get()


class PipeControl:
    """A control channel over a multiprocessing pipe (blocking calls run in threads)."""

    def __init__(self, connection: Connection, executor: ThreadPoolExecutor | None) -> None:
        self._connection, self._executor = connection, executor

    async def send(self, message: tuple[str, dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connection.send, message)

    async def recv(self) -> tuple[str, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        message: tuple[str, dict[str, Any]] = await loop.run_in_executor(
            self._executor, self._connection.recv
        )
        return message


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 16 if hard == resource.RLIM_INFINITY else hard
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    return soft


@dataclass
class Tally:
    """Shared state of one client's sockets."""

    total: int
    failed: int = 0
    ready: int = 0
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)
    expected: frozenset[str] | None = None  # "events": the jobs that count, known at "go"
    remaining: int = 0  # terminal events still awaited, once ``expected`` is known
    all_done: asyncio.Event = field(default_factory=asyncio.Event)

    def settle_ready(self) -> None:
        if self.ready + self.failed >= self.total:
            self.all_ready.set()

    def fail(self) -> None:
        self.failed += 1
        self.settle_ready()

    def terminal_arrived(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and self.expected is not None:
            self.all_done.set()


class Follower:
    """One socket following its job with jobUpdated: the first message is the snapshot,
    every later one a live event."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.snapshot: str | None = None
        self.events: list[tuple[str, float]] = []  # (status, latency ms)

    def handle(self, message: dict[str, Any], now: float, wall: float) -> None:
        if message.get("type") == "error" and self.snapshot is None:
            self.tally.fail()
            return
        job = field_of(message)
        if job is None:
            return
        if self.snapshot is None:
            self.snapshot = job["status"]
            self.tally.ready += 1
            self.tally.settle_ready()
            return
        self.events.append((job["status"], age_ms(job["updatedAt"], wall)))
        if job["status"] in TERMINAL:
            self.tally.terminal_arrived()


class Watcher:
    """One socket on jobEvents; live once its first event arrived."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.live = False
        self.events: list[tuple[str, str, float]] = []  # (job id, status, latency ms)
        self.terminal: set[str] = set()

    def handle(self, message: dict[str, Any], now: float, wall: float) -> None:
        job = field_of(message)
        if job is None:
            return
        if not self.live:
            self.live = True
            self.tally.ready += 1
            self.tally.settle_ready()
        self.events.append((job["id"], job["status"], age_ms(job["updatedAt"], wall)))
        if job["status"] in TERMINAL and job["id"] not in self.terminal:
            self.terminal.add(job["id"])
            if self.tally.expected is not None and job["id"] in self.tally.expected:
                self.tally.terminal_arrived()


async def _open(plan: Plan, tally: Tally, gate: asyncio.Semaphore) -> GraphQLSocket | None:
    url = "ws" + plan.base_url.removeprefix("http") + "/graphql"
    async with gate:
        try:
            return await GraphQLSocket.open(url, plan.key, plan.compression)
        except Exception:  # refused, reset, timed out: counted, the run goes on
            tally.fail()
            return None


async def _follow(
    plan: Plan, tally: Tally, gate: asyncio.Semaphore, job_id: str | None, api: Api
) -> tuple[GraphQLSocket, Follower] | None:
    socket = await _open(plan, tally, gate)
    if socket is None:
        return None
    if job_id is None:
        submitted = await api.submit({"delayMs": plan.job_ms})
        if submitted.job_id is None:
            tally.fail()
            return socket, Follower(tally)
        job_id = submitted.job_id
    follower = Follower(tally)
    await socket.subscribe("1", FOLLOW, {"id": job_id})
    return socket, follower


async def _watch(
    plan: Plan, tally: Tally, gate: asyncio.Semaphore
) -> tuple[GraphQLSocket, Watcher] | None:
    socket = await _open(plan, tally, gate)
    if socket is None:
        return None
    await socket.subscribe("1", EVENTS, {"filter": plan.job_filter})
    return socket, Watcher(tally)


def _summary(kind: str, handlers: list[Any], tally: Tally) -> dict[str, Any]:
    """Counts and latencies of one client, to be merged with the other clients'."""
    latencies: list[float] = []
    terminal: list[float] = []
    expected_terminal = delivered = finished_early = 0
    if kind == "updated":
        for follower in handlers:
            if follower.snapshot is None:
                continue
            if follower.snapshot in TERMINAL:
                finished_early += 1
                continue
            expected_terminal += 1
            latencies.extend(latency for _, latency in follower.events)
            ends = [latency for status, latency in follower.events if status in TERMINAL]
            if ends:
                delivered += 1
                terminal.append(ends[0])
    else:
        wanted = tally.expected or frozenset()
        for watcher in handlers:
            if not watcher.live:
                continue
            expected_terminal += len(wanted)
            seen: set[str] = set()
            for job_id, status, latency in watcher.events:
                if job_id not in wanted:
                    continue
                latencies.append(latency)
                if status in TERMINAL and job_id not in seen:
                    seen.add(job_id)
                    terminal.append(latency)
            delivered += len(seen)
    return {
        "connected": tally.ready,
        "failed": tally.failed,
        "finished_early": finished_early,
        "expected": expected_terminal,
        "delivered": delivered,
        "events": len(latencies),
        "latencies": latencies,
        "terminal_latencies": terminal,
    }


async def serve_plan(plan: Plan, control: Control) -> None:
    """Open and subscribe the plan's sockets, report ready, record events after go."""
    tally = Tally(total=plan.connections)
    gate = asyncio.Semaphore(plan.connect_concurrency)
    api = Api(plan.base_url, plan.key)
    listeners: list[asyncio.Task[None]] = []
    opened: list[tuple[GraphQLSocket, Any]] = []

    async def start(index: int) -> None:
        if plan.kind == "updated":
            job_id = plan.job_ids[index] if plan.job_ids else None
            pair: tuple[GraphQLSocket, Any] | None = await _follow(plan, tally, gate, job_id, api)
        else:
            pair = await _watch(plan, tally, gate)
        if pair is not None:
            opened.append(pair)
            listeners.append(asyncio.create_task(pair[0].listen(pair[1].handle)))

    try:
        await asyncio.gather(*(start(i) for i in range(plan.connections)))
        await tally.all_ready.wait()
        await control.send(("ready", {"connected": tally.ready, "failed": tally.failed}))
        _, go = await control.recv()
        if plan.kind == "events":
            tally.expected = frozenset(go["expect"])
            already = sum(len(w.terminal & tally.expected) for _, w in opened if w.live)
            tally.remaining = tally.ready * len(tally.expected) - already
        else:
            tally.expected = frozenset()
            already = sum(
                1
                for _, f in opened
                if f.snapshot in TERMINAL or any(s in TERMINAL for s, _ in f.events)
            )
            tally.remaining = tally.ready - already
        if tally.remaining <= 0:
            tally.all_done.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(go["timeout"]):
                await tally.all_done.wait()
        await control.send(("result", _summary(plan.kind, [h for _, h in opened], tally)))
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        await asyncio.gather(*(s.close() for s, _ in opened), return_exceptions=True)
        api.close()


def _child(plan: Plan, connection: Connection) -> None:
    """Entry point of a client process."""
    raise_fd_limit()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve_plan(plan, PipeControl(connection, None)))


class Clients:
    """The client processes (or the one in-loop client) of a fan-out scenario."""

    def __init__(self, plans: list[Plan], in_process: bool) -> None:
        self.plans = plans
        self.controls: list[Control] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._procs: list[Any] = []
        self._executor: ThreadPoolExecutor | None = None
        if in_process:
            for plan in plans:
                to_client: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
                to_parent: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
                self.controls.append(LocalControl(to_parent, to_client))
                client = LocalControl(to_client, to_parent)
                self._tasks.append(asyncio.create_task(serve_plan(plan, client)))
            return
        self._executor = ThreadPoolExecutor(max_workers=2 * len(plans))
        context = multiprocessing.get_context("spawn")
        for plan in plans:
            parent_end, child_end = context.Pipe()
            proc = context.Process(target=_child, args=(plan, child_end), daemon=True)
            proc.start()
            child_end.close()
            self._procs.append(proc)
            self.controls.append(PipeControl(parent_end, self._executor))

    async def gather(
        self, timeout: float, probe: Callable[[], Awaitable[object]] | None = None
    ) -> list[dict[str, Any]]:
        """The next message of every client, in order; TimeoutError after ``timeout``.
        With ``probe``, it is called about twice a second until every client answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        tasks = [asyncio.ensure_future(c.recv()) for c in self.controls]
        try:
            while True:
                if probe is not None:
                    await probe()
                wait = 0.5 if probe is not None else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(tasks, timeout=wait)
                for task in done:
                    task.result()  # a client that died raises here
                if not pending:
                    return [task.result()[1] for task in tasks]
                if loop.time() >= deadline:
                    raise TimeoutError("fan-out clients did not answer in time")
        finally:
            for task in tasks:
                task.cancel()

    async def broadcast(self, message: tuple[str, dict[str, Any]]) -> None:
        await asyncio.gather(*(c.send(message) for c in self.controls))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
