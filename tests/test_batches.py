"""generateImages: several jobs in one request, all queued or none, each input's problems
named by its index; bounded by GQL_MEDIA_MAX_BATCH and by the owner's unfinished jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gql_media.adapters import redis as redis_adapter
from gql_media.runtime import open_runtime
from gql_media.services import auth
from gql_media.settings import Settings
from tests.support import JOB_FIELDS, LiveServer, start_server
from tests.test_input_limits import POISON, Served, count_jobs
from tests.test_input_limits import poisoned as poisoned  # the fixture
from tests.test_validation import assert_clean

BATCH = f"""
mutation Batch($inputs: [GenerateImageInput!]!) {{
  generateImages(inputs: $inputs) {{
    jobs {{ {JOB_FIELDS} priority group deadline }}
    userErrors {{ field code message }}
  }}
}}
"""
TOTAL = "{ jobs { totalCount } }"
JOB = "query Job($id: ID!) { job(id: $id) { status outputs { id } } }"


@pytest.fixture
async def api(settings: Settings, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    """The api without a worker: jobs stay QUEUED."""
    async with start_server(settings, fake_redis_server, with_worker=False) as live:
        yield live


def inputs(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"prompt": f"picture {i}", "width": 64, "height": 64, **fields} for i in range(count)]


async def submit(
    http: httpx.AsyncClient, batch: list[dict[str, Any]], query: str = BATCH
) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query, "variables": {"inputs": batch}})
    assert_clean(response)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["generateImages"]
    if payload["userErrors"]:
        assert payload["jobs"] == [], payload
    return payload


def refusals(payload: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["field"], e["code"]) for e in payload["userErrors"]]


async def total(live: LiveServer, headers: dict[str, str] | None = None) -> int:
    response = await live.http.post("/graphql", json={"query": TOTAL}, headers=headers)
    return int(response.json()["data"]["jobs"]["totalCount"])


async def test_three_inputs_make_three_jobs_in_order(api: LiveServer) -> None:
    batch = inputs(3)
    batch[1].update(priority=4, group="user-7")
    payload = await submit(api.http, batch)
    assert payload["userErrors"] == []
    jobs = payload["jobs"]
    assert [job["prompt"] for job in jobs] == ["picture 0", "picture 1", "picture 2"]
    assert [job["status"] for job in jobs] == ["QUEUED"] * 3
    assert len({job["id"] for job in jobs}) == 3
    scheduling = [(job["priority"], job["group"]) for job in jobs]
    assert scheduling == [(0, None), (4, "user-7"), (0, None)]
    assert await total(api) == 3
    # listed newest first: the batch's jobs in reverse input order
    listed = await api.graphql("{ jobs { edges { node { prompt } } } }")
    prompts = [edge["node"]["prompt"] for edge in listed["data"]["jobs"]["edges"]]
    assert prompts == ["picture 2", "picture 1", "picture 0"]


async def test_the_jobs_are_queued_for_workers(server: LiveServer) -> None:
    payload = await submit(server.http, inputs(2))
    assert payload["userErrors"] == []
    for job in payload["jobs"]:
        async with asyncio.timeout(20):
            while True:
                found = (await server.graphql(JOB, {"id": job["id"]}))["data"]["job"]
                if found["status"] == "SUCCEEDED":
                    break
                assert found["status"] in ("QUEUED", "RUNNING"), found
                await asyncio.sleep(0.05)
        assert len(found["outputs"]) == 1


async def test_one_bad_input_queues_none(api: LiveServer) -> None:
    batch = inputs(4)
    batch[2]["width"] = 10_000
    batch[3].update(priority=11, prompt=" ")
    payload = await submit(api.http, batch)
    assert refusals(payload) == [
        ("inputs.2.width", "SIZE_OUT_OF_RANGE"),
        ("inputs.3.prompt", "PROMPT_EMPTY"),
        ("inputs.3.priority", "INVALID_ARGUMENT"),
    ]
    assert await total(api) == 0
    past = {"prompt": "x", "deadline": "2000-01-01T00:00Z"}
    deadline = await submit(api.http, [*inputs(1), past])
    assert refusals(deadline) == [("inputs.1.deadline", "DEADLINE_IN_PAST")]
    assert await total(api) == 0


async def test_a_row_the_database_refuses_undoes_the_whole_batch(poisoned: Served) -> None:
    batch = inputs(4)
    batch[2]["prompt"] = POISON
    async with poisoned.client(poisoned.keys.alice) as http:
        payload = await submit(http, batch)
    assert refusals(payload) == [("inputs", "INVALID_ARGUMENT")]
    assert await count_jobs(poisoned) == 0


async def test_more_inputs_than_the_maximum_are_refused(settings_factory: Any) -> None:
    settings = settings_factory(max_batch=3)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        payload = await submit(live.http, inputs(4))
        assert refusals(payload) == [("inputs", "BATCH_TOO_LARGE")]
        assert await total(live) == 0
        assert (await submit(live.http, inputs(3)))["userErrors"] == []
        assert (await submit(live.http, []))["jobs"] == []
        assert await total(live) == 3


async def test_the_owners_cap_holds_for_the_batch_as_a_whole(settings_factory: Any) -> None:
    settings = settings_factory(
        auth="required",
        secret_key="s",
        api_key_cache_seconds=0,
        rate_limit_per_minute=0,
        max_active_jobs=4,
    )
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with open_runtime(settings, fake) as runtime:
        _, alice = await auth.create_key(runtime.deps, "alice", max_priority=1)
        _, admin = await auth.create_key(runtime.deps, "ops", admin=True, max_priority=0)
    alice_headers = {"Authorization": f"Bearer {alice}"}
    async with (
        start_server(settings, fake, with_worker=False) as live,
        httpx.AsyncClient(base_url=live.url, headers=alice_headers) as http,
    ):
        assert (await submit(http, inputs(2)))["userErrors"] == []
        over = await submit(http, inputs(3))
        assert refusals(over) == [("inputs", "TOO_MANY_ACTIVE_JOBS")]
        assert over["userErrors"][0]["message"].startswith("this API key has 2 unfinished jobs")
        assert await total(live, alice_headers) == 2
        assert (await submit(http, inputs(2)))["userErrors"] == []
        assert await total(live, alice_headers) == 4
        assert refusals(await submit(http, inputs(1))) == [("inputs", "TOO_MANY_ACTIVE_JOBS")]

        too_high = await submit(http, inputs(2, priority=2))
        assert refusals(too_high) == [
            ("inputs.0.priority", "PRIORITY_NOT_ALLOWED"),
            ("inputs.1.priority", "PRIORITY_NOT_ALLOWED"),
        ]
        async with httpx.AsyncClient(
            base_url=live.url, headers={"Authorization": f"Bearer {admin}"}
        ) as as_admin:
            assert (await submit(as_admin, inputs(2, priority=10)))["userErrors"] == []


async def test_idempotency_keys_inside_a_batch(api: LiveServer) -> None:
    batch = inputs(3)
    batch[0]["idempotencyKey"] = "a"
    batch[2]["idempotencyKey"] = "c"
    first = await submit(api.http, batch)
    assert first["userErrors"] == []
    again = await submit(api.http, batch)  # a retried batch: the same jobs, none new
    assert [job["id"] for job in again["jobs"]][::2] == [job["id"] for job in first["jobs"]][::2]
    assert again["jobs"][1]["id"] != first["jobs"][1]["id"]  # no key: a new job
    assert await total(api) == 4

    single = await api.graphql(
        "mutation($input: GenerateImageInput!) { generateImage(input: $input) { job { id } } }",
        {"input": batch[2]},
    )
    assert single["data"]["generateImage"]["job"]["id"] == first["jobs"][2]["id"]

    changed = inputs(3)
    changed[0]["idempotencyKey"] = "a"
    changed[0]["priority"] = 1
    changed[1]["idempotencyKey"] = "b"
    changed[2]["idempotencyKey"] = "b"
    conflict = await submit(api.http, changed)
    assert refusals(conflict) == [("inputs.2.idempotencyKey", "IDEMPOTENCY_CONFLICT")]
    changed[2]["idempotencyKey"] = "new"
    conflict = await submit(api.http, changed)
    assert refusals(conflict) == [("inputs.0.idempotencyKey", "IDEMPOTENCY_CONFLICT")]
    assert await total(api) == 4


async def test_a_full_batch_passes_the_default_document_limits(api: LiveServer) -> None:
    """A batch of GQL_MEDIA_MAX_BATCH inputs selecting every field of each job is within the
    default cost and token caps, as a variable and as a literal in the document."""
    assert Settings().max_batch == 100
    payload = await submit(api.http, inputs(100, priority=1, group="g"))
    assert payload["userErrors"] == [] and len(payload["jobs"]) == 100
    literal = ", ".join(f'{{prompt: "p{i}", width: 64}}' for i in range(100))
    body = await api.graphql(
        f"mutation {{ generateImages(inputs: [{literal}]) {{ jobs {{ {JOB_FIELDS} }} "
        "userErrors { code } } }"
    )
    assert "errors" not in body, body
    assert len(body["data"]["generateImages"]["jobs"]) == 100


async def test_oversized_batches_get_clear_errors(api: LiveServer) -> None:
    """Attacks on a running server: one input too many, prompts over the limit, a body over
    the limit, and a body of a hundred thousand tiny inputs; coded answers, never a 500."""
    over = await submit(api.http, inputs(101))
    assert refusals(over) == [("inputs", "BATCH_TOO_LARGE")]

    long_prompts = await submit(api.http, inputs(100, prompt="x" * 5000))
    assert len(long_prompts["userErrors"]) == 100
    assert refusals(long_prompts)[99] == ("inputs.99.prompt", "PROMPT_TOO_LONG")

    huge = inputs(100, prompt="x" * 20_000)  # 2 MB
    response = await api.http.post("/graphql", json={"query": BATCH, "variables": {"inputs": huge}})
    assert_clean(response)
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"

    tiny = [{"prompt": "p"}] * 60_000  # just under the body limit
    response = await api.http.post(
        "/graphql", json={"query": BATCH, "variables": {"inputs": tiny}}, timeout=60
    )
    assert_clean(response)
    assert refusals(response.json()["data"]["generateImages"]) == [("inputs", "BATCH_TOO_LARGE")]
    assert await total(api) == 0
