"""Redis restarted empty, PostgreSQL cut off or silent behind a partition: nothing is lost,
every wait ends with a code, everything recovers."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gql_media.domain import SYSTEM
from gql_media.runtime import open_runtime
from gql_media.services.jobs import JobFilter, NewImageJob, create_image_job, list_jobs
from gql_media.settings import Settings
from tests.conftest import INTEGRATION, TEST_REDIS_URL, _admin
from tests.fakes import picture, serving
from tests.faults import (
    PrivateRedis,
    TcpProxy,
    fill,
    small_filesystem,
    worker_env,
    worker_process,
)
from tests.support import JOB_FIELDS, GraphQLWS, LiveServer, graphql_ws, start_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not INTEGRATION, reason="needs PostgreSQL and Redis"),
    pytest.mark.timeout(120),
]

FOLLOW = f"subscription Follow($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"
SLOW = {"provider": "mock", "width": 64, "height": 64, "extra": {"delayMs": 1500, "steps": 15}}


def _settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_namespace=f"gql_media_fault_{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path,
        reconcile_interval=0.2,
        reconcile_after=0.5,
        worker_poll_delay=0.05,
        progress_interval=0.0,
        retry_base_delay=0.0,
        retry_max_delay=0.0,
    )


async def _until(ws: GraphQLWS, op: str, status: str) -> list[dict[str, Any]]:
    """Updates of a jobUpdated subscription up to and including ``status``."""
    seen = []
    while True:
        payload = await ws.next_payload(op)
        assert payload is not None, f"completed before {status}: {seen}"
        job = payload["data"]["jobUpdated"]
        seen.append(job)
        if job["status"] == status:
            return seen


async def _status(server: LiveServer, job_id: str) -> str:
    body = await server.graphql("query($id: ID!) { job(id: $id) { status } }", {"id": job_id})
    return str(body["data"]["job"]["status"])


async def _follow_to_end(server: LiveServer, job_id: str) -> dict[str, Any]:
    async with graphql_ws(server.ws_url) as ws:
        op = await ws.subscribe(FOLLOW, {"id": job_id})
        updates = await ws.collect(op)
    final: dict[str, Any] = updates[-1]["data"]["jobUpdated"]
    return final


async def test_redis_restarted_empty_loses_no_job(postgres_url: str, tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        settings = _settings(postgres_url, redis.url, tmp_path)
        async with start_server(settings, None, with_worker=True) as server:
            running = (await server.generate(**SLOW))["job"]
            async with graphql_ws(server.ws_url) as ws:
                op = await ws.subscribe(FOLLOW, {"id": running["id"]})
                await _until(ws, op, "RUNNING")

                redis.kill()
                # Queries keep working while Redis is down.
                assert await _status(server, running["id"]) == "RUNNING"
                accepted = await server.generate(provider="mock", width=64, height=64)
                assert accepted["userErrors"] == [] and accepted["job"]["status"] == "QUEUED"
                redis.start()  # same port, empty

                # The subscription reconnects by itself and delivers the current state.
                final = (await _until(ws, op, "SUCCEEDED"))[-1]
                assert final["attempts"] == 1 and len(final["outputs"]) == 1

            # The job accepted while Redis was down is enqueued from PostgreSQL and runs.
            late = await _follow_to_end(server, accepted["job"]["id"])
            assert late["status"] == "SUCCEEDED"
    finally:
        redis.kill()


async def test_postgres_cut_off_fails_fast_and_recovers(postgres_url: str, tmp_path: Path) -> None:
    assert TEST_REDIS_URL is not None
    base, _, database = postgres_url.rpartition("/")
    scheme, _, hostport = base.rpartition("@")
    host, _, port = hostport.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    await proxy.start()
    proxied = f"{scheme}@127.0.0.1:{proxy.port}/{database}"
    settings = _settings(proxied, TEST_REDIS_URL, tmp_path)
    async with start_server(settings, None, with_worker=True) as server:
        job = (await server.generate(**SLOW))["job"]
        async with graphql_ws(server.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": job["id"]})
            await _until(ws, op, "RUNNING")

            await proxy.cut()
            down = await server.graphql("{ jobs { totalCount } }")
            assert down["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            assert "Traceback" not in str(down)
            await proxy.restore()

            final = (await _until(ws, op, "SUCCEEDED"))[-1]
            assert len(final["outputs"]) == 1
        assert await _status(server, job["id"]) == "SUCCEEDED"
    await proxy.cut()


def _proxied(postgres_url: str) -> tuple[TcpProxy, str]:
    """A proxy in front of the test database, and the database URL through it."""
    base, _, database = postgres_url.rpartition("/")
    scheme, _, hostport = base.rpartition("@")
    host, _, port = hostport.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    return proxy, f"{scheme}@127.0.0.1:{proxy.port}/{database}"


@pytest.mark.timeout(25)  # far below what a statement on a pooled connection waited before
async def test_a_silent_database_answers_service_unavailable_and_loses_no_job(
    postgres_url: str, tmp_path: Path
) -> None:
    """A partition (packets dropped, no reset): requests and new subscriptions end with
    SERVICE_UNAVAILABLE after GQL_MEDIA_DATABASE_TIMEOUT instead of hanging for the outage;
    a subscription already following a job keeps working, and the job finishes once."""
    assert TEST_REDIS_URL is not None
    proxy, proxied = _proxied(postgres_url)
    await proxy.start()
    settings = _settings(proxied, TEST_REDIS_URL, tmp_path).model_copy(
        update={"database_timeout": 1.0}
    )
    try:
        async with start_server(settings, None, with_worker=True) as server:
            job = (await server.generate(**SLOW))["job"]
            async with graphql_ws(server.ws_url) as ws:
                op = await ws.subscribe(FOLLOW, {"id": job["id"]})
                await _until(ws, op, "RUNNING")

                proxy.blackhole()
                # pooled connections and new ones alike: each request ends with the code
                for query in ("{ jobs { totalCount } }", "{ jobs(first: 1) { totalCount } }"):
                    down = await server.graphql(query)
                    assert down["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
                    assert "Traceback" not in str(down)
                late = await ws.collect(await ws.subscribe(FOLLOW, {"id": job["id"]}))
                assert [e["extensions"]["code"] for e in late[0]["errors"]] == [
                    "SERVICE_UNAVAILABLE"
                ]
                proxy.heal()

                final = (await _until(ws, op, "SUCCEEDED"))[-1]
                assert len(final["outputs"]) == 1
            assert await _status(server, job["id"]) == "SUCCEEDED"
    finally:
        proxy.heal()
        await proxy.cut()


async def test_connections_the_server_closed_are_replaced_before_use(
    postgres_url: str, tmp_path: Path
) -> None:
    """Pooled connections are not pinged on every checkout; one the server has closed is
    still replaced before a request uses it, so a restart or a killed backend costs no
    request an error (unless it is closed in the instant before its use)."""
    assert TEST_REDIS_URL is not None
    settings = _settings(postgres_url, TEST_REDIS_URL, tmp_path)
    database = postgres_url.rpartition("/")[2]
    async with open_runtime(settings) as runtime:
        deps = runtime.deps
        pooled: list[Any] = []
        event.listen(runtime.engine.sync_engine, "checkin", lambda _c, entry: pooled.append(entry))
        first = await create_image_job(deps, NewImageJob(prompt="before", provider="mock"), SYSTEM)
        await list_jobs(deps, JobFilter(), 5, None, SYSTEM)
        assert pooled
        await _admin(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
        )
        async with asyncio.timeout(10):  # until the driver has read the server's goodbye
            while not all(entry.driver_connection.is_closed() for entry in pooled):
                await asyncio.sleep(0.01)
        page = await list_jobs(deps, JobFilter(), 5, None, SYSTEM)
        second = await create_image_job(deps, NewImageJob(prompt="after", provider="mock"), SYSTEM)
    assert first.id in [job.id for job in page.jobs]
    assert second.status.value == "QUEUED"


@dataclass
class HoldingReceiver:
    """A webhook receiver that holds the first delivery open, never answering it, and
    answers 200 to the next ones."""

    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)
    first_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def hook(self, request: Request) -> Response:
        self.requests.append(dict(request.headers))
        await request.body()
        if len(self.requests) == 1:
            self.first_arrived.set()
            await self.release.wait()  # held until the test ends
            return Response(status_code=500)
        self.answered.set()
        return Response(status_code=204)


@asynccontextmanager
async def holding_receiver() -> AsyncIterator[HoldingReceiver]:
    made = HoldingReceiver()
    app = Starlette(routes=[Route("/hook", made.hook, methods=["POST"])])
    try:
        async with serving(app) as url:
            made.url = f"{url}/hook"
            yield made
            made.release.set()
    finally:
        made.release.set()


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a webhook secret of 32 bytes!!!!").decode()
DELIVERIES = """query($id: ID!) { job(id: $id) { webhookDeliveries {
  webhookId attempt statusCode error succeeded } } }"""


@pytest.mark.timeout(60)  # arq alone would run the lost delivery again after 370 s
async def test_a_delivery_lost_with_its_killed_worker_is_sent_again(
    postgres_url: str, tmp_path: Path
) -> None:
    """A worker SIGKILLed while its webhook POST is in flight: another worker sends the
    delivery again (same webhook-id) once the attempt's mark expires, within
    GQL_MEDIA_WEBHOOK_TIMEOUT + 5 s + a reconciler pass; the lost attempt is not counted."""
    assert TEST_REDIS_URL is not None
    async with holding_receiver() as hook:
        settings = _settings(postgres_url, TEST_REDIS_URL, tmp_path).model_copy(
            update={"webhook_timeout": 2.0}
        )
        env = worker_env(
            database_url=postgres_url,
            redis_url=TEST_REDIS_URL,
            redis_namespace=settings.redis_namespace,
            data_dir=tmp_path,
            reconcile_interval=0.2,
            reconcile_after=0.5,
            worker_poll_delay=0.05,
            webhook_secret=WEBHOOK_SECRET,
            webhook_timeout=2.0,
            outbound_allow=[hook.url],
        )
        server_settings = settings.model_copy(
            update={"webhook_secret": WEBHOOK_SECRET, "outbound_allow": [hook.url]}
        )
        async with start_server(server_settings, None, with_worker=False) as server:
            with worker_process(env, tmp_path / "w1.log") as first:
                job = (await server.generate(provider="mock", webhookUrl=hook.url))["job"]
                await hook.first_arrived.wait()
                first.send_signal(signal.SIGKILL)
                first.wait()
            with worker_process(env, tmp_path / "w2.log"):
                await hook.answered.wait()
                while not (found := await _deliveries(server, job["id"])):
                    await asyncio.sleep(0.02)  # recorded right after the receiver answers
    assert len(hook.requests) == 2
    assert hook.requests[0]["webhook-id"] == hook.requests[1]["webhook-id"]
    assert found == [
        {
            "webhookId": hook.requests[0]["webhook-id"],
            "attempt": 1,
            "statusCode": 204,
            "error": None,
            "succeeded": True,
        }
    ]
    log = (tmp_path / "w2.log").read_text()
    assert log.count("re-enqueued 1 webhook deliveries") == 1, log  # only when it was


async def _deliveries(server: LiveServer, job_id: str) -> list[dict[str, Any]]:
    body = await server.graphql(DELIVERIES, {"id": job_id})
    found: list[dict[str, Any]] = body["data"]["job"]["webhookDeliveries"]
    return found


UPLOAD = (
    """mutation($file: Upload!) { uploadMedia(file: $file) { media { id } userErrors { code } } }"""
)
PROCESS_IMAGE = """mutation($input: ProcessImageInput!) {
  processImage(input: $input) { job { id } userErrors { code } } }"""
RETRY = "mutation($id: ID!) { retryJob(id: $id) { job { id } userErrors { code } } }"


async def _upload(server: LiveServer, data: bytes) -> Any:
    return await server.http.post(
        "/uploads?filename=a.png",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


async def _upload_multipart(server: LiveServer, data: bytes) -> dict[str, Any]:
    operations = json.dumps({"query": UPLOAD, "variables": {"file": None}})
    response = await server.http.post(
        "/graphql",
        data={"operations": operations, "map": '{"0": ["variables.file"]}'},
        files={"0": ("a.png", data, "image/png")},
        headers={"GraphQL-Require-Preflight": "1"},
    )
    body: dict[str, Any] = response.json()
    return body


async def test_a_full_disk_is_a_storage_error_and_readyz_says_so(
    postgres_url: str, tmp_path: Path
) -> None:
    """Media storage on a small tmpfs filled up: uploads and a job writing its output get
    STORAGE_UNAVAILABLE (the job after its retries, not as a database outage), /readyz
    answers 503 naming storage; once space is freed all of it works again."""
    assert TEST_REDIS_URL is not None
    with small_filesystem(tmp_path / "media", 4 * 1024 * 1024) as media:
        settings = _settings(postgres_url, TEST_REDIS_URL, tmp_path).model_copy(
            update={"storage_dir": media, "storage_probe_interval": 0.0, "max_attempts": 2}
        )
        image = picture(64, 64, 1)
        async with start_server(settings, None, with_worker=True) as server:
            assert (await server.http.get("/readyz")).status_code == 200
            source = (await _upload(server, image)).json()["media"]
            filler = fill(media)

            ready = await server.http.get("/readyz")
            assert ready.status_code == 503
            storage = ready.json()["checks"]["storage"]
            assert storage["status"] == "error"
            assert storage["error"].startswith("STORAGE_UNAVAILABLE: ")
            assert ready.json()["checks"]["database"]["status"] == "ok"

            refused = await _upload(server, image)
            assert refused.status_code == 503
            assert refused.json()["errors"][0]["extensions"]["code"] == "STORAGE_UNAVAILABLE"
            body = await _upload_multipart(server, image)
            assert [e["extensions"]["code"] for e in body["errors"]] == ["STORAGE_UNAVAILABLE"]

            generated = (await server.generate(provider="mock", width=64, height=64))["job"]
            variants = [{"name": "small", "operations": [{"thumbnail": {"size": 32}}]}]
            processed = await server.graphql(
                PROCESS_IMAGE, {"input": {"mediaId": source["id"], "variants": variants}}
            )
            jobs = [generated["id"], processed["data"]["processImage"]["job"]["id"]]
            for job_id in jobs:
                failed = await _follow_to_end(server, job_id)
                assert failed["status"] == "FAILED"
                assert failed["error"]["code"] == "STORAGE_UNAVAILABLE"
                assert failed["error"]["retryable"] is True
                assert failed["attempts"] == 2  # retried, then failed with the storage's code

            filler.unlink()
            assert (await server.http.get("/readyz")).status_code == 200
            stored = await _upload(server, image)
            assert stored.status_code == 201, stored.text
            for job_id in jobs:
                again = await server.graphql(RETRY, {"id": job_id})
                assert again["data"]["retryJob"]["userErrors"] == []
                done = await _follow_to_end(server, job_id)
                assert done["status"] == "SUCCEEDED" and len(done["outputs"]) == 1
