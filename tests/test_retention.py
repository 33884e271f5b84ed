"""Retention deletes finished jobs' media after a while and sweeps orphans, never live media."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from gql_media.db.models import JobRow, utcnow
from gql_media.domain import JOB_ID_PREFIX, SYSTEM, JobStatus, decode_id
from gql_media.runtime import Runtime, open_runtime
from gql_media.services import lease, retention, runner
from gql_media.services.jobs import NewImageJob, create_image_job, get_job
from gql_media.services.outputs import output_key


def _uuid(job_id: str) -> uuid.UUID:
    parsed = decode_id(JOB_ID_PREFIX, job_id)
    assert parsed is not None
    return parsed


async def _finished_job(runtime: Runtime, finished_ago: timedelta) -> str:
    job = await create_image_job(
        runtime.deps, NewImageJob(prompt="x", provider="mock", width=64), SYSTEM
    )
    assert await runner.run_job(runtime.deps, job.id) is runner.Outcome.SUCCEEDED
    async with runtime.deps.sessions.begin() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.id == _uuid(job.id))
            .values(finished_at=utcnow() - finished_ago)
        )
    return job.id


def _age(path: Any, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


async def test_finished_media_expires_and_recent_media_stays(settings_factory: Any) -> None:
    settings = settings_factory(retention_seconds=3600)
    async with open_runtime(settings) as runtime:
        old = await _finished_job(runtime, timedelta(hours=2))
        recent = await _finished_job(runtime, timedelta(minutes=5))
        old_snapshot = await get_job(runtime.deps, old, SYSTEM)
        assert old_snapshot is not None
        [old_output] = old_snapshot.outputs
        old_file = runtime.deps.storage.path_for(old_output.key)
        assert old_file.is_file()

        assert await retention.expire_media(runtime.deps) == 1

        expired = await get_job(runtime.deps, old, SYSTEM)
        kept = await get_job(runtime.deps, recent, SYSTEM)
    assert expired is not None and kept is not None
    assert expired.status is JobStatus.SUCCEEDED and expired.outputs == ()
    assert expired.version > old_snapshot.version
    assert not old_file.exists()
    assert len(kept.outputs) == 1
    assert runtime.deps.storage.path_for(kept.outputs[0].key).is_file()


async def test_retention_off_by_default(runtime: Runtime) -> None:
    await _finished_job(runtime, timedelta(days=365))
    assert await retention.expire_media(runtime.deps) == 0


async def test_sweep_off_by_default(runtime: Runtime) -> None:
    """Without retention configured media is kept forever: no file is swept, however old."""
    orphan = output_key(uuid.uuid4(), 0, "image/png")
    await runtime.deps.storage.put(orphan, b"data")
    _age(runtime.deps.storage.path_for(orphan), 365 * 86400)
    assert await retention.sweep_orphans(runtime.deps) == 0
    await retention.retain_once(runtime.deps)
    assert runtime.deps.storage.path_for(orphan).is_file()


async def test_sweep_deletes_old_orphans_only(settings_factory: Any) -> None:
    async with open_runtime(settings_factory(retention_seconds=86400)) as runtime:
        await _sweep_deletes_old_orphans_only(runtime)


async def _sweep_deletes_old_orphans_only(runtime: Runtime) -> None:
    storage = runtime.deps.storage
    live = await create_image_job(runtime.deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)
    await lease.claim(runtime.deps, _uuid(live.id), token="w")  # RUNNING, files not yet rowed
    live_key = output_key(_uuid(live.id), 0, "image/png")
    live_key_earlier_layout = f"jobs/{_uuid(live.id).hex}/1.png"
    old_orphan = output_key(uuid.uuid4(), 0, "image/png")
    old_orphan_earlier_layout = f"jobs/{uuid.uuid4().hex}/0.png"
    new_orphan = output_key(uuid.uuid4(), 1, "image/png")
    for key in (live_key, live_key_earlier_layout, old_orphan, old_orphan_earlier_layout):
        await storage.put(key, b"data")
        _age(storage.path_for(key), 7200)
    await storage.put(new_orphan, b"data")
    finished = await _finished_job(runtime, timedelta(0))
    finished_snapshot = await get_job(runtime.deps, finished, SYSTEM)
    assert finished_snapshot is not None
    _age(storage.path_for(finished_snapshot.outputs[0].key), 7200)

    assert await retention.sweep_orphans(runtime.deps) == 2

    assert not storage.path_for(old_orphan).exists()
    assert not storage.path_for(old_orphan_earlier_layout).exists()
    assert storage.path_for(new_orphan).is_file()  # younger than the grace period
    assert storage.path_for(live_key).is_file()  # its job is still running
    assert storage.path_for(live_key_earlier_layout).is_file()
    assert storage.path_for(finished_snapshot.outputs[0].key).is_file()  # has a row
