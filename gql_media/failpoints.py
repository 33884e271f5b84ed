"""Failpoints for fault-injection tests.

With ``GQL_MEDIA_CRASH_AT=<name>`` in its environment, a process kills itself with SIGKILL
when it reaches the failpoint ``<name>`` — a real crash at an exact point of a job, which
an external kill cannot time. Unset (always, in production) a failpoint costs one lookup.

Pause points are their in-process kin: a test that runs the api in its own event loop
registers a coroutine with ``pausing(<name>, hook)``, and the api awaits it each time it
reaches ``<name>`` — a change made there lands at an exact point of an operation, with no
sleep. None is registered in production: a pause point then costs one lookup too.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

CLAIMED = "claimed"  # the job is RUNNING, the provider not yet called
OUTPUT_WRITTEN = "output-written"  # the first output file is in storage
BEFORE_FINISH = "before-finish"  # every output is written, SUCCEEDED not yet committed
FINISHED = "finished"  # SUCCEEDED committed and announced, the run not yet returned

# pause points
REPLAY_START = "replay-start"  # a jobEvents replay listens, and has read nothing yet
REPLAY_PAGE = "replay-page"  # a page of a jobEvents replay is read, not yet sent

_hooks: dict[str, Callable[[], Awaitable[None]]] = {}


def failpoint(name: str) -> None:
    if os.environ.get("GQL_MEDIA_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


async def pause_point(name: str) -> None:
    """Await the hook registered for ``name``, if any."""
    hook = _hooks.get(name)
    if hook is not None:
        await hook()


@contextmanager
def pausing(name: str, hook: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """Run ``hook`` at every pause point ``name`` reached inside the block (tests only)."""
    _hooks[name] = hook
    try:
        yield
    finally:
        _hooks.pop(name, None)
