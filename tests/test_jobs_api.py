"""The jobs API as clients use it: pages, filters, cancel, retry, idempotency and media."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from gql_media.api.types import error_code
from gql_media.domain import SYSTEM
from gql_media.errors import ErrorCode
from gql_media.runtime import Runtime
from gql_media.services.jobs import NewImageJob, create_image_job, get_job
from gql_media.settings import Settings
from gql_media.worker.main import running_worker
from tests.support import JOB_FIELDS, PARAMETERS, LiveServer, graphql_ws, start_server

PAGE = f"""
query Page($first: Int, $after: String, $filter: JobFilter) {{
  jobs(first: $first, after: $after, filter: $filter) {{
    totalCount
    pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
    edges {{ cursor node {{ {JOB_FIELDS} }} }}
  }}
}}
"""
CREATE = f"""
mutation Create($input: GenerateImageInput!) {{
  generateImage(input: $input) {{ job {{ {JOB_FIELDS} }} userErrors {{ field code message }} }}
}}
"""
JOB = f"query Job($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
FOLLOW = f"subscription Follow($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"
CANCEL = f"""
mutation Cancel($id: ID!) {{
  cancelJob(id: $id) {{ job {{ {JOB_FIELDS} }} userErrors {{ field code message }} }}
}}
"""
RETRY = f"""
mutation Retry($id: ID!) {{
  retryJob(id: $id) {{ job {{ {JOB_FIELDS} }} userErrors {{ field code message }} }}
}}
"""
SLOW = {"provider": "mock", "extra": {"delayMs": 60_000, "steps": 600}}


@pytest.fixture
async def api(settings: Settings, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    """The api without a worker, so jobs stay QUEUED until a test starts one."""
    async with start_server(settings, fake_redis_server, with_worker=False) as live:
        yield live


async def create(server: LiveServer, **fields: Any) -> dict[str, Any]:
    fields.setdefault("prompt", "a lighthouse at dusk")
    body = await server.graphql(CREATE, {"input": fields})
    payload = body["data"]["generateImage"]
    assert payload["userErrors"] == [], payload
    job: dict[str, Any] = payload["job"]
    return job


async def page(server: LiveServer, **variables: Any) -> dict[str, Any]:
    body = await server.graphql(PAGE, variables)
    assert "errors" not in body, body
    connection: dict[str, Any] = body["data"]["jobs"]
    return connection


async def page_error(server: LiveServer, **variables: Any) -> str:
    body = await server.graphql(PAGE, variables)
    assert body["data"] is None, body
    [error] = body["errors"]
    return str(error["extensions"]["code"])


async def read(server: LiveServer, job_id: str) -> dict[str, Any]:
    body = await server.graphql(JOB, {"id": job_id})
    job: dict[str, Any] = body["data"]["job"]
    return job


async def mutate(server: LiveServer, mutation: str, job_id: str) -> dict[str, Any]:
    body = await server.graphql(mutation, {"id": job_id})
    assert "errors" not in body, body
    payload: dict[str, Any] = next(iter(body["data"].values()))
    return payload


async def finished(server: LiveServer, job_id: str) -> dict[str, Any]:
    """The job once it reaches a terminal state, waited for over a subscription."""
    async with graphql_ws(server.ws_url) as ws:
        updates = await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id}))
    job: dict[str, Any] = updates[-1]["data"]["jobUpdated"]
    assert job["status"] in {"SUCCEEDED", "FAILED", "CANCELED"}, updates
    return job


def ids(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in connection["edges"]]


# -- pagination ---------------------------------------------------------------------------


async def test_pages_are_newest_first_without_gaps_or_duplicates(api: LiveServer) -> None:
    created = [(await create(api, prompt=f"job {n}"))["id"] for n in range(7)]
    newest_first = created[::-1]

    first = await page(api, first=3)
    assert ids(first) == newest_first[:3]
    assert first["totalCount"] == 7
    info = first["pageInfo"]
    assert info["hasNextPage"] and not info["hasPreviousPage"]
    assert info["startCursor"] == first["edges"][0]["cursor"]
    assert info["endCursor"] == first["edges"][-1]["cursor"]

    # A job created between pages lands before the first page and shifts nothing after it.
    late = (await create(api, prompt="late"))["id"]
    second = await page(api, first=3, after=info["endCursor"])
    assert ids(second) == newest_first[3:6]
    assert second["totalCount"] == 8
    assert second["pageInfo"]["hasNextPage"] and second["pageInfo"]["hasPreviousPage"]

    third = await page(api, first=3, after=second["pageInfo"]["endCursor"])
    assert ids(third) == newest_first[6:]
    assert not third["pageInfo"]["hasNextPage"]

    assert ids(await page(api)) == [late, *newest_first]  # default page size holds them all
    empty = await page(api, first=0)
    assert empty["edges"] == [] and empty["pageInfo"]["hasNextPage"]
    assert empty["pageInfo"]["endCursor"] is None
    last = await page(api, after=third["pageInfo"]["endCursor"])
    assert last["edges"] == [] and not last["pageInfo"]["hasNextPage"]


async def test_page_size_is_bounded(api: LiveServer, settings: Settings) -> None:
    await create(api)
    assert len((await page(api, first=settings.max_page_size))["edges"]) == 1
    assert await page_error(api, first=settings.max_page_size + 1) == "INVALID_ARGUMENT"
    assert await page_error(api, first=-1) == "INVALID_ARGUMENT"


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_cursors_not_made_by_the_server_are_rejected(api: LiveServer) -> None:
    job = await create(api)
    garbage = [
        "garbage",
        "",
        "!!!",
        _cursor([1, 2]),
        _cursor({"a": 1}),
        _cursor(["yesterday", job["id"]]),
        _cursor([job["createdAt"], "job_nope"]),
        _cursor([job["createdAt"], job["id"], 3]),
        _cursor([job["createdAt"], 7]),
        _cursor(None),
    ]
    for cursor in garbage:
        assert await page_error(api, after=cursor) == "INVALID_CURSOR", cursor


# -- filters ------------------------------------------------------------------------------


async def test_filters_select_by_status_kind_provider_and_time(api: LiveServer) -> None:
    jobs = [
        await create(api, prompt="a"),
        await create(api, prompt="b", **SLOW),
        await create(api, prompt="c"),
        await create(api, prompt="d", **SLOW),
    ]
    a, b, c, d = (job["id"] for job in jobs)
    assert (await mutate(api, CANCEL, c))["userErrors"] == []

    async def selected(**job_filter: Any) -> list[str]:
        connection = await page(api, filter=job_filter)
        assert connection["totalCount"] == len(connection["edges"])
        return ids(connection)

    assert await selected() == [d, c, b, a]
    assert await selected(status=["CANCELED"]) == [c]
    assert await selected(status=["QUEUED", "CANCELED"]) == [d, c, b, a]
    assert await selected(status=["SUCCEEDED", "FAILED"]) == []
    assert await selected(kind="GENERATE_IMAGE") == [d, c, b, a]
    assert await selected(provider="mock") == [d, b]
    assert await selected(provider="mock", status=["QUEUED"]) == [d, b]
    assert await selected(provider="local", status=["QUEUED"]) == [a]
    assert await selected(provider="nobody") == []
    assert await selected(createdAfter=jobs[1]["createdAt"]) == [d, c, b]  # inclusive
    assert await selected(createdBefore=jobs[2]["createdAt"]) == [b, a]  # exclusive
    between = {"createdAfter": jobs[1]["createdAt"], "createdBefore": jobs[3]["createdAt"]}
    assert await selected(**between) == [c, b]

    # Pages of a filtered list stay within the filter.
    first = await page(api, first=1, filter={"provider": "mock"})
    assert ids(first) == [d] and first["totalCount"] == 2
    rest = await page(
        api, first=1, after=first["pageInfo"]["endCursor"], filter={"provider": "mock"}
    )
    assert ids(rest) == [b] and not rest["pageInfo"]["hasNextPage"]


# -- cancelJob ----------------------------------------------------------------------------


async def test_cancel_a_queued_job(api: LiveServer) -> None:
    job = await create(api)
    payload = await mutate(api, CANCEL, job["id"])
    assert payload["userErrors"] == []
    canceled = payload["job"]
    assert canceled["status"] == "CANCELED"
    assert canceled["version"] > job["version"] and canceled["finishedAt"] is not None
    assert await read(api, job["id"]) == canceled

    again = await mutate(api, CANCEL, job["id"])
    assert again["job"] is None
    assert [(e["field"], e["code"]) for e in again["userErrors"]] == [("id", "INVALID_STATE")]
    assert await read(api, job["id"]) == canceled


async def test_cancel_a_running_job(server: LiveServer) -> None:
    job = await create(server, **SLOW)
    async with graphql_ws(server.ws_url) as ws:
        op = await ws.subscribe(FOLLOW, {"id": job["id"]})
        while (update := await ws.next_payload(op)) is not None:
            if update["data"]["jobUpdated"]["status"] == "RUNNING":
                break
        payload = await mutate(server, CANCEL, job["id"])
        assert payload["userErrors"] == [] and payload["job"]["status"] == "CANCELED"
        rest = [p["data"]["jobUpdated"] for p in await ws.collect(op)]
    assert rest[-1]["status"] == "CANCELED"
    assert rest[-1]["version"] == payload["job"]["version"]
    final = await read(server, job["id"])
    assert final["status"] == "CANCELED" and final["outputs"] == []


async def test_cancel_a_finished_or_unknown_job_is_a_user_error(server: LiveServer) -> None:
    done = await finished(server, (await create(server, provider="mock"))["id"])
    assert done["status"] == "SUCCEEDED"
    payload = await mutate(server, CANCEL, done["id"])
    assert payload["job"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [("id", "INVALID_STATE")]
    assert await read(server, done["id"]) == done

    unknown = await mutate(server, CANCEL, "job_" + "0" * 32)
    assert [(e["field"], e["code"]) for e in unknown["userErrors"]] == [("id", "NOT_FOUND")]
    malformed = await mutate(server, CANCEL, "nope")
    assert [(e["field"], e["code"]) for e in malformed["userErrors"]] == [("id", "INVALID_ID")]


# -- retryJob -----------------------------------------------------------------------------


async def test_retry_a_failed_job_gives_it_fresh_attempts(server: LiveServer) -> None:
    job = await create(server, provider="mock", extra={"fail": "permanent"})
    failed = await finished(server, job["id"])
    assert failed["status"] == "FAILED" and failed["attempts"] == 1
    assert failed["error"] == {
        "code": "PROVIDER_ERROR",
        "message": "mock permanent failure on attempt 1",
        "retryable": False,
    }

    payload = await mutate(server, RETRY, job["id"])
    assert payload["userErrors"] == []
    queued = payload["job"]
    assert queued["status"] == "QUEUED"
    assert (queued["attempts"], queued["maxAttempts"]) == (0, failed["maxAttempts"])
    assert queued["error"] is None and queued["progress"] == 0
    assert queued["startedAt"] is None and queued["finishedAt"] is None
    assert queued["version"] > failed["version"]

    # A permanent failure fails again, on the first of its fresh attempts.
    again = await finished(server, job["id"])
    assert again["status"] == "FAILED" and again["attempts"] == 1
    assert again["version"] > queued["version"]


@pytest.fixture
async def two_attempts(settings_factory: Any, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    settings = settings_factory(max_attempts=2)
    async with start_server(settings, fake_redis_server, with_worker=True) as live:
        yield live


async def test_retry_after_exhausted_attempts_resets_them(two_attempts: LiveServer) -> None:
    server = two_attempts
    job = await create(server, provider="mock", extra={"fail": "transient"})
    failed = await finished(server, job["id"])
    assert (failed["status"], failed["attempts"], failed["maxAttempts"]) == ("FAILED", 2, 2)
    assert failed["error"]["code"] == "PROVIDER_UNAVAILABLE" and failed["error"]["retryable"]

    queued = (await mutate(server, RETRY, job["id"]))["job"]
    assert (queued["status"], queued["attempts"]) == ("QUEUED", 0)
    again = await finished(server, job["id"])
    assert (again["status"], again["attempts"]) == ("FAILED", 2)


async def test_retry_a_canceled_job_runs_it(api: LiveServer, runtime: Runtime) -> None:
    job = await create(api, provider="mock")
    assert (await mutate(api, CANCEL, job["id"]))["userErrors"] == []
    queued = (await mutate(api, RETRY, job["id"]))["job"]
    assert queued["status"] == "QUEUED" and queued["finishedAt"] is None
    async with running_worker(runtime):
        done = await finished(api, job["id"])
    assert done["status"] == "SUCCEEDED" and done["attempts"] == 1
    assert len(done["outputs"]) == 1


async def test_retry_is_only_for_failed_or_canceled_jobs(server: LiveServer) -> None:
    done = await finished(server, (await create(server, provider="mock"))["id"])
    payload = await mutate(server, RETRY, done["id"])
    assert payload["job"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [("id", "INVALID_STATE")]
    assert await read(server, done["id"]) == done

    unknown = await mutate(server, RETRY, "job_" + "f" * 32)
    assert [(e["field"], e["code"]) for e in unknown["userErrors"]] == [("id", "NOT_FOUND")]


async def test_retry_of_a_queued_job_is_refused(api: LiveServer) -> None:
    job = await create(api)
    payload = await mutate(api, RETRY, job["id"])
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [("id", "INVALID_STATE")]
    assert (await read(api, job["id"]))["version"] == job["version"]


# -- idempotency --------------------------------------------------------------------------


async def test_same_key_and_input_return_the_same_job(api: LiveServer) -> None:
    fields = {"prompt": "a kite", "idempotencyKey": "order-17"}  # no seed: still the same input
    first = await create(api, **fields)
    second = await create(api, **fields)
    assert second["id"] == first["id"]
    other = await create(api, prompt="a kite", idempotencyKey="order-18")
    assert other["id"] != first["id"]
    assert (await page(api))["totalCount"] == 2


async def test_concurrent_duplicates_make_one_job(api: LiveServer) -> None:
    fields = {"prompt": "a kite", "width": 128, "idempotencyKey": "burst"}
    payloads = await asyncio.gather(*(api.generate(**fields) for _ in range(10)))
    assert all(p["userErrors"] == [] for p in payloads), payloads
    assert len({p["job"]["id"] for p in payloads}) == 1
    assert (await page(api))["totalCount"] == 1


async def test_same_key_with_other_input_is_a_conflict(api: LiveServer) -> None:
    job = await create(api, prompt="a kite", idempotencyKey="order-19")
    payload = await api.generate(prompt="a boat", idempotencyKey="order-19")
    assert payload["job"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        ("idempotencyKey", "IDEMPOTENCY_CONFLICT")
    ]
    payload = await api.generate(prompt="a kite", idempotencyKey="order-19", width=640)
    assert payload["userErrors"][0]["code"] == "IDEMPOTENCY_CONFLICT"
    assert ids(await page(api)) == [job["id"]]


# -- media --------------------------------------------------------------------------------


async def test_outputs_are_served_with_caching_headers(server: LiveServer) -> None:
    png = await create(server, provider="mock", width=96, height=64, numOutputs=2)
    jpeg = await create(server, provider="mock", width=64, height=80, outputFormat="JPEG")
    outputs = (await finished(server, png["id"]))["outputs"]
    outputs += (await finished(server, jpeg["id"]))["outputs"]
    assert [o["contentType"] for o in outputs] == ["image/png", "image/png", "image/jpeg"]
    assert len({o["url"] for o in outputs}) == 3

    for output in outputs:
        response = await server.http.get(output["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == output["contentType"]
        assert len(response.content) == output["byteSize"]
        assert hashlib.sha256(response.content).hexdigest() == output["sha256"]
        assert "immutable" in response.headers["cache-control"]
        assert response.headers["x-content-type-options"] == "nosniff"

        etag = response.headers["etag"]
        unchanged = await server.http.get(output["url"], headers={"if-none-match": etag})
        assert unchanged.status_code == 304 and unchanged.content == b""
        since = response.headers["last-modified"]
        unchanged = await server.http.get(output["url"], headers={"if-modified-since": since})
        assert unchanged.status_code == 304

        part = await server.http.get(output["url"], headers={"range": "bytes=0-7"})
        assert part.status_code == 206 and part.content == response.content[:8]


async def _raw_get(server: LiveServer, target: str) -> tuple[int, bytes]:
    """GET exactly ``target``: HTTP clients would tidy ``..`` away before sending it."""
    address = urlsplit(server.url)
    assert address.hostname is not None and address.port is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_media_paths_cannot_leave_the_media_directory(server: LiveServer) -> None:
    job = await finished(server, (await create(server, provider="mock"))["id"])
    key = urlsplit(job["outputs"][0]["url"]).path.removeprefix("/media/")
    assert (await _raw_get(server, f"/media/{key}"))[0] == 200
    attempts = [
        "/media/../gql_media.db",
        "/media/../../../../etc/passwd",
        "/media/%2e%2e/gql_media.db",
        "/media/%2e%2e%2fgql_media.db",
        "/media/..%2f..%2f..%2fetc%2fpasswd",
        "/media/%2E%2E/%2E%2E/etc/passwd",
        f"/media/{key}/../../gql_media.db",
        "/media//etc/passwd",
        "/media/%2fetc%2fpasswd",
        "/media/..\\gql_media.db",
        "/media/....//gql_media.db",
        "/media/",
        "/media/%00",
    ]
    for target in attempts:
        status, body = await _raw_get(server, target)
        assert status == 404, (target, status)
        assert b"SQLite format" not in body and b"root:" not in body, target


async def test_a_new_jobs_snapshot_is_the_stored_job(runtime: Runtime) -> None:
    """The snapshot a create returns (and announces) is made from the values it inserts,
    not read back: it must equal the job as the database then has it."""
    deps = runtime.deps
    created = await create_image_job(
        deps,
        NewImageJob(
            prompt=" a kite ",
            provider="mock",
            width=128,
            seed=5,
            idempotency_key="kite-1",
            extra={"steps": 2},
        ),
        SYSTEM,
    )
    stored = await get_job(deps, created.id, SYSTEM)
    assert stored == created


async def test_a_generation_reads_back_its_typed_parameters(api: LiveServer) -> None:
    job = await create(
        api,
        provider="mock",
        negativePrompt="fog",
        width=128,
        height=64,
        numOutputs=2,
        outputFormat="WEBP",
        extra={"steps": 3},
    )
    body = await api.graphql(f"query($id: ID!) {{ job(id: $id) {{ {PARAMETERS} }} }}", job)
    asked = body["data"]["job"]["parameters"]
    seed = asked.pop("seed")
    assert isinstance(seed, int) and 0 <= seed <= 2_147_483_647  # drawn, and recorded
    assert asked == {
        "__typename": "GenerateImageParameters",
        "negativePrompt": "fog",
        "width": 128,
        "height": 64,
        "numOutputs": 2,
        "outputFormat": "WEBP",
        "extra": {"steps": 3},
    }
    jobs = await page(api)  # JOB_FIELDS' parameters: the generation fields, typed
    assert jobs["edges"][0]["node"]["parameters"]["seed"] == seed


def test_a_stored_error_code_this_version_does_not_know_reads_as_internal_error() -> None:
    assert error_code("PROVIDER_TIMEOUT") is ErrorCode.PROVIDER_TIMEOUT
    assert error_code("SOMETHING_RETIRED") is ErrorCode.INTERNAL_ERROR
