"""Rows to snapshots: the only place that knows both shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gql_media.db.models import AssetRow, JobRow
from gql_media.domain import (
    ASSET_ID_PREFIX,
    JOB_ID_PREFIX,
    AssetSnapshot,
    JobError,
    JobKind,
    JobSnapshot,
    JobStatus,
    encode_id,
)


def asset_snapshot(row: AssetRow) -> AssetSnapshot:
    return AssetSnapshot(
        id=encode_id(ASSET_ID_PREFIX, row.id),
        key=row.storage_key,
        content_type=row.content_type,
        width=row.width,
        height=row.height,
        byte_size=row.byte_size,
        sha256=row.sha256,
        name=row.name,
        filename=row.filename,
        info=row.info,
        created_at=row.created_at,
    )


_NO_VALUES = dict.fromkeys(JobRow.__table__.columns.keys())


class ColumnValues:
    """A job's column values, read like a row's attributes (the ones not given are None):
    a job as a statement returned it or as it is about to be inserted, without building an
    ORM row for it, which costs more than the rest of a request's or a run's bookkeeping."""

    def __init__(self, values: Mapping[Any, Any]) -> None:
        self.__dict__.update(_NO_VALUES)
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # every column is set: this is not one
        raise AttributeError(name)


JobColumns = JobRow | ColumnValues  # what a job's columns are read from


def job_snapshot(row: JobColumns, outputs: Sequence[AssetRow] = ()) -> JobSnapshot:
    error = (
        JobError(row.error_code, row.error_message or "", bool(row.error_retryable))
        if row.error_code
        else None
    )
    return JobSnapshot(
        id=encode_id(JOB_ID_PREFIX, row.id),
        kind=JobKind(row.kind),
        status=JobStatus(row.status),
        progress=row.progress,
        version=row.version,
        prompt=row.prompt,
        provider=row.provider,
        model=row.model,
        parameters=dict(row.parameters or {}),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        error=error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outputs=tuple(asset_snapshot(a) for a in outputs),
        result=row.result,
        owner=row.owner_id.hex if row.owner_id is not None else None,
        webhook_url=row.webhook_url,
        priority=row.priority or 0,
        group=row.fair_group,
        deadline=row.deadline,
    )
