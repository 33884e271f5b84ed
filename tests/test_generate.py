"""The core flow: submit a job over HTTP, follow it over a WebSocket, fetch the image."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image

from tests.support import JOB_FIELDS, LiveServer, graphql_ws, needs_patches

FOLLOW = f"subscription Follow($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"


async def test_job_runs_to_success_with_live_progress(server: LiveServer) -> None:
    payload = await server.generate(prompt="red fox in snow", width=256, height=192, seed=7)
    assert payload["userErrors"] == []
    job = payload["job"]
    assert job["status"] == "QUEUED"

    async with graphql_ws(server.ws_url) as ws:
        op = await ws.subscribe(FOLLOW, {"id": job["id"]})
        updates = [p["data"]["jobUpdated"] for p in await ws.collect(op)]

    statuses = [u["status"] for u in updates]
    assert statuses[-1] == "SUCCEEDED", statuses
    versions = [u["version"] for u in updates]
    assert versions == sorted(set(versions))
    final = updates[-1]
    assert final["progress"] == 1.0 and final["attempts"] == 1
    [output] = final["outputs"]
    assert (output["contentType"], output["width"], output["height"]) == ("image/png", 256, 192)

    media = await server.http.get(output["url"])
    assert media.status_code == 200
    assert media.headers["content-type"] == "image/png"
    assert "etag" in media.headers and "max-age" in media.headers["cache-control"]
    image = Image.open(io.BytesIO(media.content))
    assert image.size == (256, 192)
    colours = image.convert("RGB").getcolors(maxcolors=1 << 24) or []
    assert len(colours) > 100  # a picture, not a flat colour


@needs_patches("arq_wakeups")
async def test_a_woken_job_is_started_once(
    settings_factory: Any, fake_redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no poll on the worker's timer, the wake-up makes the worker read the queue; the
    job runs once, as an arq function."""
    from gql_media.worker import main as worker_main
    from tests.support import start_server

    started: list[str] = []
    run_job_task = worker_main.run_job_task

    async def recording(ctx: dict[str, Any], job_id: str) -> str:
        started.append(ctx["job_id"])
        return await run_job_task(ctx, job_id)

    monkeypatch.setattr(worker_main, "run_job_task", recording)
    settings = settings_factory(worker_poll_delay=600, reconcile_interval=600)
    async with start_server(settings, fake_redis_server, with_worker=True) as live:
        for _ in range(2):  # the first may meet the worker's first poll, at its start
            started.clear()
            job_id = (await live.generate(provider="mock", width=64, height=64))["job"]["id"]
            async with graphql_ws(live.ws_url) as ws:
                op = await ws.subscribe(FOLLOW, {"id": job_id})
                updates = await asyncio.wait_for(ws.collect(op), timeout=20)
            assert updates[-1]["data"]["jobUpdated"]["status"] == "SUCCEEDED"
    assert started == [f"{job_id}:v1"]


@needs_patches("arq_wakeups")
async def test_jobs_woken_while_every_slot_is_busy_run_when_one_frees(
    settings_factory: Any, fake_redis_server: Any
) -> None:
    from tests.support import start_server

    # one slot, and no poll on the worker's timer: only the wake-ups can start the jobs
    settings = settings_factory(worker_concurrency=1, worker_poll_delay=600, reconcile_interval=600)
    async with start_server(settings, fake_redis_server, with_worker=True) as live:
        jobs = await asyncio.gather(
            *(live.generate(provider="mock", width=64, height=64) for _ in range(4))
        )
        ends = []
        async with graphql_ws(live.ws_url) as ws:
            for job in jobs:  # one at a time: the client keeps only the followed one's messages
                op = await ws.subscribe(FOLLOW, {"id": job["job"]["id"]})
                ends.append((await asyncio.wait_for(ws.collect(op), timeout=20))[-1])
    assert [end["data"]["jobUpdated"]["status"] for end in ends] == ["SUCCEEDED"] * 4


