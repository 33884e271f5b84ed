"""Observability: Prometheus metrics of the api and of workers, health checks, JSON logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gql_media.adapters import redis as redis_adapter
from gql_media.api.observability import READY_TIMEOUT, CachedProbe
from gql_media.domain import SYSTEM, JobStatus
from gql_media.errors import StorageUnavailable
from gql_media.observability.logs import configure_handler, job_context
from gql_media.observability.metrics import Metrics
from gql_media.runtime import open_runtime
from gql_media.services.jobs import NewImageJob, create_image_job, get_job
from gql_media.settings import Settings
from tests.conftest import INTEGRATION, TEST_REDIS_URL, _admin
from tests.support import LiveServer, eventually, free_port, graphql_ws, start_server

FOLLOW = "subscription Follow($id: ID!) { jobUpdated(id: $id) { id status } }"
EVENTS = "subscription { jobEvents { id status } }"


# -- helpers -------------------------------------------------------------------------------


def value(body: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called ``name`` whose labels include ``labels``; None when
    there is none."""
    found = [
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return sum(found) if found else None


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    list(text_string_to_metric_families(response.text))  # parses as a whole
    return response.text


async def metric_reaches(url: str, name: str, at_least: float, **labels: str) -> str:
    """Scrape until ``name{labels}`` is at least ``at_least``; the last body."""
    body = ""

    async def reached() -> bool:
        nonlocal body
        body = await scrape(url)
        current = value(body, name, **labels)
        return current is not None and current >= at_least

    await eventually(reached)
    return body


async def run_to_the_end(server: LiveServer, **fields: Any) -> dict[str, Any]:
    """Submit a job and follow it over a WebSocket until it ends; its last state."""
    payload = await server.generate(**fields)
    assert payload["userErrors"] == [], payload
    async with graphql_ws(server.ws_url) as ws:
        op = await ws.subscribe(FOLLOW, {"id": payload["job"]["id"]})
        updates = await ws.collect(op)
    last: dict[str, Any] = updates[-1]["data"]["jobUpdated"]
    return last


# -- metrics of the api and its in-process worker ------------------------------------------


async def test_metrics_show_a_job_that_succeeded(server: LiveServer) -> None:
    job = await run_to_the_end(server, provider="mock", width=64, height=64)
    assert job["status"] == "SUCCEEDED"

    body = await metric_reaches(
        server.url, "gql_media_jobs", 1, status="SUCCEEDED", kind="GENERATE_IMAGE"
    )
    assert value(body, "gql_media_jobs", status="RUNNING", kind="PROCESS_VIDEO") == 0
    job_labels = {"kind": "GENERATE_IMAGE", "provider": "mock"}
    assert (value(body, "gql_media_job_queue_seconds_count", **job_labels) or 0) >= 1
    ran = value(body, "gql_media_job_run_seconds_count", outcome="succeeded", **job_labels)
    assert (ran or 0) >= 1
    assert (value(body, "gql_media_provider_seconds_count", provider="mock") or 0) >= 1
    assert value(body, "gql_media_provider_errors_total") is None

    depth = value(body, "gql_media_queue_depth")
    assert depth is not None and not math.isnan(depth) and depth >= 0
    posts = value(body, "gql_media_http_requests_total", route="/graphql", status="200")
    assert (posts or 0) >= 1


async def test_provider_errors_are_counted_by_code(server: LiveServer) -> None:
    job = await run_to_the_end(server, provider="mock", width=64, extra={"fail": "permanent"})
    assert job["status"] == "FAILED"

    body = await metric_reaches(
        server.url, "gql_media_provider_errors_total", 1, provider="mock", code="PROVIDER_ERROR"
    )
    assert value(body, "gql_media_job_run_seconds_count", outcome="failed") == 1
    assert value(body, "gql_media_provider_seconds_count", provider="mock") == 1


async def test_open_websockets_and_subscriptions_are_gauged(server: LiveServer) -> None:
    async def gauges_are(websockets: float, subscriptions: float) -> bool:
        body = await scrape(server.url)
        return (
            value(body, "gql_media_active_websockets") == websockets
            and value(body, "gql_media_active_subscriptions") == subscriptions
        )

    assert await gauges_are(0, 0)
    async with graphql_ws(server.ws_url) as ws:
        await eventually(lambda: gauges_are(1, 0))
        await ws.subscribe(EVENTS)
        await ws.subscribe(EVENTS)
        await eventually(lambda: gauges_are(1, 2))
    await eventually(lambda: gauges_are(0, 0))


async def test_requests_are_counted_by_route_template(server: LiveServer) -> None:
    for path in ("/healthz", "/no/such/page", "/media/jobs/nothing-here.png"):
        await server.http.get(path)
    body = await scrape(server.url)
    assert value(body, "gql_media_http_requests_total", route="/healthz", status="200") == 1
    assert value(body, "gql_media_http_requests_total", route="unmatched", status="404") == 1
    media = value(body, "gql_media_http_requests_total", method="GET", route="/media")
    assert media == 1
    assert "/no/such/page" not in body


async def test_two_apps_in_one_process_keep_their_own_metrics(settings: Settings) -> None:
    first = start_server(settings, redis_adapter.new_fake_server(), with_worker=False)
    second = start_server(settings, redis_adapter.new_fake_server(), with_worker=False)
    async with first as one, second as two:
        for _ in range(3):
            assert (await one.http.get("/healthz")).status_code == 200
        requests = "gql_media_http_requests_total"
        assert value(await scrape(one.url), requests, route="/healthz") == 3
        assert value(await scrape(two.url), requests, route="/healthz") is None


def test_a_worker_registry_shows_no_api_series() -> None:
    metrics = Metrics()
    metrics.worker.provider_error("mock", "PROVIDER_ERROR")
    body = metrics.render().decode()
    assert value(body, "gql_media_provider_errors_total", code="PROVIDER_ERROR") == 1
    assert "gql_media_active_websockets" not in body
    assert "gql_media_queue_depth" not in body


# -- health ---------------------------------------------------------------------------------


async def test_readyz_reports_every_check(server: LiveServer) -> None:
    response = await server.http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "redis", "storage"}
    for check in body["checks"].values():
        assert check["status"] == "ok"
        assert check["latency_ms"] >= 0
    assert (await server.http.get("/healthz")).json() == {"status": "ok"}


