"""Sending the writes of one event-loop turn together.

Under load many requests (or jobs) reach the same write in the same turn of the event loop:
an INSERT, a Redis script, a PUBLISH. Sent one by one, each costs a socket write and a
round trip; sent together, the whole turn costs one. Nothing waits for a batch to fill: the
send starts on the next turn, so a lone call is only a turn late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class TurnBatcher(Generic[T, R]):
    """``await batcher(item)``: items given in the same turn go to ``send`` as one list,
    which returns one result per item, in order; each caller gets its own. When ``send``
    raises, every caller of that batch gets the exception. A caller that is canceled does
    not cancel the send of the others."""

    def __init__(self, send: Callable[[list[T]], Awaitable[Sequence[R]]]) -> None:
        self._send = send
        self._items: list[T] | None = None
        self._sending: asyncio.Future[Sequence[R]] | None = None

    async def __call__(self, item: T) -> R:
        if self._items is None:
            self._items = []
            self._sending = asyncio.ensure_future(self._send_items())
        index = len(self._items)
        self._items.append(item)
        assert self._sending is not None
        results = await asyncio.shield(self._sending)
        return results[index]

    async def _send_items(self) -> Sequence[R]:
        items, self._items = self._items or [], None
        return await self._send(items)