async def test_a_finished_job_leaves_nothing_of_it_in_redis(
    settings: Any, fake_redis_server: Any
) -> None:
    """arq drops what it stored for a job (its call, its try count, its in-progress mark)
    once the job ends, and the queue holds no entry of it: nothing is kept that nothing
    reads."""
    from gql_media import keys
    from gql_media.adapters import redis as redis_adapter
    from tests.support import start_server

    async with start_server(settings, fake_redis_server, with_worker=True) as live:
        job_id = (await live.generate(provider="mock", width=64, height=64))["job"]["id"]
        async with graphql_ws(live.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": job_id})
            updates = await asyncio.wait_for(ws.collect(op), timeout=20)
        assert updates[-1]["data"]["jobUpdated"]["status"] == "SUCCEEDED"
        # the server's exit waits for the worker's tasks, arq's end of the job included
    redis = redis_adapter.connect(settings.redis_url, fake_redis_server)
    try:
        left = [key async for key in redis.scan_iter(match=f"*{job_id}*")]
        queued = await redis.zrange(keys.queue_name(settings.redis_namespace), 0, -1)
    finally:
        await redis_adapter.close(redis)
    assert left == []
    assert queued == []


async def test_a_worker_keeps_arqs_health_record(settings: Any, fake_redis_server: Any) -> None:
    """docs/observability.md: the worker writes arq's health record as it starts, with its
    counts and the queue's length."""
    from gql_media import keys
    from gql_media.adapters import redis as redis_adapter
    from tests.support import start_server

    async with start_server(settings, fake_redis_server, with_worker=True) as live:
        job_id = (await live.generate(provider="mock", width=64, height=64))["job"]["id"]
        async with graphql_ws(live.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": job_id})
            await asyncio.wait_for(ws.collect(op), timeout=20)
        redis = redis_adapter.connect(settings.redis_url, fake_redis_server)
        try:
            key = f"{keys.queue_name(settings.redis_namespace)}:health-check"
            record = (await redis.get(key)) or b""
            ttl = await redis.pttl(key)
        finally:
            await redis_adapter.close(redis)
    assert b"j_complete=" in record and b"j_ongoing=" in record and b"queued=" in record
    assert 0 < ttl <= 3_601_000


@needs_patches("arq_scripts")
async def test_a_run_is_claimed_while_arq_reads_its_call(
    settings: Any, fake_redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With arq's start in one script, the worker begins the claim of the job's row as the
    entry starts, before arq has read the call and called the function, which then runs on
    that claim: one round trip less before the job is RUNNING."""
    from gql_media.services import runner
    from gql_media.worker import main as worker_main
    from tests.support import start_server

    begun_before_called: list[bool] = []
    claims: list[object] = []
    run_job_task, run_job = worker_main.run_job_task, runner.run_job

    async def recording(ctx: dict[str, Any], job_id: str) -> str:
        begun_before_called.append(ctx["job_id"] in ctx["worker"]._early)
        return await run_job_task(ctx, job_id)

    async def run_on(deps: Any, job_id: str, claimed: Any = None, **kwargs: Any) -> Any:
        claims.append(claimed)
        return await run_job(deps, job_id, claimed, **kwargs)

    monkeypatch.setattr(worker_main, "run_job_task", recording)
    monkeypatch.setattr(runner, "run_job", run_on)
    async with start_server(settings, fake_redis_server, with_worker=True) as live:
        job_id = (await live.generate(provider="mock", width=64, height=64))["job"]["id"]
        async with graphql_ws(live.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": job_id})
            updates = [p["data"]["jobUpdated"] for p in await ws.collect(op)]
    assert [u["status"] for u in updates][-1] == "SUCCEEDED"
    assert updates[-1]["attempts"] == 1
    assert begun_before_called == [True]
    assert len(claims) == 1 and claims[0] is not None


@needs_patches("arq_scripts")
async def test_an_entry_arq_does_not_run_leaves_its_early_claim_to_lapse(
    runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry whose call is gone (it expired) starts, and arq ends it without calling
    the function: the claim begun for it holds the row only until its lease lapses, and
    the reconciler queues the job again."""
    from datetime import timedelta

    from sqlalchemy import update

    from gql_media import keys
    from gql_media.adapters.queue import stored
    from gql_media.db.models import JobRow, utcnow
    from gql_media.domain import JOB_ID_PREFIX, SYSTEM, JobStatus, decode_id
    from gql_media.services import reconciler
    from gql_media.services.jobs import NewImageJob, create_image_job, get_job
    from gql_media.worker.main import GqlMediaWorker
    from tests.support import open_slots

    deps = runtime.deps
    await open_slots(deps)
    job = await create_image_job(
        deps, NewImageJob(prompt="gone", provider="mock", width=64), SYSTEM
    )
    arq_id = keys.arq_job_id(job.id, 1)
    assert await runtime.redis.delete(stored(arq_id).call) == 1  # the call expired
    worker = GqlMediaWorker(deps, runtime.redis)
    worker.ctx.update(redis=runtime.redis, worker=worker)
    await worker.start_jobs([arq_id.encode()])
    early = worker._early[arq_id]
    await asyncio.gather(*worker.tasks.values())
    claimed = await early
    assert claimed.row is not None and worker._early == {}
    assert "ended without running; its claim lapses" in caplog.text
    running = await get_job(deps, job.id, SYSTEM)
    assert running is not None and running.status is JobStatus.RUNNING

    row_id = decode_id(JOB_ID_PREFIX, job.id)
    async with deps.sessions.begin() as session:  # the lease lapses
        await session.execute(
            update(JobRow)
            .where(JobRow.id == row_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    await reconciler.reconcile(deps)
    again = await get_job(deps, job.id, SYSTEM)
    assert again is not None and again.status is JobStatus.QUEUED and again.version > 1


async def test_a_finished_job_s_change_is_published_as_its_run_ends(runtime: Any) -> None:
    """The change that finishes a job is not a publish of its own: the worker's end of the
    run (the release of its slot) publishes it, after the RUNNING change the worker
    published on its claim. Subscribers see both, in order."""
    import dataclasses

    import orjson

    from gql_media import keys
    from gql_media.adapters.events import EventPublisher
    from gql_media.domain import SYSTEM, JobSnapshot
    from gql_media.services.jobs import NewImageJob, create_image_job
    from gql_media.worker.main import GqlMediaWorker
    from tests.support import open_slots

    published: list[str] = []  # what the worker's publisher was given, by status

    class Recording(EventPublisher):
        async def publish(self, snapshot: JobSnapshot) -> None:
            published.append(snapshot.status.value)
            await super().publish(snapshot)

    namespace = runtime.deps.settings.redis_namespace
    deps = dataclasses.replace(runtime.deps, publisher=Recording(runtime.redis, namespace))
    await open_slots(deps)
    pubsub = runtime.redis.pubsub()
    await pubsub.subscribe(keys.events_channel(namespace))
    try:
        job = await create_image_job(
            deps, NewImageJob(prompt="ends", provider="mock", width=64), SYSTEM
        )
        worker = GqlMediaWorker(deps, runtime.redis)
        worker.ctx.update(redis=runtime.redis, worker=worker)
        await worker.start_jobs([keys.arq_job_id(job.id, 1).encode()])
        await asyncio.gather(*worker.tasks.values())  # the run ended, and arq ended its entry

        seen: list[str] = []
        async with asyncio.timeout(10):
            async for message in pubsub.listen():
                if message["type"] == "message":
                    event = orjson.loads(message["data"])
                    seen += [event["status"]] if event["id"] == job.id else []
                if "SUCCEEDED" in seen:
                    break
    finally:
        await pubsub.aclose()
    assert seen == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert published == ["RUNNING"]  # the end of the run carried SUCCEEDED
