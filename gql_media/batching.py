"""Sending writes that pile up behind one another together.

Under load many requests (or jobs) reach the same write at nearly the same time: an
INSERT, a Redis script, a PUBLISH. Sent one by one, each costs a socket write and a round
trip; sent together, a whole batch costs one. Nothing waits for a batch to fill: a call
made while fewer than ``in_flight`` sends are out goes at once, and calls made while they
are all out go together as soon as one returns (group commit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """``await batcher(item)``: ``send`` gets a list of items and returns one result per
    item, in order; each caller gets its own. At most ``in_flight`` sends are out at once,
    so one slow send (a lock, a stalled connection) does not hold up every caller. When
    ``send`` raises, every caller of that batch gets the exception. A caller that is
    canceled while its batch is sent leaves the send of the others."""

    def __init__(
        self, send: Callable[[list[T]], Awaitable[Sequence[R]]], in_flight: int = 2
    ) -> None:
        self._send = send
        self._in_flight = in_flight
        self._sending = 0
        self._waiting: list[T] = []
        self._next: asyncio.Future[Sequence[R]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # batches being sent, kept alive

    @property
    def sending(self) -> int:
        """Sends out now."""
        return self._sending

    @property
    def waiting(self) -> int:
        """Items waiting for the next send."""
        return len(self._waiting)

    async def __call__(self, item: T) -> R:
        if self._sending < self._in_flight:
            self._sending += 1
            try:
                return (await self._send([item]))[0]
            finally:
                self._sent()
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        batch, index = self._next, len(self._waiting)
        self._waiting.append(item)
        return (await asyncio.shield(batch))[index]

    def _sent(self) -> None:
        """A send returned: send what piled up meanwhile, if anything."""
        self._sending -= 1
        if self._next is None:
            return
        items, batch = self._waiting, self._next
        self._waiting, self._next = [], None
        self._sending += 1
        task = asyncio.ensure_future(self._send_batch(items, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, items: list[T], batch: asyncio.Future[Sequence[R]]) -> None:
        try:
            batch.set_result(await self._send(items))
        except asyncio.CancelledError:
            batch.cancel()
            raise
        except Exception as exc:
            batch.set_exception(exc)
            batch.exception()  # its callers get it; none left (all canceled) is no error
        finally:
            self._sent()