async def test_the_storage_probe_runs_once_per_interval_however_many_ask() -> None:
    """Readiness checks share one write probe per interval, its failure included."""
    calls = 0

    async def probe() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StorageUnavailable("media storage cannot be written: No space left on device")

    cached = CachedProbe(probe, interval=3600)
    for _ in range(2):
        results = await asyncio.gather(*(cached() for _ in range(20)), return_exceptions=True)
        assert all(isinstance(r, StorageUnavailable) for r in results)
    assert calls == 1
    assert await CachedProbe(probe, interval=0)() is None  # no reuse: probed anew
    assert calls == 2


@asynccontextmanager
async def api_only(settings: Settings) -> AsyncIterator[LiveServer]:
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        yield live


async def unready(live: LiveServer) -> dict[str, Any]:
    """GET /readyz, which must answer 503 within its time bound; the checks."""
    started = time.monotonic()
    response = await live.http.get("/readyz")
    assert time.monotonic() - started < READY_TIMEOUT + 2
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    checks: dict[str, Any] = body["checks"]
    return checks


async def test_readyz_is_503_when_redis_is_unreachable(settings_factory: Any) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    async with api_only(settings_factory(redis_url=closed, event_catchup_interval=0)) as live:
        checks = await unready(live)
        assert checks["redis"]["status"] == "error"
        assert checks["database"]["status"] == "ok"
        assert checks["storage"]["status"] == "ok"
        body = await scrape(live.url)  # metrics still answer
        depth = value(body, "gql_media_queue_depth")
        assert depth is not None and math.isnan(depth)


async def test_readyz_is_503_when_the_database_is_unreachable(settings_factory: Any) -> None:
    closed = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gql_media"
    async with api_only(settings_factory(database_url=closed, event_catchup_interval=0)) as live:
        checks = await unready(live)
        assert checks["database"]["status"] == "error"
        assert checks["redis"]["status"] == "ok"
        body = await scrape(live.url)
        assert value(body, "gql_media_jobs") is None  # not shown stale
        assert value(body, "gql_media_queue_depth") == 0


async def test_readyz_does_not_hang_on_a_redis_that_never_answers(settings_factory: Any) -> None:
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    settings = settings_factory(redis_url=f"redis://127.0.0.1:{port}/0", event_catchup_interval=0)
    try:
        async with api_only(settings) as live:
            checks = await unready(live)
            assert checks["redis"] == {
                "status": "error",
                "error": "timed out",
                "latency_ms": checks["redis"]["latency_ms"],
            }
            assert checks["redis"]["latency_ms"] >= READY_TIMEOUT * 1000 * 0.9
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


# -- JSON logs ------------------------------------------------------------------------------


