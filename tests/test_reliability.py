"""No job lost, none finished twice: leases, the reconciler, worker kills and shutdowns."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import signal
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix
from pydantic import SecretStr
from sqlalchemy import func, select, update

from gql_media import keys
from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.events import EventHub
from gql_media.adapters.queue import Placement, stored
from gql_media.db.engine import create_engine, create_sessionmaker, suppress_unavailable
from gql_media.db.models import AssetRow, JobRow, utcnow
from gql_media.domain import JOB_ID_PREFIX, SYSTEM, JobSnapshot, JobStatus, decode_id
from gql_media.failpoints import BEFORE_FINISH, CLAIMED, FINISHED, OUTPUT_WRITTEN
from gql_media.runtime import Runtime, open_runtime
from gql_media.services import lease, reconciler, runner, transitions
from gql_media.services.deps import Deps
from gql_media.services.jobs import NewImageJob, create_image_job, get_job
from gql_media.services.outputs import output_key
from gql_media.services.processing import Produced
from gql_media.services.transitions import transition
from gql_media.settings import Settings
from gql_media.worker.main import running_worker
from tests.conftest import INTEGRATION, TEST_REDIS_URL
from tests.faults import worker_process
from tests.support import JOB_FIELDS, graphql_ws, open_slots, start_server, statuses_until


def _uuid(job_id: str) -> uuid.UUID:
    parsed = decode_id(JOB_ID_PREFIX, job_id)
    assert parsed is not None
    return parsed


async def _expire_lease(runtime: Runtime, job_id: str) -> None:
    async with runtime.deps.sessions.begin() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.id == _uuid(job_id))
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )


async def _running_job(deps: Deps, token: str) -> tuple[JobSnapshot, JobRow]:
    """A new job, claimed (RUNNING) by a run holding ``token``."""
    job = await create_image_job(
        deps, NewImageJob(prompt="kiln", provider="mock", width=64), SYSTEM
    )
    row = await lease.claim(deps, _uuid(job.id), token=token)
    assert row is not None
    return job, row


async def _asset_count(runtime: Runtime, job_id: str) -> int:
    async with runtime.deps.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(AssetRow).where(AssetRow.job_id == _uuid(job_id))
        )
    return int(count or 0)


async def test_expired_lease_is_requeued_and_the_dead_worker_is_fenced_off(
    runtime: Runtime,
) -> None:
    deps = runtime.deps
    job, dead = await _running_job(deps, token="dead-worker")
    await _expire_lease(runtime, job.id)

    assert await reconciler.requeue_expired(deps) == 1
    requeued = await get_job(deps, job.id, SYSTEM)
    assert requeued is not None and requeued.status is JobStatus.QUEUED
    assert requeued.error is not None and requeued.error.code == "WORKER_LOST"

    assert await runner.run_job(deps, job.id) is runner.Outcome.SUCCEEDED
    finished = await get_job(deps, job.id, SYSTEM)
    assert finished is not None
    assert (finished.status, finished.attempts, len(finished.outputs)) == (
        JobStatus.SUCCEEDED,
        2,
        1,
    )

    late = lease.JobContext(deps, dead, "dead-worker")
    with pytest.raises(lease.LeaseLost):
        await late.save_external_id("late write")
    assert not await late.renew_lease()
    assert await _asset_count(runtime, job.id) == 1


@pytest.mark.parametrize(
    ("extra", "outcome", "last"),
    [
        ({}, runner.Outcome.SUCCEEDED, "SUCCEEDED"),
        ({"fail": "transient"}, runner.Outcome.RETRYING, "QUEUED"),
        ({"fail": "permanent"}, runner.Outcome.FAILED, "FAILED"),
    ],
)
async def test_a_renewal_that_meets_the_runs_own_end_does_not_stop_the_run(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, str],
    outcome: runner.Outcome,
    last: str,
) -> None:
    """The lease keeper's renewal that comes as the run's final change commits finds the
    row moved on by that change: the run still ends as that change says, and publishes
    it, instead of stopping as if another worker had taken the job."""
    deps = dataclasses.replace(
        runtime.deps, settings=runtime.settings.model_copy(update={"lease_seconds": 0.03})
    )
    renew, persist = lease.JobContext.renew_lease, runner.persist
    renewal_failed = asyncio.Event()

    async def renew_lease(context: lease.JobContext) -> bool:
        held = await renew(context)
        if not held:
            renewal_failed.set()
        return held

    async def persist_final_change(*args: Any) -> Any:
        done = await persist(*args)
        await renewal_failed.wait()  # the keeper's next renewal meets the committed change
        return done

    monkeypatch.setattr(lease.JobContext, "renew_lease", renew_lease)
    monkeypatch.setattr(runner, "persist", persist_final_change)
    job = await create_image_job(
        deps, NewImageJob(prompt="x", provider="mock", width=64, extra=extra), SYSTEM
    )
    pubsub = runtime.redis.pubsub()
    await pubsub.subscribe(keys.events_channel(runtime.settings.redis_namespace))
    try:
        assert await runner.run_job(deps, job.id) is outcome
        statuses = await statuses_until(pubsub, job.id, last)  # published as the run ended
    finally:
        await pubsub.aclose()
    assert statuses == ["RUNNING", last]


async def test_a_shutdown_as_the_run_writes_its_final_change_lets_it_finish(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker stopping past its grace cancels its runs; one that is writing its final
    change finishes it and publishes it instead of being handed back (the hand-back would
    find the job finished, and the change would never be published)."""
    deps = runtime.deps
    written, go_on = asyncio.Event(), asyncio.Event()
    persist = runner.persist

    async def persist_then_wait(*args: Any) -> Any:
        done = await persist(*args)
        written.set()
        await go_on.wait()  # the shutdown's cancel comes now
        return done

    monkeypatch.setattr(runner, "persist", persist_then_wait)
    job = await create_image_job(deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)
    pubsub = runtime.redis.pubsub()
    await pubsub.subscribe(keys.events_channel(runtime.settings.redis_namespace))
    try:
        run = asyncio.create_task(runner.run_job(deps, job.id))
        await written.wait()
        run.cancel()
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await run
        statuses = await statuses_until(pubsub, job.id, "SUCCEEDED")
    finally:
        await pubsub.aclose()
    assert statuses == ["RUNNING", "SUCCEEDED"]
    done = await get_job(deps, job.id, SYSTEM)
    assert done is not None and (done.status, len(done.outputs)) == (JobStatus.SUCCEEDED, 1)


