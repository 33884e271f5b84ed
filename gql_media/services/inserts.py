"""Inserting rows that arrive together as one statement."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gql_media.batching import Batcher
from gql_media.db.engine import is_unavailable

Row = dict[str, Any]
# Runs in the transaction of a batch, before its INSERT: the refusal of each row (None to
# insert it). Rows it refuses are left out of the INSERT.
Guard = Callable[[AsyncConnection, list[Row]], Awaitable[list[Exception | None]]]
# Which rows of a batch need ``guard`` (and with it a transaction of their own).
Guarded = Callable[[Row], bool]


def refused_value(exc: BaseException) -> bool:
    """Whether ``exc`` says the database or its driver cannot take a value of the row (a
    data exception or a broken constraint, SQLSTATE classes 22 and 23, or a value the driver
    cannot encode), as opposed to an unreachable database or a wrong statement."""
    if is_unavailable(exc):
        return False
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(code, str) and code[:2] in ("22", "23")
    if isinstance(exc, StatementError):  # a value its type could not turn into a parameter
        return True
    # raised unwrapped by a driver encoding a parameter (SQLite: lone surrogates, big ints)
    return isinstance(exc, ValueError | OverflowError)


class RowInserter:
    """``await inserter(row)`` runs ``statement`` for ``row``; rows given while earlier inserts
    are out go to the database together, atomically, in one round trip on PostgreSQL.

    A row the database refuses (``refused_value``: a broken constraint, a value it cannot
    store or encode) raises for its caller alone: the batch is undone as a whole and its rows
    are then inserted one by one, so one request's bad row never fails the others. Other
    failures (the database unreachable) reach every caller of the batch.

    With a ``guard``, the rows ``guarded`` selects are inserted in a transaction that first
    runs ``guard`` on them; it may refuse some (a per-owner cap) with an exception of its own.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        autocommit: AsyncEngine,
        statement: Insert,
        guard: Guard | None = None,
        guarded: Guarded | None = None,
    ) -> None:
        """``autocommit`` is ``engine`` where each statement commits by itself."""
        self._engine = engine
        self._autocommit = autocommit
        self._statement = statement
        self._guard = guard
        self._guarded = guarded
        # asyncpg runs a batch as one pipelined, all-or-nothing command; elsewhere the
        # batch gets a transaction of its own
        self._atomic_batches = engine.dialect.driver == "asyncpg"
        self._insert = Batcher(self._send)

    @property
    def batcher(self) -> Batcher[Row, Exception | None]:
        """The batcher behind the inserts (for observing it: ``sending``, ``waiting``)."""
        return self._insert

    async def __call__(self, row: Row) -> None:
        failed = await self._insert(row)
        if failed is not None:
            raise failed

    def _connection(
        self, rows: list[Row], guarded: list[int]
    ) -> AbstractAsyncContextManager[AsyncConnection]:
        if guarded or (len(rows) > 1 and not self._atomic_batches):
            return self._engine.begin()
        return self._autocommit.connect()

    async def _send(self, rows: list[Row]) -> list[Exception | None]:
        guard, selects = self._guard, self._guarded
        guarded = [i for i, row in enumerate(rows) if selects(row)] if guard and selects else []
        results: list[Exception | None] = [None] * len(rows)
        try:
            async with self._connection(rows, guarded) as connection:
                if guard is not None and guarded:
                    refusals = await guard(connection, [rows[i] for i in guarded])
                    for i, refused in zip(guarded, refusals, strict=True):
                        results[i] = refused
                admitted = [
                    row for row, refusal in zip(rows, results, strict=True) if refusal is None
                ]
                if admitted:
                    await connection.execute(self._statement, admitted)
        except (StatementError, ValueError, OverflowError) as error:
            if not refused_value(error):
                raise
            if len(rows) == 1:
                return [error]
            return [(await self._send([row]))[0] for row in rows]
        return results
