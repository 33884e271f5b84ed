"""jobs: the idempotency key's unique index holds only jobs with a key

A unique constraint's index has an entry for every row version, NULL keys included, so each
change of any job (insert, claim, end) wrote one. Most jobs have no key. A unique index of
the jobs with a key refuses the same duplicates and is written only for them; a lookup by
key (``idempotency_key = …`` or ``IN (…)``) implies its condition and still reads it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_KEY = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        batch_op.create_index(
            "ix_jobs_idempotency_key",
            ["idempotency_key"],
            unique=True,
            postgresql_where=WITH_KEY,
            sqlite_where=WITH_KEY,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_idempotency_key")
        batch_op.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