def test_only_an_unreachable_database_is_suppressed() -> None:
    with suppress_unavailable() as outage:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert isinstance(outage.error, ConnectionRefusedError)
    with suppress_unavailable() as calm:
        pass
    assert calm.error is None
    # a wrong statement, or a full disk (the storage's error, not the database's)
    for error in (ValueError("not a statement"), OSError(errno.ENOSPC, "disk full")):
        with pytest.raises(type(error)), suppress_unavailable():
            raise error


async def test_a_run_does_without_progress_and_lease_checks_while_the_database_is_away(
    runtime: Runtime,
) -> None:
    """Progress is best effort and a lease check that cannot reach the database does not
    stop the job (the lease keeper does, once the lease is really gone)."""
    deps = runtime.deps
    _, row = await _running_job(deps, token="w")
    away = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/away", timeout=2.0)
    cut_off = dataclasses.replace(
        deps,
        settings=deps.settings.model_copy(update={"progress_interval": 0.0}),
        sessions=create_sessionmaker(away),
        engine=away,
        autocommit=away,
    )
    try:
        context = lease.JobContext(cut_off, row, "w")
        await context.progress(0.5)
        await context.ensure_running()
    finally:
        await away.dispose()


async def test_expired_lease_on_the_last_attempt_fails_the_job(settings_factory: object) -> None:
    settings = settings_factory(max_attempts=1)  # type: ignore[operator]
    async with open_runtime(settings) as runtime:
        job = await create_image_job(runtime.deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)
        await lease.claim(runtime.deps, _uuid(job.id), token="dead-worker")
        await _expire_lease(runtime, job.id)
        assert await reconciler.requeue_expired(runtime.deps) == 1
        failed = await get_job(runtime.deps, job.id, SYSTEM)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "WORKER_LOST"


