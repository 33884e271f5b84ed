"""Media work in child processes that can be stopped and capped.

    ProcessPool.run(function, ...)   → a warm child runs ``function``, one task at a time
        progress reports and the result come back over the child's own pipe
        the awaiting coroutine is cancelled → the child is killed at once (SIGKILL)
        an allocation past the memory ceiling → MediaError RESOURCE_LIMIT; the child is
            replaced
        the child dies (CPU backstop, the kernel's OOM killer, a crash) → MediaError
            RESOURCE_LIMIT or PROCESSING_FAILED; the child is replaced

Each child sets its own resource limits when it starts: an address-space ceiling
(``RLIMIT_AS``), so that an allocation past it fails inside the child as ``MemoryError``
instead of growing the worker, and a CPU-time backstop (``RLIMIT_CPU``), moved forward at
every task, that ends a child the parent somehow failed to stop. Children come from a fork
server that has imported the media modules, so replacing a killed child costs a fork, not
an interpreter start; children that finish a task normally are reused.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot stop one running task, and a
child that dies breaks the whole pool, failing every other task in it. Each child here has
its own pipe, so killing one mid-write cannot corrupt another's messages. A thread of the pool
waits for each busy child's next message (a killed child's pipe closes, which ends the
wait); watching the pipes from the event loop instead lost wake-ups under uvloop.

Killing is SIGKILL without a SIGTERM first: a child holds nothing to clean up (its outputs
are scratch files the caller removes), and SIGKILL ends its CPU work at once, even inside C
code that never returns to Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import resource
import signal
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from gql_media.errors import ErrorCode, MediaError

log = logging.getLogger(__name__)
T = TypeVar("T")
Progress = Callable[[float], None]
# imported once by the fork server, so that every child starts with them loaded
PRELOAD = ["gql_media.adapters.image_ops", "gql_media.adapters.video"]
_PR_SET_PDEATHSIG = 1  # prctl(2)
_M_ARENA_MAX, _MALLOC_ARENAS = -8, 4  # mallopt(3)
_LIMIT_SIGNALS = {signal.SIGKILL: "killed", signal.SIGXCPU: "over its CPU time limit"}


class ChildFailed(Exception):
    """The task raised an unexpected exception in the child; carries its traceback text."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of every child: bytes of address space (None: unlimited), and CPU
    seconds one task may use before the kernel ends the child."""

    memory_bytes: int | None
    cpu_seconds: int


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    conn: Connection


class ProcessPool:
    """Up to ``size`` warm children, each running one task at a time; a task waits for a
    free child. Nothing starts before the first task."""

    def __init__(self, size: int, limits: Limits) -> None:
        self._limits = limits
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._closed = False
        # threads that wait for children: one per busy child, and one more for reaping
        self._waiting = ThreadPoolExecutor(size + 1, thread_name_prefix="gql-media-media")

    async def run(
        self,
        function: Callable[..., T],
        *args: Any,
        progress: Progress | None = None,
        **kwargs: Any,
    ) -> T:
        """``function(*args, **kwargs)`` in a child; with ``progress``, the function gets a
        ``progress`` keyword whose reports reach ``progress`` here. Cancelling the caller
        kills the child."""
        if self._closed:
            raise RuntimeError("the process pool is closed")
        async with self._slots:
            child = self._idle.pop() if self._idle else await self._started()
            self._busy.add(child)
            try:
                kind, value = await self._exchange(child, function, args, kwargs, progress)
            except BaseException as exc:
                self._busy.discard(child)
                await self._kill(child)  # cancelled, or the child died: its work ends here
                log.info("media process %s stopped: %s", child.process.pid, type(exc).__name__)
                raise
            self._busy.discard(child)
            if kind == "memory" or self._closed:
                await self._kill(child)  # a fresh child replaces one whose heap hit the ceiling
            else:
                self._idle.append(child)
        answer: T = self._answer(kind, value)
        return answer

    async def aclose(self) -> None:
        """Stop every child: idle ones and any still running a task."""
        self._closed = True
        children, self._idle = [*self._idle, *self._busy], []
        for child in children:
            await self._kill(child)
        self._waiting.shutdown(wait=False)

    async def _kill(self, child: _Child) -> None:
        """End ``child`` now and reap it. Runs to the end even when the caller is cancelled
        meanwhile: a child left unreaped would linger."""
        with contextlib.suppress(ProcessLookupError, ValueError):
            child.process.kill()  # at once, here: the CPU work ends now
        reaping = asyncio.get_running_loop().run_in_executor(self._waiting, _end, child)
        try:
            await asyncio.shield(reaping)
        except asyncio.CancelledError:
            await reaping
            raise

    async def _started(self) -> _Child:
        """A new child. Started in a thread: the first start also starts the fork server,
        which imports the media modules before it forks."""
        starting = asyncio.ensure_future(asyncio.to_thread(self._start))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(self._keep)  # the start goes on: keep its child
            raise

    def _keep(self, starting: asyncio.Future[_Child]) -> None:
        if not starting.cancelled() and starting.exception() is None:
            self._idle.append(starting.result())

    def _start(self) -> _Child:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        parent, child_end = context.Pipe()
        process = context.Process(
            target=_child_main, args=(child_end, self._limits), name="gql-media-media", daemon=True
        )
        process.start()
        child_end.close()
        log.info("media process %s started", process.pid)
        return _Child(process, parent)

    async def _exchange(
        self,
        child: _Child,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        progress: Progress | None,
    ) -> tuple[str, Any]:
        """Send the task; relay progress reports; the child's final answer."""
        child.conn.send((function, args, kwargs, progress is not None))
        loop = asyncio.get_running_loop()
        while True:
            kind, value = await loop.run_in_executor(self._waiting, _receive, child)
            if kind != "progress":
                return kind, value
            if progress is not None:
                progress(value)

    def _answer(self, kind: str, value: Any) -> Any:
        if kind == "result":
            return value
        if kind == "media":
            raise MediaError(ErrorCode(value[0]), value[1])
        if kind == "memory":
            limit = (self._limits.memory_bytes or 0) // (1024 * 1024)
            raise MediaError(
                ErrorCode.RESOURCE_LIMIT,
                f"the work needed more memory than the limit of {limit} MiB",
            )
        raise ChildFailed(value)


