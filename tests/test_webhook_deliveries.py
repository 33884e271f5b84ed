"""Job.webhookDeliveries: each job's attempts, oldest first, read for a whole page of jobs
in one query, and only for jobs the caller sees."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from time import time
from typing import Any

from gql_media.db.models import WebhookDeliveryRow, utcnow
from gql_media.domain import JOB_ID_PREFIX, OPEN, Principal, Scope, decode_id
from gql_media.runtime import Runtime
from gql_media.services import jobs as job_service
from gql_media.services import webhooks
from tests.support import statements_sent
from tests.test_input_limits import serving

PAGE = """query { jobs(first: 10) { edges { node { id
  webhookDeliveries { webhookId attempt statusCode succeeded } } } } }"""


async def add_deliveries(runtime: Runtime, job_id: str, count: int) -> list[uuid.UUID]:
    """``count`` failed attempts and then a delivered one of ``job_id``'s webhook, each a
    second after the one before; their ids, oldest first."""
    start = utcnow()
    rows = [
        WebhookDeliveryRow(
            id=uuid.uuid4(),
            job_id=decode_id(JOB_ID_PREFIX, job_id),
            webhook_id=f"msg_{job_id}",
            event="job.succeeded",
            attempt=attempt,
            url="https://example.com/hook",
            status_code=200 if attempt == count else 503,
            error=None,
            duration_ms=1.5,
            succeeded=attempt == count,
            created_at=start + timedelta(seconds=attempt),
        )
        for attempt in range(1, count + 1)
    ]
    async with runtime.deps.sessions.begin() as session:
        session.add_all(reversed(rows))  # stored newest first: the order is the query's
    return [row.id for row in rows]


def delivery_selects(sent: list[tuple[str, Any]]) -> list[str]:
    """The reads of deliveries by job among ``sent`` (the worker's sweeps read others)."""
    return [s for s, _ in sent if "FROM webhook_deliveries JOIN jobs" in s]


async def test_each_jobs_deliveries_in_one_query_as_its_owner_sees_them(
    runtime: Runtime,
) -> None:
    deps = runtime.deps
    alice, bob = (
        Principal(uuid.uuid4(), admin=False, name=name, max_priority=None)
        for name in ("alice", "bob")
    )
    new = job_service.NewImageJob(prompt="p", provider="mock")
    first, second, third = [await job_service.create_image_job(deps, new, alice) for _ in "abc"]
    bobs = await job_service.create_image_job(deps, new, bob)
    made = {
        first.id: await add_deliveries(runtime, first.id, 2),
        third.id: await add_deliveries(runtime, third.id, 1),
        bobs.id: await add_deliveries(runtime, bobs.id, 1),
    }
    asked = [first.id, second.id, third.id, bobs.id, "job_nope", first.id]
    with statements_sent(deps.engine) as sent:
        found = await webhooks.deliveries_of(deps, asked, alice)
    assert [[row.id for row in rows] for rows in found] == [
        made[first.id],
        [],
        made[third.id],
        [],  # bob's job: not alice's to see
        [],
        made[first.id],
    ]
    assert len(delivery_selects(sent)) == 1, sent
    seen_by = {
        who.name: [len(rows) for rows in await webhooks.deliveries_of(deps, [bobs.id], who)]
        for who in (bob, OPEN)
    }
    assert seen_by == {"bob": [1], "open": [1]}
    # a watch token reads its one job as its key does, deliveries included
    token = replace(
        alice,
        scope=Scope(decode_id(JOB_ID_PREFIX, third.id), alice.key_id, frozenset(), time() + 60),
    )
    found = await webhooks.deliveries_of(deps, [third.id, first.id], token)
    assert [[row.id for row in rows] for rows in found] == [made[third.id], []]


async def test_a_page_of_jobs_reads_their_deliveries_together(settings_factory: Any) -> None:
    async with serving(settings_factory) as served:
        made: dict[str, list[uuid.UUID]] = {}
        for count in (0, 1, 3, 2):
            job_id = (await served.generate(served.keys.alice))["job"]["id"]
            made[job_id] = await add_deliveries(served.runtime, job_id, count)
        with statements_sent(served.runtime.deps.engine) as sent:
            body = await served.graphql(served.keys.alice, PAGE)
        assert "errors" not in body, body
        listed = {
            edge["node"]["id"]: edge["node"]["webhookDeliveries"]
            for edge in body["data"]["jobs"]["edges"]
        }
        assert {job_id: [d["attempt"] for d in rows] for job_id, rows in listed.items()} == {
            job_id: list(range(1, len(ids) + 1)) for job_id, ids in made.items()
        }
        assert all(rows[-1]["succeeded"] for rows in listed.values() if rows)
        assert len(delivery_selects(sent)) == 1, delivery_selects(sent)
        # bob's page holds none of alice's jobs, nor their deliveries
        theirs = await served.graphql(served.keys.bob, PAGE)
        assert theirs["data"]["jobs"]["edges"] == []