async def test_a_live_lease_is_not_taken_away(runtime: Runtime) -> None:
    job = await create_image_job(runtime.deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)
    await lease.claim(runtime.deps, _uuid(job.id), token="busy-worker")
    assert await reconciler.requeue_expired(runtime.deps) == 0
    assert await runner.run_job(runtime.deps, job.id) is runner.Outcome.SKIPPED


async def test_a_queue_entry_taken_by_a_dead_worker_is_replaced(runtime: Runtime) -> None:
    """A worker that took the job and died before claiming the row leaves an arq entry
    marked in progress for the job timeout: the reconciler moves the job to a new version."""
    deps = runtime.deps
    await open_slots(deps)
    job = await create_image_job(deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)
    queue = keys.queue_name(deps.settings.redis_namespace)
    arq_id = keys.arq_job_id(job.id, job.version)
    await runtime.redis.psetex(in_progress_key_prefix + arq_id, 60_000, b"1")  # a pick-up

    assert await deps.queue.ensure_queued(job.id, job.version) is Placement.TAKEN
    assert await reconciler.reconcile(deps, at_startup=True) == 1
    moved = await get_job(deps, job.id, SYSTEM)
    assert moved is not None and (moved.status, moved.version) == (
        JobStatus.QUEUED,
        job.version + 1,
    )
    assert await runtime.redis.zscore(queue, keys.arq_job_id(job.id, moved.version)) is not None
    # the dead worker's entry is gone with arq's keys of it: no read of the queue meets it
    assert await runtime.redis.zscore(queue, arq_id) is None
    kept = stored(arq_id)
    assert await runtime.redis.exists(kept.call, kept.in_progress, kept.tries) == 0
    assert await reconciler.reconcile(deps, at_startup=True) == 0  # waiting on the queue: untouched


async def test_the_run_of_a_replaced_entry_leaves_the_job_to_the_new_one(
    runtime: Runtime,
) -> None:
    """A reconciler at start-up cannot tell a worker that took an entry and died from one
    that took it a moment ago and has not claimed the row yet: it moves the job to a new
    version either way. The old entry's run then claims nothing (a claim is of the version
    its entry was queued at) and the new entry's run runs the job, so each slot in flight
    is released by the run that holds it."""
    deps = runtime.deps
    await open_slots(deps)
    job = await create_image_job(deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)
    arq_id = keys.arq_job_id(job.id, job.version)
    await runtime.redis.psetex(in_progress_key_prefix + arq_id, 60_000, b"1")  # just taken
    assert await reconciler.reconcile(deps, at_startup=True) == 1
    moved = await get_job(deps, job.id, SYSTEM)
    assert moved is not None and moved.version == job.version + 1

    assert await runner.run_job(deps, job.id, version=job.version) is runner.Outcome.SKIPPED
    assert await deps.queue.scheduler.in_flight() == {job.id: moved.version}
    assert await runner.run_job(deps, job.id, version=moved.version) is runner.Outcome.SUCCEEDED
    done = await get_job(deps, job.id, SYSTEM)
    assert done is not None and (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)


