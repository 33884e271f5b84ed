"""Alembic environment: async engines on PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from gql_media.db.engine import pgbouncer_connect_args
from gql_media.db.models import Base
from gql_media.settings import Settings

config = context.config
database_url: str = config.attributes.get("database_url") or Settings().effective_database_url
# behind PgBouncer in transaction pooling mode: no prepared statement may be kept or named
pgbouncer: bool = config.attributes.get("pgbouncer", False)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    connect_args = pgbouncer_connect_args() if pgbouncer else {}
    engine = create_async_engine(database_url, poolclass=pool.NullPool, connect_args=connect_args)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=database_url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