@contextmanager
def captured_logs(log_format: str) -> Iterator[io.StringIO]:
    """Every record logged at INFO and above, formatted as ``gql-media`` formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    configure_handler(handler, log_format)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in text.splitlines()]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    return entries


async def test_json_log_lines_about_a_job_carry_its_id(server: LiveServer) -> None:
    with captured_logs("json") as stream:
        job = await run_to_the_end(
            server, provider="mock", width=64, extra={"fail": "transient", "failAttempts": 1}
        )
    assert job["status"] == "SUCCEEDED"
    entries = json_lines(stream.getvalue())
    about_the_job = [e for e in entries if job["id"] in e["message"] or "job_id" in e]
    assert any(e["logger"] == "gql_media.services.runner" for e in about_the_job)
    for entry in about_the_job:
        assert entry["job_id"] == job["id"], entry


async def test_lines_logged_while_a_job_runs_carry_its_id() -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    log = logging.getLogger("gql_media.test")
    with captured_logs("json") as stream:
        with job_context(job_id):
            log.info("step one")
            await asyncio.create_task(_log_in_task(log))
            try:
                raise ValueError("bad pixel")
            except ValueError:
                log.exception("could not encode")
        log.info("unrelated")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4  # the traceback stays inside its line
    step, in_task, failed, unrelated = json_lines(stream.getvalue())
    assert step["job_id"] == in_task["job_id"] == failed["job_id"] == job_id
    assert failed["level"] == "ERROR"
    assert "Traceback" in failed["exc"] and "ValueError: bad pixel" in failed["exc"]
    assert "job_id" not in unrelated


async def _log_in_task(log: logging.Logger) -> None:
    log.info("from a task started by the job")


def test_text_logs_stay_as_they_were() -> None:
    with captured_logs("text") as stream:
        with job_context(f"job_{uuid.uuid4().hex}"):
            logging.getLogger("gql_media.test").info("plain")
    assert stream.getvalue() == "plain\n"


def _process_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GQL_MEDIA_")}
    env.update({f"GQL_MEDIA_{name.upper()}": text for name, text in settings.items()})
    return env


def test_the_cli_writes_json_logs_when_asked() -> None:
    job_id = f"job_{uuid.uuid4().hex}"
    script = (
        "import logging; from gql_media.cli import _configure_logging; "
        "from gql_media.settings import Settings; _configure_logging(Settings()); "
        f"logging.getLogger('gql_media.demo').warning('job %s failed', '{job_id}')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_process_env(log_format="json"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    (entry,) = json_lines(done.stderr)
    assert entry["job_id"] == job_id
    assert entry["level"] == "WARNING"
    assert entry["message"] == f"job {job_id} failed"


# -- a worker process's own endpoint --------------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(not INTEGRATION, reason="needs PostgreSQL and Redis")
@pytest.mark.timeout(90)
async def test_a_worker_process_serves_its_metrics(postgres_url: str, tmp_path: Path) -> None:
    assert TEST_REDIS_URL is not None
    settings = Settings(
        database_url=postgres_url,
        redis_url=TEST_REDIS_URL,
        redis_namespace=f"gql_media_obs_{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path,
    )
    port = free_port()
    env = _process_env(
        database_url=postgres_url,
        redis_url=TEST_REDIS_URL,
        redis_namespace=settings.redis_namespace,
        data_dir=str(tmp_path),
        worker_poll_delay="0.05",
        worker_metrics_port=str(port),
        log_format="json",
    )
    log_path = tmp_path / "worker.log"
    await _admin(postgres_url, "TRUNCATE jobs, media_assets, api_keys CASCADE")
    async with open_runtime(settings) as runtime:
        job = await create_image_job(
            runtime.deps, NewImageJob(prompt="x", provider="mock", width=64), SYSTEM
        )
        with log_path.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "gql_media", "worker"], env=env, stdout=out, stderr=out
            )
            try:
                body = await _worker_metric_reaches(worker, port)
                worker.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(worker.wait, 30) == 0
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        done = await get_job(runtime.deps, job.id, SYSTEM)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert "gql_media_active_websockets" not in body  # api series live on the api
    assert value(body, "gql_media_job_queue_seconds_count", provider="mock") == 1
    entries = json_lines(log_path.read_text())
    about_the_job = [e for e in entries if job.id in e["message"] or "job_id" in e]
    assert about_the_job
    assert all(e["job_id"] == job.id for e in about_the_job)


async def _worker_metric_reaches(worker: subprocess.Popen[bytes], port: int) -> str:
    """Scrape the worker's own port until it shows the job's successful run."""
    body = ""

    async def ran() -> bool:
        nonlocal body
        assert worker.poll() is None, "the worker exited"
        try:
            body = await scrape(f"http://127.0.0.1:{port}")
        except httpx.TransportError:
            return False  # still starting
        count = value(body, "gql_media_job_run_seconds_count", outcome="succeeded")
        return count is not None and count >= 1

    await eventually(ran, timeout=60)
    return body