async def test_a_worker_claims_a_job_at_the_version_its_entry_was_queued_at(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's run of a queue entry (its claim begun as the entry starts, or made by
    the run) claims the job only at the version the entry was queued at, not at a newer
    one that has, or will have, an entry of its own."""
    deps = runtime.deps
    job = await create_image_job(deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)
    async with deps.sessions.begin() as session:  # moved on, as the reconciler moves it
        await transition(
            session,
            _uuid(job.id),
            (JobStatus.QUEUED,),
            JobStatus.QUEUED,
            at_version=job.version,
            run_after=utcnow(),
        )
    runs: asyncio.Queue[tuple[int | None, runner.Outcome]] = asyncio.Queue()
    run_job = runner.run_job

    async def recorded(*args: Any, **kwargs: Any) -> runner.Outcome:
        outcome = await run_job(*args, **kwargs)
        runs.put_nowait((kwargs.get("version"), outcome))
        return outcome

    monkeypatch.setattr(runner, "run_job", recorded)
    async with running_worker(runtime):  # the old entry starts as the worker registers
        async with asyncio.timeout(10):
            version, outcome = await runs.get()
            while version != job.version:  # the reconciler may have queued the new one
                assert (version, outcome) == (job.version + 1, runner.Outcome.SUCCEEDED)
                version, outcome = await runs.get()
    assert outcome is runner.Outcome.SKIPPED


async def test_one_reconcile_pass_sorts_waiting_lost_and_taken_entries(runtime: Runtime) -> None:
    """The reconciler looks up a whole backlog at once: entries still waiting are left, a
    lost one is queued again and one a dead worker took moves the job to a new version."""
    deps = runtime.deps
    await open_slots(deps)
    waiting, lost, taken = [
        await create_image_job(deps, NewImageJob(prompt=name, provider="mock"), SYSTEM)
        for name in ("waiting", "lost", "taken")
    ]
    queue = keys.queue_name(deps.settings.redis_namespace)
    lost_arq_id = keys.arq_job_id(lost.id, lost.version)
    await runtime.redis.zrem(queue, lost_arq_id)  # Redis lost the entry and its job data
    await runtime.redis.delete(job_key_prefix + lost_arq_id)
    taken_arq_id = keys.arq_job_id(taken.id, taken.version)
    await runtime.redis.psetex(in_progress_key_prefix + taken_arq_id, 60_000, b"1")
    jobs = [(job.id, job.version) for job in (waiting, lost, taken)]

    assert await deps.queue.standing(jobs) == [Placement.WAITING, None, Placement.TAKEN]
    assert await reconciler.reconcile(deps, at_startup=True) == 2

    assert await deps.queue.standing(jobs[:2]) == [Placement.WAITING, Placement.WAITING]
    moved = await get_job(deps, taken.id, SYSTEM)
    assert moved is not None and moved.version == taken.version + 1
    assert await deps.queue.standing([(taken.id, moved.version)]) == [Placement.WAITING]
    assert await deps.queue.standing([]) == []


async def test_a_change_no_event_announced_still_reaches_job_updated(
    settings_factory: Any,
) -> None:
    """A worker killed between its commit and its publish: the api catches up from the
    database and the subscription still ends."""
    settings = settings_factory(event_catchup_interval=0.1)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        job = (await live.generate(provider="mock"))["job"]
        async with graphql_ws(live.ws_url) as ws:
            op = await ws.subscribe(
                f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}",
                {"id": job["id"]},
            )
            first = await ws.next_payload(op)
            assert first is not None and first["data"]["jobUpdated"]["status"] == "QUEUED"
            async with open_runtime(settings, fake) as runtime:  # a silent change
                async with runtime.deps.sessions.begin() as session:
                    await transition(
                        session,
                        _uuid(job["id"]),
                        (JobStatus.QUEUED,),
                        JobStatus.CANCELED,
                        finished_at=utcnow(),
                    )
            rest = await ws.collect(op)
    assert [p["data"]["jobUpdated"]["status"] for p in rest] == ["CANCELED"]


# --- real worker processes, killed with real signals --------------------------------------

integration = pytest.mark.skipif(not INTEGRATION, reason="needs PostgreSQL and Redis")


@pytest.fixture
def proc_settings(postgres_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=postgres_url,
        redis_url=TEST_REDIS_URL,
        redis_namespace=f"gql_media_rel_{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path,
        lease_seconds=1.0,
        reconcile_interval=0.2,
        worker_poll_delay=0.05,
        progress_interval=0.0,
    )


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GQL_MEDIA_")}
    for name in (
        "database_url",
        "redis_url",
        "redis_namespace",
        "data_dir",
        "lease_seconds",
        "reconcile_interval",
        "worker_poll_delay",
        "progress_interval",
    ):
        env[f"GQL_MEDIA_{name.upper()}"] = str(getattr(settings, name))
    return env


async def _wait_for(runtime: Runtime, job_id: str, *statuses: JobStatus, attempts: int = 1) -> None:
    """Follow the job's events until it reaches one of ``statuses`` (at ``attempts`` or more)."""
    hub = EventHub(runtime.redis, runtime.settings.redis_namespace)
    await hub.start()
    try:
        await hub.wait_listening()
        subscriber = hub.subscribe(job_id)
        current = await get_job(runtime.deps, job_id, SYSTEM)
        while current is None or not (current.status in statuses and current.attempts >= attempts):
            item = await subscriber.get()
            current = (
                item
                if isinstance(item, JobSnapshot)
                else await get_job(runtime.deps, job_id, SYSTEM)
            )
    finally:
        await hub.stop()


