"""jobs: the deadline index holds only jobs with a deadline

A job's every change (its status, its update time) wrote an entry in the index of the
reconciler's pass for QUEUED jobs past their deadline, also for the jobs without one, most
of them. Partial, the index is written only for jobs with a deadline; the pass's condition
(``deadline <= now``) implies the index's, so the pass still reads it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_DEADLINE = sa.text("deadline IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_deadline")
        batch_op.create_index(
            "ix_jobs_status_deadline",
            ["status", "deadline"],
            unique=False,
            postgresql_where=WITH_DEADLINE,
            sqlite_where=WITH_DEADLINE,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_deadline")
        batch_op.create_index("ix_jobs_status_deadline", ["status", "deadline"], unique=False)
