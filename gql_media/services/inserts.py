"""Inserting rows that arrive together as one statement."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gql_media.batching import Batcher


class RowInserter:
    """``await inserter(row)`` runs ``statement`` for ``row``; rows given while earlier inserts
    are out go to the database together, atomically, in one round trip on PostgreSQL. A row that
    breaks a constraint raises IntegrityError for its caller alone: the batch is undone as a
    whole and its rows are then inserted one by one."""

    def __init__(self, engine: AsyncEngine, autocommit: AsyncEngine, statement: Insert) -> None:
        """``autocommit`` is ``engine`` where each statement commits by itself."""
        self._engine = engine
        self._autocommit = autocommit
        self._statement = statement
        # asyncpg runs a batch as one pipelined, all-or-nothing command; elsewhere the
        # batch gets a transaction of its own
        self._atomic_batches = engine.dialect.driver == "asyncpg"
        self._insert = Batcher(self._send)

    async def __call__(self, row: dict[str, Any]) -> None:
        failed = await self._insert(row)
        if failed is not None:
            raise failed

    async def _send(self, rows: list[dict[str, Any]]) -> list[IntegrityError | None]:
        try:
            if len(rows) == 1 or self._atomic_batches:
                async with self._autocommit.connect() as connection:
                    await connection.execute(self._statement, rows)
            else:
                async with self._engine.begin() as connection:
                    await connection.execute(self._statement, rows)
        except IntegrityError as error:
            if len(rows) == 1:
                return [error]
            return [(await self._send([row]))[0] for row in rows]
        return [None] * len(rows)