@pytest.mark.integration
@integration
@pytest.mark.timeout(90)
async def test_sigkilled_worker_job_finishes_exactly_once(
    proc_settings: Settings, tmp_path: Path
) -> None:
    env = _env(proc_settings)
    async with open_runtime(proc_settings) as runtime:
        job = await create_image_job(
            runtime.deps,
            NewImageJob(
                prompt="slow", provider="mock", width=64, extra={"delayMs": 3000, "steps": 30}
            ),
            SYSTEM,
        )
        with worker_process(env, tmp_path / "w1.log") as first:
            await _wait_for(runtime, job.id, JobStatus.RUNNING)
            first.send_signal(signal.SIGKILL)
            first.wait()
        with worker_process(env, tmp_path / "w2.log"):
            await _wait_for(runtime, job.id, JobStatus.SUCCEEDED, JobStatus.FAILED)
        done = await get_job(runtime.deps, job.id, SYSTEM)
        assert done is not None
        assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2)
        assert await _asset_count(runtime, job.id) == 1
        files = list((proc_settings.effective_storage_dir / "jobs").rglob("*.*"))
        assert len(files) == 1


@pytest.mark.integration
@integration
@pytest.mark.timeout(90)
async def test_sigterm_hands_running_jobs_back(proc_settings: Settings, tmp_path: Path) -> None:
    env = {**_env(proc_settings), "GQL_MEDIA_SHUTDOWN_GRACE": "0.2"}
    async with open_runtime(proc_settings) as runtime:
        job = await create_image_job(
            runtime.deps,
            NewImageJob(prompt="x", provider="mock", width=64, extra={"delayMs": 4000}),
            SYSTEM,
        )
        with worker_process(env, tmp_path / "w1.log") as first:
            await _wait_for(runtime, job.id, JobStatus.RUNNING)
            first.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(first.wait, 30) == 0
        handed_back = await get_job(runtime.deps, job.id, SYSTEM)
        assert handed_back is not None
        assert (handed_back.status, handed_back.attempts) == (JobStatus.QUEUED, 0)
        with worker_process(env, tmp_path / "w2.log"):
            await _wait_for(runtime, job.id, JobStatus.SUCCEEDED, JobStatus.FAILED)
        done = await get_job(runtime.deps, job.id, SYSTEM)
        assert done is not None and (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)


@pytest.mark.integration
@integration
@pytest.mark.timeout(90)
@pytest.mark.parametrize("point", [CLAIMED, OUTPUT_WRITTEN, BEFORE_FINISH])
async def test_worker_crash_at_each_point_finishes_the_job_once(
    proc_settings: Settings, tmp_path: Path, point: str
) -> None:
    env = _env(proc_settings)
    async with open_runtime(proc_settings) as runtime:
        job = await create_image_job(
            runtime.deps, NewImageJob(prompt="x", provider="mock", width=64, num_outputs=2), SYSTEM
        )
        with worker_process({**env, "GQL_MEDIA_CRASH_AT": point}, tmp_path / "w1.log") as first:
            assert await asyncio.to_thread(first.wait, 60) == -signal.SIGKILL
        crashed = await get_job(runtime.deps, job.id, SYSTEM)
        assert crashed is not None and crashed.status is JobStatus.RUNNING
        with worker_process(env, tmp_path / "w2.log"):
            await _wait_for(runtime, job.id, JobStatus.SUCCEEDED, JobStatus.FAILED)
        done = await get_job(runtime.deps, job.id, SYSTEM)
        assert done is not None
        assert (done.status, done.attempts, len(done.outputs)) == (JobStatus.SUCCEEDED, 2, 2)
        assert await _asset_count(runtime, job.id) == 2
        files = sorted(p.name for p in (proc_settings.effective_storage_dir / "jobs").rglob("*.*"))
        hex_id = _uuid(job.id).hex
        assert files == [f"{hex_id}-0.png", f"{hex_id}-1.png"]


