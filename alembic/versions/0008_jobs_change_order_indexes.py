"""jobs in change order: the indexes a jobEvents replay (since:) reads

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_owner_id_updated_at_id", ["owner_id", "updated_at", "id"], unique=False
        )
        batch_op.create_index("ix_jobs_updated_at_id", ["updated_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_updated_at_id")
        batch_op.drop_index("ix_jobs_owner_id_updated_at_id")
