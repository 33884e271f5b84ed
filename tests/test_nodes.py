"""node(id:) and nodes(ids:): jobs and media assets fetched again by the ids clients hold,
bounded by GQL_MEDIA_MAX_NODES, one lookup per type for a batch."""

from __future__ import annotations

import uuid
from typing import Any

from gql_media.db.models import WebhookDeliveryRow, utcnow
from gql_media.domain import (
    JOB_ID_PREFIX,
    OPEN,
    WEBHOOK_DELIVERY_ID_PREFIX,
    Principal,
    decode_id,
    encode_id,
)
from gql_media.runtime import Runtime
from gql_media.services import jobs as job_service
from gql_media.services import nodes
from gql_media.settings import Settings
from tests.media import jpeg
from tests.support import LiveServer, graphql_ws, start_server, statements_sent

NODES = """query($ids: [ID!]!) { nodes(ids: $ids) {
  __typename id
  ... on Job { status outputs { id } }
  ... on MediaAsset { contentType }
} }"""
NODE = "query($id: ID!) { node(id: $id) { __typename id ... on Job { prompt } } }"
FOLLOW = "subscription($id: ID!) { jobUpdated(id: $id) { status outputs { id } } }"
UNKNOWN = "job_" + "0" * 32


async def finished_job(server: LiveServer) -> dict[str, Any]:
    job_id = (await server.generate(provider="mock", width=64, height=64))["job"]["id"]
    async with graphql_ws(server.ws_url) as ws:
        updates = await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id}))
    done: dict[str, Any] = updates[-1]["data"]["jobUpdated"]
    assert done["status"] == "SUCCEEDED", done
    return {"id": job_id, **done}


async def test_nodes_are_jobs_and_media_by_the_ids_clients_hold(server: LiveServer) -> None:
    job = await finished_job(server)
    output = job["outputs"][0]["id"]
    uploaded = await server.http.post(
        "/uploads", content=jpeg(32, 32), headers={"Content-Type": "image/jpeg"}
    )
    upload = uploaded.json()["media"]["id"]
    ids = [job["id"], output, upload, UNKNOWN, "med_" + "f" * 32, "nope", ""]
    body = await server.graphql(NODES, {"ids": ids})
    assert "errors" not in body, body
    found = body["data"]["nodes"]
    assert found[0] == {"__typename": "Job", "id": job["id"], **job}
    assert found[1] == {"__typename": "MediaAsset", "id": output, "contentType": "image/png"}
    assert found[2] == {"__typename": "MediaAsset", "id": upload, "contentType": "image/jpeg"}
    assert found[3:] == [None] * 4
    one = await server.graphql(NODE, {"id": job["id"]})
    assert one["data"]["node"] == {"__typename": "Job", "id": job["id"], "prompt": job_prompt()}
    assert (await server.graphql(NODE, {"id": UNKNOWN}))["data"]["node"] is None


def job_prompt() -> str:
    return "a lighthouse at dusk"  # LiveServer.generate's


async def test_nodes_past_the_bound_are_refused_with_a_code(
    settings_factory: Any, fake_redis_server: Any
) -> None:
    settings: Settings = settings_factory(max_nodes=5)
    async with start_server(settings, fake_redis_server, with_worker=False) as server:
        job_id = (await server.generate(provider="mock"))["job"]["id"]
        ok = await server.graphql(NODES, {"ids": [job_id] * 5})
        assert [node["id"] for node in ok["data"]["nodes"]] == [job_id] * 5
        # 20,000 ids: as many as the body cap lets through
        for ids in ([job_id] * 6, [UNKNOWN] * 20_000):
            body = await server.graphql(NODES, {"ids": ids})
            assert body["data"] is None
            assert [e["extensions"]["code"] for e in body["errors"]] == ["TOO_MANY_NODES"]


async def test_a_batch_of_ids_is_one_lookup_per_type(runtime: Runtime) -> None:
    deps = runtime.deps
    made = [
        await job_service.create_image_job(
            deps, job_service.NewImageJob(prompt=f"p{i}", provider="mock"), OPEN
        )
        for i in range(20)
    ]
    unknown = [f"{prefix}{i:032x}" for prefix in ("med_", "whd_") for i in range(10)]
    ids = [job.id for job in made] + unknown
    with statements_sent(deps.engine) as sent:
        found = await nodes.get_nodes(deps, ids, OPEN)
    statements = [statement for statement, _ in sent]
    assert [getattr(each, "id", None) for each in found] == [job.id for job in made] + [None] * 20
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # the jobs, their outputs (selectinload), the media assets, the webhook deliveries
    assert len(selects) == 4, statements


async def test_a_webhook_delivery_is_its_jobs_owners(runtime: Runtime) -> None:
    deps = runtime.deps
    alice, bob = (
        Principal(uuid.uuid4(), admin=False, name=name, max_priority=None)
        for name in ("alice", "bob")
    )
    job = await job_service.create_image_job(
        deps, job_service.NewImageJob(prompt="p", provider="mock"), alice
    )
    row = WebhookDeliveryRow(
        id=uuid.uuid4(),
        job_id=decode_id(JOB_ID_PREFIX, job.id),
        webhook_id="msg_1",
        event="job.succeeded",
        attempt=1,
        url="https://example.com/hook",
        status_code=200,
        error=None,
        duration_ms=12.5,
        succeeded=True,
        created_at=utcnow(),
    )
    async with deps.sessions.begin() as session:
        session.add(row)
    delivery_id = encode_id(WEBHOOK_DELIVERY_ID_PREFIX, row.id)
    ids = [delivery_id, job.id]
    seen = {
        who.name: [getattr(found, "id", None) for found in await nodes.get_nodes(deps, ids, who)]
        for who in (alice, bob, OPEN)
    }
    assert seen == {"alice": [row.id, job.id], "bob": [None, None], "open": [row.id, job.id]}


async def test_the_cost_of_nodes_counts_every_id_it_may_fetch(
    settings_factory: Any, fake_redis_server: Any
) -> None:
    """A variable list of ids counts as GQL_MEDIA_MAX_NODES ids, a literal one as its
    length: what each id fetches is paid for as a page of jobs is."""
    settings: Settings = settings_factory(max_nodes=50, max_query_cost=400)
    selection = "{ id ... on Job { prompt status outputs { id url width height } } }"
    async with start_server(settings, fake_redis_server, with_worker=False) as server:
        job_id = (await server.generate(provider="mock"))["job"]["id"]
        costly = await server.graphql(
            f"query($ids: [ID!]!) {{ nodes(ids: $ids) {selection} }}", {"ids": [job_id]}
        )
        assert [e["extensions"]["code"] for e in costly["errors"]] == ["QUERY_TOO_COSTLY"]
        literal = await server.graphql(f'{{ nodes(ids: ["{job_id}", "{UNKNOWN}"]) {selection} }}')
        assert "errors" not in literal, literal
        assert [node and node["id"] for node in literal["data"]["nodes"]] == [job_id, None]
