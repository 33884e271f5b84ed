"""Cursors of job pages: the position of a job in the newest-first order, opaque to clients."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

import orjson

from gql_media.domain import JOB_ID_PREFIX, JobSnapshot, decode_id
from gql_media.errors import ErrorCode, UserError


def encode_cursor(job: JobSnapshot) -> str:
    raw = orjson.dumps([job.created_at.isoformat(), job.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = orjson.loads(raw)
        if not isinstance(created, str) or not isinstance(job_id, str):
            raise TypeError(cursor)
        parsed = decode_id(JOB_ID_PREFIX, job_id)
        if parsed is None:
            raise ValueError(job_id)
        return datetime.fromisoformat(created), parsed
    except (ValueError, TypeError, binascii.Error) as exc:
        raise UserError(ErrorCode.INVALID_CURSOR, "malformed cursor", "after") from exc
