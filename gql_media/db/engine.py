"""Engine and session factory; built by whoever owns the event loop, never at import."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from gql_media.errors import STORAGE_ERRNOS

# A pooled connection idle longer than this is pinged before use; a busier one is not
# (SQLAlchemy's pre-ping costs three round trips on every checkout).
PING_AFTER_IDLE_SECONDS = 1.0


def create_engine(
    url: str, *, pool_size: int = 20, timeout: float = 5.0, pgbouncer: bool = False
) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL and a busy timeout for concurrent writers.

    On PostgreSQL, ``timeout`` bounds each wait on the database: connecting, taking a
    connection from the pool, and every statement on a pooled connection (the driver's
    ``command_timeout``). A database that went silent (a partition drops packets, so no
    connection is reset) fails the wait with TimeoutError, which ``is_unavailable`` takes for
    an outage, instead of hanging requests and workers until the network heals.

    ``pgbouncer``: the url reaches PostgreSQL through PgBouncer in transaction pooling mode
    (``pgbouncer_connect_args``)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeout,
        connect_args={
            "timeout": timeout,
            "command_timeout": timeout,
            **(pgbouncer_connect_args() if pgbouncer else {}),
        },
    )
    _check_on_checkout(engine.sync_engine, PING_AFTER_IDLE_SECONDS)
    return engine


def pgbouncer_connect_args() -> dict[str, Any]:
    """asyncpg's arguments for PgBouncer in transaction pooling mode, where each transaction
    (each statement, outside one) may run on another server connection.

    A named prepared statement lives on the server connection that prepared it: a later
    transaction finds it missing, or finds another client's under the same name. So no
    statement is kept (asyncpg's cache and SQLAlchemy's are off) and none is named:
    SQLAlchemy still asks asyncpg to prepare each statement (to learn its types), but as
    the unnamed statement, which asyncpg parses again in the same message as its execution
    when its own cache is off. Unique names, which SQLAlchemy's documentation suggests, are
    not enough: asyncpg closes statements it no longer needs between preparing a statement
    and running it, which ends the implicit transaction of an autocommit statement and hands
    its server connection to another client, and every statement left unclosed stays on its
    server connection."""
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unnamed,
    }


def _unnamed() -> str:
    return ""


def _check_on_checkout(engine: Engine, ping_after: float) -> None:
    """Replace a pooled connection that the server closed (seen without a round trip: the
    driver read the server's goodbye) or that fails a ping after sitting idle. A connection
    broken in between fails its statement, which invalidates the pool as before."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(
        dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        driver = record.driver_connection
        if driver is not None and driver.is_closed():
            raise sa_exc.DisconnectionError("the server closed the connection")
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < ping_after:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise sa_exc.DisconnectionError(str(exc)) from exc


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached (worth retrying later),
    as opposed to a statement that is wrong. A file system's refusal to write (a full disk)
    is an OSError too, but it is the storage's, not the database's."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return False
    if isinstance(exc, OSError | TimeoutError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


@dataclass(slots=True)
class Outage:
    """What ``suppress_unavailable`` swallowed: the error that said the database could not
    be reached, or None when the block ran through."""

    error: Exception | None = None


@contextlib.contextmanager
def suppress_unavailable() -> Iterator[Outage]:
    """``with suppress_unavailable() as outage:`` ends the block quietly when the database
    could not be reached (``is_unavailable``), keeping the error in ``outage.error``; every
    other error goes through. For work that may wait out an outage, or do without."""
    outage = Outage()
    try:
        yield outage
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        outage.error = exc


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
