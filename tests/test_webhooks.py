"""Outbound webhooks through the running service: signed deliveries of finished jobs,
retries with every attempt recorded, the outbound rules, and validation."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gql_media.adapters import outbound
from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.webhook_signing import verify
from gql_media.domain import SYSTEM
from tests.fakes import StandInDNS, serving
from tests.support import JOB_FIELDS, LiveServer, graphql_ws, start_server

SECRET = "whsec_" + base64.b64encode(b"a webhook secret of 32 bytes!!!!").decode()
GENERATE = """mutation($input: GenerateImageInput!) { generateImage(input: $input) {
  job { id webhookUrl } userErrors { field code message } } }"""
DELIVERIES = """query($id: ID!) { job(id: $id) { status webhookDeliveries {
  id webhookId event attempt url statusCode error succeeded durationMs at } } }"""
T = TypeVar("T")


@dataclass
class Receiver:
    """Answers deliveries with the scripted statuses (then 200), recording each one."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    delivered: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append((dict(request.headers), await request.body(), status))
        if status < 300:
            self.delivered.set()
        return Response(status_code=status)


@asynccontextmanager
async def receiver(
    *statuses: int, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Receiver]:
    made = Receiver(list(statuses))
    app = Starlette(routes=[Route("/hook", made.hook, methods=["POST"])])
    async with serving(app, host, port) as url:
        made.url = f"{url}/hook"
        yield made


@asynccontextmanager
async def service(
    settings_factory: Any, hook: Receiver | None = None, **overrides: Any
) -> AsyncIterator[LiveServer]:
    values = {
        "webhook_secret": SECRET,
        # the receiver's address is internal: allowed on its port only
        "outbound_allow": [hook.url] if hook is not None else [],
        "webhook_retry_base_delay": 0,
        "webhook_max_attempts": 3,
    }
    values.update(overrides)
    settings = settings_factory(**values)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=True) as live:
        yield live


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 10) -> T:
    """Poll ``check`` until it returns something (the worker records an attempt right after
    the receiver answers it)."""
    deadline = time.monotonic() + timeout
    while (found := await check()) is None:
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
    return found


async def finish(live: LiveServer, job_id: str) -> dict[str, Any]:
    async with graphql_ws(live.ws_url) as ws:
        op = await ws.subscribe(
            f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}", {"id": job_id}
        )
        updates = [p["data"]["jobUpdated"] for p in await ws.collect(op)]
    return updates[-1]


def deliveries_when(live: LiveServer, job_id: str, count: int) -> Callable[[], Awaitable[Any]]:
    async def check() -> list[dict[str, Any]] | None:
        body = await live.graphql(DELIVERIES, {"id": job_id})
        found: list[dict[str, Any]] = body["data"]["job"]["webhookDeliveries"]
        return found if len(found) >= count else None

    return check


async def test_a_finished_job_is_posted_signed_and_retried(settings_factory: Any) -> None:
    async with receiver(500) as hook, service(settings_factory, hook) as live:
        body = await live.graphql(
            GENERATE,
            {"input": {"prompt": "a heron", "width": 64, "height": 64, "webhookUrl": hook.url}},
        )
        job = body["data"]["generateImage"]["job"]
        assert job["webhookUrl"] == hook.url
        final = await finish(live, job["id"])
        assert final["status"] == "SUCCEEDED"
        await asyncio.wait_for(hook.delivered.wait(), timeout=10)
        deliveries = await eventually(deliveries_when(live, job["id"], 2))
        # each attempt is a Node: fetched again by its id
        again = await live.graphql(
            "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id "
            "... on WebhookDelivery { attempt statusCode } } }",
            {"ids": [d["id"] for d in deliveries]},
        )
    assert again["data"]["nodes"] == [
        {"__typename": "WebhookDelivery", "id": d["id"], "attempt": d["attempt"], "statusCode": s}
        for d, s in zip(deliveries, (500, 200), strict=True)
    ]

    assert [(d["attempt"], d["statusCode"], d["succeeded"]) for d in deliveries] == [
        (1, 500, False),
        (2, 200, True),
    ]
    assert deliveries[0]["error"] == "HTTP 500" and deliveries[1]["error"] is None
    assert deliveries[0]["webhookId"] == deliveries[1]["webhookId"]  # one delivery, retried
    assert all(d["event"] == "job.succeeded" and d["url"] == hook.url for d in deliveries)
    headers, raw, _ = hook.received[-1]
    verify(SECRET, headers, raw, now=time.time())  # raises unless authentic and fresh
    payload = json.loads(raw)
    assert payload["type"] == "job.succeeded"
    data = payload["data"]
    assert (data["id"], data["status"]) == (job["id"], "SUCCEEDED")
    assert data["outputs"][0]["contentType"] == "image/png"
    assert data["outputs"][0]["url"].endswith(".png")
    assert headers["webhook-id"] == deliveries[1]["webhookId"]


async def test_canceled_jobs_are_announced_too(settings_factory: Any) -> None:
    async with receiver() as hook, service(settings_factory, hook) as live:
        body = await live.graphql(
            GENERATE,
            {
                "input": {
                    "prompt": "slow",
                    "provider": "mock",
                    "extra": {"delayMs": 60_000},
                    "webhookUrl": hook.url,
                }
            },
        )
        job_id = body["data"]["generateImage"]["job"]["id"]
        await live.graphql(
            "mutation($id: ID!) { cancelJob(id: $id) { job { id } } }", {"id": job_id}
        )
        await asyncio.wait_for(hook.delivered.wait(), timeout=10)
    payload = json.loads(hook.received[0][1])
    assert payload["type"] == "job.canceled" and payload["data"]["status"] == "CANCELED"