@pytest.mark.integration
@integration
@pytest.mark.timeout(90)
async def test_the_finishing_change_and_the_slot_go_out_as_it_commits(
    proc_settings: Settings, tmp_path: Path
) -> None:
    """A worker killed right after the change that finishes a job commits (before the rest
    of the run: its lease keeper stopped, its log line) has published that change and
    released the run's slot already: both ride the release sent as the change commits."""
    env = _env(proc_settings)
    async with open_runtime(proc_settings) as runtime:
        pubsub = runtime.redis.pubsub()
        await pubsub.subscribe(keys.events_channel(proc_settings.redis_namespace))
        try:
            job = await create_image_job(
                runtime.deps, NewImageJob(prompt="x", provider="mock", width=64), SYSTEM
            )
            with worker_process({**env, "GQL_MEDIA_CRASH_AT": FINISHED}, tmp_path / "w.log") as w:
                assert await asyncio.to_thread(w.wait, 60) == -signal.SIGKILL
            done = await get_job(runtime.deps, job.id, SYSTEM)
            assert done is not None and done.status is JobStatus.SUCCEEDED
            assert await runtime.deps.queue.scheduler.in_flight() == {}
            # published before the kill: in the buffer now
            statuses = await statuses_until(pubsub, job.id, "SUCCEEDED")
        finally:
            await pubsub.aclose()
        assert statuses[-1] == "SUCCEEDED"


@pytest.mark.integration
@integration
@pytest.mark.timeout(90)
async def test_worker_killed_while_waiting_on_a_prediction_resumes_it(
    proc_settings: Settings, tmp_path: Path
) -> None:
    from tests.fakes.replicate_server import Script, running_replicate

    async with running_replicate(script=Script(advance_on_get=False)) as fake:
        settings = proc_settings.model_copy(
            update={"replicate_api_token": SecretStr(fake.token), "replicate_base_url": fake.url}
        )
        env = {
            **_env(settings),
            "GQL_MEDIA_REPLICATE_API_TOKEN": fake.token,
            "GQL_MEDIA_REPLICATE_BASE_URL": fake.url,
            "GQL_MEDIA_REPLICATE_POLL_INTERVAL": "0.05",
            "GQL_MEDIA_REPLICATE_POLL_MAX_INTERVAL": "0.1",
        }
        async with open_runtime(settings) as runtime:
            job = await create_image_job(
                runtime.deps, NewImageJob(prompt="a fox", provider="replicate", width=64), SYSTEM
            )
            with worker_process(env, tmp_path / "w1.log") as first:
                prediction = await fake.wait_for_prediction()
                await fake.polled.wait()  # the id is saved on the job before the first poll
                first.send_signal(signal.SIGKILL)
                first.wait()
            waiting = await get_job(runtime.deps, job.id, SYSTEM)
            assert waiting is not None and waiting.status is JobStatus.RUNNING
            await fake.advance(prediction.id, to_end=True)
            with worker_process(env, tmp_path / "w2.log"):
                await _wait_for(runtime, job.id, JobStatus.SUCCEEDED, JobStatus.FAILED)
            done = await get_job(runtime.deps, job.id, SYSTEM)
    assert done is not None
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2), done.error
    assert len(fake.creates) == 1  # the rerun resumed the prediction, it did not pay again
    assert len(done.outputs) == 1


async def test_finishing_stores_every_output_field_and_the_result(runtime: Runtime) -> None:
    deps = runtime.deps
    job, row = await _running_job(deps, token="w")
    outputs = [
        Produced("thumb", "image/webp", 64, 48, data=b"webp", info={"frames": [1, 2]}),
        Produced(None, "image/png", None, None, data=b"png"),
    ]
    context = lease.JobContext(deps, row, "w")
    outcome = await runner._succeed(deps, row, context, outputs, {"pages": 2})
    assert outcome is runner.Outcome.SUCCEEDED

    async with deps.sessions() as session:
        stored = (
            await session.execute(
                select(AssetRow).where(AssetRow.job_id == row.id).order_by(AssetRow.position)
            )
        ).scalars()
        fields = [
            (a.position, a.name, a.content_type, a.width, a.height, a.byte_size, a.info, a.role)
            for a in stored
        ]
        result = await session.scalar(select(JobRow.result).where(JobRow.id == row.id))
    assert fields == [
        (0, "thumb", "image/webp", 64, 48, 4, {"frames": [1, 2]}, "output"),
        (1, None, "image/png", None, None, 3, None, "output"),
    ]
    assert result == {"pages": 2}
    done = await get_job(deps, job.id, SYSTEM)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert [o.key for o in done.outputs] == [
        output_key(row.id, 0, "image/webp"),
        output_key(row.id, 1, "image/png"),
    ]


