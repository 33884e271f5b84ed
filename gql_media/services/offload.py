"""Running blocking media work away from the event loop, for as long as its job runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from gql_media.adapters.providers import ProviderContext
from gql_media.errors import JobCanceled
from gql_media.services.deps import Deps

T = TypeVar("T")
# how often running media work looks whether its job was canceled: the work ends that soon
CANCEL_CHECK_SECONDS = 1.0


async def offload(
    deps: Deps,
    context: ProviderContext,
    function: Callable[..., T],
    *args: Any,
    share: tuple[int, int] | None = (0, 1),
    **kwargs: Any,
) -> T:
    """``function(*args, **kwargs)`` away from the event loop: in a child process of
    ``deps.processes``, killed as soon as the job times out or is canceled, or in a thread
    with isolation off (the work then stops at its next progress report).

    With a ``share`` (index, count) the function gets a ``progress`` keyword; its reports,
    scaled into that share of the job, reach the job at most every progress interval.
    """
    state: dict[str, Any] = {"fraction": 0.0, "stop": False}

    def report(fraction: float) -> None:
        if state["stop"]:
            raise JobCanceled("the job was canceled")
        index, count = share or (0, 1)
        state["fraction"] = (index + fraction) / count

    progress = report if share is not None else None
    if deps.processes is not None:
        work = deps.processes.run(function, *args, progress=progress, **kwargs)
    else:
        reporting = {"progress": progress} if progress is not None else {}
        work = asyncio.to_thread(function, *args, **kwargs, **reporting)
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    try:
        return await _watch(deps, context, task, state)
    except BaseException:
        state["stop"] = True
        task.cancel()
        await asyncio.wait({task})  # a child process is gone before the job moves on
        raise


async def _watch(
    deps: Deps, context: ProviderContext, task: asyncio.Future[T], state: dict[str, Any]
) -> T:
    """The result of ``task``, passing its progress on and looking out for a cancel."""
    checked = time.monotonic()
    while True:
        done, _ = await asyncio.wait({task}, timeout=max(deps.settings.progress_interval, 0.05))
        if done:
            return task.result()
        await context.progress(state["fraction"])
        if time.monotonic() - checked >= CANCEL_CHECK_SECONDS:
            # progress writes (which notice a cancel) stop while the fraction stands
            # still, and the lease renewal comes only every third of the lease
            checked = time.monotonic()
            await context.ensure_running()
