"""Run alembic migrations from code: ``gql-media migrate`` and the embedded start-up use it."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def script_location() -> Path:
    """The migrations directory: packaged inside the wheel, or ``alembic/`` of a checkout."""
    packaged = _PACKAGE_DIR / "_migrations"
    if packaged.is_dir():
        return packaged
    return _PACKAGE_DIR.parent / "alembic"


def alembic_config(database_url: str, *, pgbouncer: bool = False) -> Config:
    """``pgbouncer``: the url goes through PgBouncer in transaction pooling mode (a migration
    runs in one transaction, so it needs nothing more than the engine's settings for it)."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["database_url"] = database_url
    config.attributes["pgbouncer"] = pgbouncer
    return config


def upgrade(database_url: str, revision: str = "head", *, pgbouncer: bool = False) -> None:
    """Bring the database at ``database_url`` to ``revision``. Blocking: call from a thread."""
    command.upgrade(alembic_config(database_url, pgbouncer=pgbouncer), revision)
