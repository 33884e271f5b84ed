"""jobs: the indexes of one stage of a job's life hold only the jobs in that stage

Every change of a job writes a new row version, and an entry for it in each index whose
condition it meets (status is indexed, so no change is a heap-only update). Four indexes
were read for one stage of a job's life only, yet written at each of its changes:

- ``ix_jobs_status_run_after`` and ``ix_jobs_status_lease_until`` (the reconciler's and the
  queue's reads of QUEUED and RUNNING jobs) become one index of the unfinished jobs,
  ``ix_jobs_unfinished_status_run_after``; a RUNNING job's lease is read beside its status
  there (a few jobs run at once);
- ``ix_jobs_finished_at`` (retention, the catch-up) holds the finished jobs only;
- ``ix_jobs_webhook_state_finished_at`` (deliveries owed) holds the jobs with a webhook only.

A job that runs once (insert, claim, end) now writes 7 entries fewer.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 14:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("status IN ('QUEUED', 'RUNNING')")
FINISHED = sa.text("finished_at IS NOT NULL")
WITH_WEBHOOK = sa.text("webhook_state IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_run_after")
        batch_op.drop_index("ix_jobs_status_lease_until")
        batch_op.drop_index("ix_jobs_finished_at")
        batch_op.drop_index("ix_jobs_webhook_state_finished_at")
        batch_op.create_index(
            "ix_jobs_unfinished_status_run_after",
            ["status", "run_after", "id"],
            unique=False,
            postgresql_where=UNFINISHED,
            sqlite_where=UNFINISHED,
        )
        batch_op.create_index(
            "ix_jobs_finished_at",
            ["finished_at"],
            unique=False,
            postgresql_where=FINISHED,
            sqlite_where=FINISHED,
        )
        batch_op.create_index(
            "ix_jobs_webhook_state_finished_at",
            ["webhook_state", "finished_at"],
            unique=False,
            postgresql_where=WITH_WEBHOOK,
            sqlite_where=WITH_WEBHOOK,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_webhook_state_finished_at")
        batch_op.drop_index("ix_jobs_finished_at")
        batch_op.drop_index("ix_jobs_unfinished_status_run_after")
        batch_op.create_index(
            "ix_jobs_webhook_state_finished_at", ["webhook_state", "finished_at"], unique=False
        )
        batch_op.create_index("ix_jobs_finished_at", ["finished_at"], unique=False)
        batch_op.create_index("ix_jobs_status_lease_until", ["status", "lease_until"], unique=False)
        batch_op.create_index("ix_jobs_status_run_after", ["status", "run_after"], unique=False)
