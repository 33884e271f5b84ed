"""A run's output files: where they are stored, writing them, and removing the files of a
run that lost its job."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select

from gql_media.db.models import JobRow
from gql_media.domain import JobStatus
from gql_media.failpoints import OUTPUT_WRITTEN, failpoint
from gql_media.services.deps import Deps
from gql_media.services.media import digest_file, extension_for
from gql_media.services.processing import Produced


def output_key(job_id: uuid.UUID, index: int, content_type: str) -> str:
    """``jobs/<first two hex digits>/<job id>-<index>.<ext>``. Deterministic: a rerun of the
    same job overwrites instead of duplicating. Jobs share 256 directories rather than one
    each: on local storage a new directory per job cost more than writing its file."""
    hex_id = job_id.hex
    return f"jobs/{hex_id[:2]}/{hex_id}-{index}.{extension_for(content_type)}"


def job_of_output_key(key: str) -> uuid.UUID | None:
    """The job an ``output_key`` belongs to, also for the earlier layout
    ``jobs/<id>/<n>.<ext>``; None for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "jobs":
        return None
    hex_id = parts[1] if len(parts[1]) == 32 else parts[2].split("-", 1)[0]
    try:
        return uuid.UUID(hex=hex_id)
    except ValueError:
        return None


async def store_outputs(
    deps: Deps, job_id: uuid.UUID, outputs: list[Produced], now: datetime
) -> list[dict[str, Any]]:
    """Write each output under its ``output_key``: the asset rows' values, not yet inserted."""
    assets: list[dict[str, Any]] = []
    for index, output in enumerate(outputs):
        key = output_key(job_id, index, output.content_type)
        if output.path is not None:
            digest, size = await asyncio.to_thread(digest_file, output.path)
            await deps.storage.put_file(key, output.path)
        else:
            data = output.data or b""
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
            await deps.storage.put(key, data)
        failpoint(OUTPUT_WRITTEN)
        assets.append(
            dict(
                id=uuid.uuid5(job_id, str(index)),
                job_id=job_id,
                position=index,
                storage_key=key,
                content_type=output.content_type,
                width=output.width,
                height=output.height,
                byte_size=size,
                sha256=digest,
                created_at=now,
                name=output.name,
                info=output.info,
            )
        )
    return assets


async def discard_outputs(deps: Deps, job_id: uuid.UUID, keys: list[str]) -> None:
    """Delete outputs of a run that lost its job, unless another run may own the same keys."""
    async with deps.sessions() as session:
        status = await session.scalar(select(JobRow.status).where(JobRow.id == job_id))
    if status in (JobStatus.CANCELED.value, JobStatus.FAILED.value):
        for key in keys:
            await deps.storage.delete(key)
