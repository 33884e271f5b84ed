"""Database rows. GraphQL types are not these: services convert rows to snapshots."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    Uuid,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite compares the stored text: keep one format, always UTC.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


# the conditions of the jobs table's partial indexes (migration 0010)
UNFINISHED = text("status IN ('QUEUED', 'RUNNING')")
FINISHED = text("finished_at IS NOT NULL")
WITH_WEBHOOK = text("webhook_state IS NOT NULL")
WITH_IDEMPOTENCY_KEY = text("idempotency_key IS NOT NULL")  # migration 0011


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    prompt: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(256))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_retryable: Mapped[bool | None] = mapped_column(Boolean)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(255))
    # The worker running the job holds the lease; it heartbeats lease_until forward.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    run_after: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # what the job found out besides its files, e.g. a video's metadata
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the API key that asked for the job; None when auth is off
    owner_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    # where to POST the job when it ends; "pending" until delivered or given up on
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_state: Mapped[str | None] = mapped_column(String(16))
    # what the scheduler reads: higher priority starts first; fair_group is a fairness
    # group inside the owner (None: the owner's default group); past its deadline a job is
    # too late
    priority: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    fair_group: Mapped[str | None] = mapped_column(String(128))
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())

    outputs: Mapped[list[AssetRow]] = relationship(
        back_populates="job", order_by="AssetRow.position", lazy="raise"
    )

    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        # Every change of a job writes a new row version and an entry for it in each index
        # whose condition it meets (status is indexed, so no change is a heap-only update).
        # The indexes the service reads for one stage of a job's life hold only that stage:
        # a job's insert, claim and end write each of them once at most.
        # the reconciler's and the queue's reads of QUEUED and RUNNING jobs (UNFINISHED)
        Index(
            "ix_jobs_unfinished_status_run_after",
            "status",
            "run_after",
            "id",
            postgresql_where=UNFINISHED,
            sqlite_where=UNFINISHED,
        ),
        # retention and the catch-up of finished jobs
        Index(
            "ix_jobs_finished_at",
            "finished_at",
            postgresql_where=FINISHED,
            sqlite_where=FINISHED,
        ),
        Index("ix_jobs_owner_id_created_at", "owner_id", "created_at"),
        # one job per idempotency key; jobs without a key (most) are not in it
        Index(
            "ix_jobs_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=WITH_IDEMPOTENCY_KEY,
            sqlite_where=WITH_IDEMPOTENCY_KEY,
        ),
        # webhook deliveries owed (only jobs with a webhook have a state)
        Index(
            "ix_jobs_webhook_state_finished_at",
            "webhook_state",
            "finished_at",
            postgresql_where=WITH_WEBHOOK,
            sqlite_where=WITH_WEBHOOK,
        ),
        # the reconciler's pass for QUEUED jobs past their deadline, every interval; only
        # jobs with a deadline are in it, so a change of any other job does not write it
        Index(
            "ix_jobs_status_deadline",
            "status",
            "deadline",
            postgresql_where=text("deadline IS NOT NULL"),
            sqlite_where=text("deadline IS NOT NULL"),
        ),
        # jobEvents(since:) replays in change order: a key's jobs, or everyone's (admins)
        Index("ix_jobs_owner_id_updated_at_id", "owner_id", "updated_at", "id"),
        Index("ix_jobs_updated_at_id", "updated_at", "id"),
    )


def status_in(*statuses: str) -> ColumnElement[bool]:
    """``jobs.status`` among ``statuses``, written in the SQL as constants, not parameters:
    PostgreSQL then matches a read of QUEUED or RUNNING jobs to the partial index of the
    unfinished ones (``UNFINISHED``) in every plan, a prepared statement's generic plan
    too."""
    assert all(status.isalpha() for status in statuses), statuses
    return JobRow.status.in_([literal_column(f"'{status}'") for status in statuses])


class AssetRow(Base):
    __tablename__ = "media_assets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid(), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    storage_key: Mapped[str] = mapped_column(String(512), unique=True)
    content_type: Mapped[str] = mapped_column(String(128))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    byte_size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # "upload" for files clients sent, "output" for files jobs made
    role: Mapped[str] = mapped_column(String(16), default="output", server_default="output")
    name: Mapped[str | None] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(255))
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # for uploads: the API key that sent the file (outputs belong to their job's owner)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())

    job: Mapped[JobRow | None] = relationship(back_populates="outputs", lazy="raise")


class ApiKeyRow(Base):
    """An API key: only its SHA-256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # the highest priority the key's jobs may ask for (None: no limit), and how many of
    # them may run at once (None: no cap)
    max_priority: Mapped[int | None] = mapped_column(SmallInteger)
    max_running: Mapped[int | None] = mapped_column(Integer)


class WebhookDeliveryRow(Base):
    """One attempt to deliver a job's webhook."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    webhook_id: Mapped[str] = mapped_column(String(80))
    event: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