@pytest.mark.parametrize(
    "allow",
    [
        [],
        ["127.0.0.1"],  # allowed on 80 and 443 only
        ["127.0.0.1:{other}"],
        ["http://127.0.0.1:{other}"],
        ["127.0.0.0/8:{other}"],
    ],
)
async def test_internal_addresses_are_refused_and_recorded(
    settings_factory: Any, allow: list[str]
) -> None:
    async with receiver() as hook:
        port = int(hook.url.split(":")[2].split("/")[0])
        entries = [entry.format(other=port % 65535 + 1) for entry in allow]
        async with service(settings_factory, outbound_allow=entries) as live:
            body = await live.graphql(
                GENERATE, {"input": {"prompt": "x", "provider": "mock", "webhookUrl": hook.url}}
            )
            job_id = body["data"]["generateImage"]["job"]["id"]
            assert (await finish(live, job_id))["status"] == "SUCCEEDED"
            deliveries = await eventually(deliveries_when(live, job_id, 3))
    assert hook.received == []
    assert [d["attempt"] for d in deliveries] == [1, 2, 3]  # then given up on
    assert all(d["error"].startswith("OUTBOUND_BLOCKED") for d in deliveries)


async def test_a_webhook_goes_to_the_address_that_was_checked(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook host that resolves to an allowed address at the check and to loopback a
    moment later: the delivery reaches the address checked, nothing reaches loopback."""
    async with receiver(host="127.0.0.2") as checked:
        port = int(checked.url.split(":")[2].split("/")[0])
        async with (
            receiver(host="127.0.0.1", port=port) as loopback,
            service(settings_factory, outbound_allow=[f"127.0.0.2:{port}"]) as live,
        ):
            monkeypatch.setattr(
                outbound, "resolve", StandInDNS("localhost", [["127.0.0.2"], ["127.0.0.1"]])
            )
            url = f"http://localhost:{port}/hook"
            body = await live.graphql(
                GENERATE, {"input": {"prompt": "x", "provider": "mock", "webhookUrl": url}}
            )
            job_id = body["data"]["generateImage"]["job"]["id"]
            assert (await finish(live, job_id))["status"] == "SUCCEEDED"
            deliveries = await eventually(deliveries_when(live, job_id, 1))
    assert [(d["statusCode"], d["succeeded"]) for d in deliveries] == [(200, True)]
    assert loopback.received == []
    assert [headers["host"] for headers, _, _ in checked.received] == [f"localhost:{port}"]


async def test_webhook_urls_are_validated(settings_factory: Any) -> None:
    async with service(settings_factory) as live:
        bad = await live.graphql(GENERATE, {"input": {"prompt": "x", "webhookUrl": "ftp://a/b"}})
        assert bad["data"]["generateImage"]["userErrors"] == [
            {
                "field": "webhookUrl",
                "code": "INVALID_ARGUMENT",
                "message": "webhookUrl must be an http(s) URL of at most 2048 characters",
            }
        ]
    async with service(settings_factory, webhook_secret=None) as live:
        off = await live.graphql(GENERATE, {"input": {"prompt": "x", "webhookUrl": "https://a/b"}})
        assert off["data"]["generateImage"]["userErrors"][0]["code"] == "WEBHOOKS_NOT_CONFIGURED"


async def test_a_delivery_whose_queue_entry_was_lost_is_requeued(settings_factory: Any) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from gql_media import keys
    from gql_media.db.models import JobRow, utcnow
    from gql_media.domain import JOB_ID_PREFIX, decode_id
    from gql_media.runtime import open_runtime
    from gql_media.services import webhooks
    from gql_media.services.jobs import NewImageJob, create_image_job

    async with receiver() as hook:
        settings = settings_factory(webhook_secret=SECRET, outbound_allow=[hook.url])
        fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
        async with open_runtime(settings, fake) as runtime:
            deps = runtime.deps
            job = await create_image_job(
                deps, NewImageJob(prompt="x", webhook_url=hook.url), SYSTEM
            )
            queue = keys.queue_name(settings.redis_namespace)
            await runtime.redis.delete(queue)  # the run's entry: this test finishes the job itself
            async with deps.sessions.begin() as session:  # ended a while ago, delivery owed
                await session.execute(
                    update(JobRow)
                    .where(JobRow.id == decode_id(JOB_ID_PREFIX, job.id))
                    .values(
                        status="SUCCEEDED",
                        webhook_state="pending",
                        finished_at=utcnow() - timedelta(minutes=5),
                    )
                )
            assert await webhooks.requeue_lost(deps) == 1
            assert await runtime.redis.zscore(queue, f"{job.id}:webhook:1") is not None
            assert await webhooks.requeue_lost(deps) == 0  # it waits on the queue: not again
            # a worker takes the entry and marks the attempt as being made: not again either
            arq_id = f"{job.id}:webhook:1"
            delivering = keys.delivering_key(settings.redis_namespace, arq_id)
            await runtime.redis.zrem(queue, arq_id)
            await runtime.redis.set(delivering, b"1")
            assert await webhooks.requeue_lost(deps) == 0
            # the mark expired and no attempt was recorded: the worker died during it
            await runtime.redis.delete(delivering)
            assert await webhooks.requeue_lost(deps) == 1
            assert await webhooks.deliver(deps, job.id, 1) == "delivered"
            assert await webhooks.requeue_lost(deps) == 0  # delivered: nothing owed any more
    assert json.loads(hook.received[0][1])["data"]["id"] == job.id
