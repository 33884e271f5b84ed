"""Inserting rows that arrive together as one statement."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from gql_media.batching import Batcher
from gql_media.db.engine import is_unavailable

Row = dict[str, Any]


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
    """

    def __init__(
        self,
        engine: AsyncEngine,
        autocommit: AsyncEngine,
        statement: Insert,
    ) -> None:
        """``autocommit`` is ``engine`` where each statement commits by itself."""
        self._engine = engine
        self._autocommit = autocommit
        self._statement = statement
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

    async def _send(self, rows: list[Row]) -> list[Exception | None]:
        try:
            if len(rows) == 1 or self._atomic_batches:
                async with self._autocommit.connect() as connection:
                    await connection.execute(self._statement, rows)
            else:
                async with self._engine.begin() as connection:
                    await connection.execute(self._statement, rows)
        except (StatementError, ValueError, OverflowError) as error:
            if not refused_value(error):
                raise
            if len(rows) == 1:
                return [error]
            return [(await self._send([row]))[0] for row in rows]
        return [None] * len(rows)