def _receive(child: _Child) -> tuple[str, Any]:
    """The child's next message (blocking: runs on a waiting thread); MediaError once the
    child has died."""
    try:
        message: tuple[str, Any] = child.conn.recv()
    except (EOFError, OSError):
        raise _died(child) from None
    return message


def _died(child: _Child) -> MediaError:
    """The error for a child that ended without answering."""
    child.process.join()
    code = child.process.exitcode
    if code is not None and code < 0 and -code in _LIMIT_SIGNALS:
        return MediaError(
            ErrorCode.RESOURCE_LIMIT,
            f"the processing process was {_LIMIT_SIGNALS[signal.Signals(-code)]}",
        )
    return MediaError(ErrorCode.PROCESSING_FAILED, f"the processing process died ({code})")


def _end(child: _Child) -> None:
    """Kill ``child`` and reap it (blocking: runs on a waiting thread). Its pipe is left to
    close with the last reference: a thread may still be reading the end of it."""
    with contextlib.suppress(ProcessLookupError, ValueError):
        child.process.kill()
    child.process.join()


# ---- in the child ---------------------------------------------------------------------


def _child_main(conn: Connection, limits: Limits) -> None:
    """Take tasks from ``conn`` until it closes; answer each with messages of
    (kind, value): progress reports, then a result or an error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when children end
    _end_with_parent()
    if limits.memory_bytes is not None:
        _few_malloc_arenas()
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        function, args, kwargs, reports = task
        _allow_cpu(limits.cpu_seconds)
        if reports:
            kwargs = {**kwargs, "progress": lambda fraction: conn.send(("progress", fraction))}
        try:
            conn.send(("result", function(*args, **kwargs)))
        except MediaError as exc:
            conn.send(("media", (exc.code.value, exc.message)))
        except MemoryError:
            conn.send(("memory", None))
            return  # a fresh child replaces this one and its fragmented heap
        except Exception:
            conn.send(("failed", traceback.format_exc()))


def _end_with_parent() -> None:
    """On Linux, have the kernel kill this child when the fork server ends, which it does
    when the worker ends: a worker killed outright leaves no child working on."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _few_malloc_arenas() -> None:
    """With glibc, at most ``_MALLOC_ARENAS`` malloc arenas. Each reserves 64 MiB of address
    space, and glibc makes up to eight per CPU as codec threads start: on a large machine
    the reservations alone would pass the address-space ceiling, which counts them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).mallopt(_M_ARENA_MAX, _MALLOC_ARENAS)


def _allow_cpu(seconds: int) -> None:
    """Let the next task use ``seconds`` of CPU time on top of what the child used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def cpu_seconds_for(job_timeout: float) -> int:
    """The CPU backstop of one task: the job's time on every core, and a margin."""
    return int(job_timeout * (os.cpu_count() or 1)) + 10