async def test_finishing_a_job_this_run_no_longer_holds_stores_no_outputs(
    runtime: Runtime,
) -> None:
    deps = runtime.deps
    job, row = await _running_job(deps, token="w")
    outputs = [Produced(None, "image/png", 1, 1, data=b"png")]
    context = lease.JobContext(deps, row, "another-run")
    outcome = await runner._succeed(deps, row, context, outputs)
    assert outcome is runner.Outcome.CANCELED
    assert await _asset_count(runtime, job.id) == 0


async def test_a_stopping_worker_cancels_again_a_task_that_lost_its_cancel() -> None:
    """A loop whose cancel was lost (Python 3.11's ``wait_for`` can drop one that arrives as
    a connection attempt fails) is cancelled again until it ends: a stopped worker exits."""
    from gql_media.worker.main import cancel_until_done

    cancels = 0
    retried = asyncio.Event()

    async def retrying_forever() -> None:
        nonlocal cancels
        while True:
            try:
                retried.set()
                await asyncio.Event().wait()  # a connection attempt
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 1:
                    continue  # this cancel is lost: the loop carries on
                raise

    task = asyncio.create_task(retrying_forever())
    await retried.wait()
    await asyncio.wait_for(cancel_until_done([task], every=0.01), timeout=10)
    assert task.cancelled() and cancels == 2


async def test_a_claim_and_a_progress_commit_without_waiting_for_the_disk(
    runtime: Runtime,
) -> None:
    """On PostgreSQL a run's claim and its progress commit with ``synchronous_commit`` off
    for their own transaction (a claim lost with PostgreSQL leaves the job QUEUED, and the
    lease fences the run off); the run's end, like every other change, waits for the disk,
    and the setting does not outlive the statement."""
    deps = runtime.deps
    if deps.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no such setting: every commit is the same")
    setting = func.current_setting("synchronous_commit")
    job = await create_image_job(deps, NewImageJob(prompt="x", provider="mock"), SYSTEM)
    params: dict[str, Any] = {"job_id": _uuid(job.id), "now": utcnow(), "token": "t"}
    steps = [
        (transitions.CLAIM, {"lease_until": utcnow() + timedelta(minutes=1)}),
        (transitions.PROGRESS, {"progress": 0.5}),
        (transitions.SUCCEED, {"result": None}),
    ]
    seen = []
    async with deps.autocommit.connect() as connection:
        server = (await connection.execute(select(setting))).scalar_one()
        for statement, extra in steps:
            row = (await connection.execute(statement.returning(setting), params | extra)).one()
            seen.append(row[-1])
        after = (await connection.execute(select(setting))).scalar_one()
    assert server == "on"  # as the test database is set up
    assert seen == ["off", "off", "on"] and after == "on"


async def test_a_run_s_statements_are_compiled_once(runtime: Runtime) -> None:
    """The statements every run makes stay in SQLAlchemy's compiled cache: a construct of
    ours in one (``CommitUnflushed``) that could not be cached would have it compiled again
    at every run."""
    cache: dict[Any, Any] = {}
    engine = runtime.deps.autocommit.execution_options(compiled_cache=cache)
    now = utcnow()
    runs: list[tuple[Any, dict[str, Any]]] = [
        (transitions.CLAIM, {"token": "t", "lease_until": now}),
        (transitions.PROGRESS, {"token": "t", "progress": 0.5}),
        (transitions.SUCCEED, {"token": "t", "result": None}),
        (transitions.EXPIRE, {}),
    ]
    async with engine.connect() as connection:
        for statement, params in runs:
            before = len(cache)
            for _ in range(2):  # no such job: nothing changes
                found = await connection.execute(
                    statement, {"job_id": uuid.uuid4(), "now": now, **params}
                )
                assert found.first() is None
            assert len(cache) == before + 1, statement
