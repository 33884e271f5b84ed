"""schema.graphql is what the code serves, and migrations are the only source of tables."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from gql_media.api.schema import build_schema
from gql_media.db.migrate import alembic_config
from gql_media.db.models import Base
from gql_media.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_schema_file_is_current() -> None:
    exported = build_schema(Settings()).as_str() + "\n"
    assert (ROOT / "schema.graphql").read_text() == exported, (
        "schema.graphql is stale: run `gql-media export-schema -o schema.graphql`"
    )


def test_migrations_match_the_models(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = alembic_config(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    command.upgrade(config, "head")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert {"jobs", "media_assets"} <= set(inspect(connection).get_table_names())
        command.downgrade(config, "base")
        with engine.connect() as connection:
            assert "jobs" not in inspect(connection).get_table_names()
    finally:
        engine.dispose()
