"""The error contract: every userError of generateImage, and coded top-level errors for bad
requests, never a 500 and never a traceback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gql_media.settings import Settings
from tests.support import GENERATE, LiveServer, start_server

TOTAL = "{ jobs { totalCount } }"


@pytest.fixture
async def api(settings: Settings, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    """The api without a worker: validation needs none, and accepted jobs stay QUEUED."""
    async with start_server(settings, fake_redis_server, with_worker=False) as live:
        yield live


def assert_clean(response: httpx.Response) -> None:
    """No server error, and nothing of the server's insides in the body."""
    assert response.status_code < 500, response.text
    for leak in ("Traceback", 'File "', "Exception", "gql_media.", "sqlalchemy"):
        assert leak not in response.text, response.text


async def post(server: LiveServer, **kwargs: Any) -> httpx.Response:
    response = await server.http.post("/graphql", **kwargs)
    assert_clean(response)
    return response


async def error_codes(server: LiveServer, query: str, variables: Any = None) -> list[str]:
    """The codes of the top-level errors of a request that HTTP accepted."""
    response = await post(server, json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    errors = response.json().get("errors") or []
    return [e["extensions"]["code"] for e in errors]


async def user_errors(server: LiveServer, **fields: Any) -> list[tuple[str | None, str]]:
    fields.setdefault("prompt", "a lighthouse at dusk")
    response = await post(server, json={"query": GENERATE, "variables": {"input": fields}})
    body = response.json()
    assert "errors" not in body, body
    payload = body["data"]["generateImage"]
    if payload["userErrors"]:
        assert payload["job"] is None, payload
    return [(e["field"], e["code"]) for e in payload["userErrors"]]


async def total_count(server: LiveServer) -> int:
    body = await server.graphql(TOTAL)
    return int(body["data"]["jobs"]["totalCount"])


REJECTED: list[tuple[dict[str, Any], tuple[str, str]]] = [
    ({"prompt": ""}, ("prompt", "PROMPT_EMPTY")),
    ({"prompt": " \t\n  "}, ("prompt", "PROMPT_EMPTY")),
    ({"prompt": "x" * 2001}, ("prompt", "PROMPT_TOO_LONG")),
    ({"negativePrompt": "x" * 2001}, ("negativePrompt", "PROMPT_TOO_LONG")),
    ({"width": 63}, ("width", "SIZE_OUT_OF_RANGE")),
    ({"width": 2049}, ("width", "SIZE_OUT_OF_RANGE")),
    ({"height": 63}, ("height", "SIZE_OUT_OF_RANGE")),
    ({"height": 2049}, ("height", "SIZE_OUT_OF_RANGE")),
    ({"numOutputs": 0}, ("numOutputs", "NUM_OUTPUTS_OUT_OF_RANGE")),
    ({"numOutputs": 5}, ("numOutputs", "NUM_OUTPUTS_OUT_OF_RANGE")),
    ({"seed": -1}, ("seed", "SEED_OUT_OF_RANGE")),
    ({"provider": "dall-e-9"}, ("provider", "UNKNOWN_PROVIDER")),
    ({"provider": "mock", "extra": {"delayMs": -5}}, ("extra.delayMs", "INVALID_ARGUMENT")),
    ({"provider": "mock", "extra": {"steps": "many"}}, ("extra.steps", "INVALID_ARGUMENT")),
    ({"provider": "mock", "extra": {"fail": "sometimes"}}, ("extra.fail", "INVALID_ARGUMENT")),
    ({"extra": [1, 2]}, ("extra", "INVALID_ARGUMENT")),
    ({"idempotencyKey": ""}, ("idempotencyKey", "INVALID_ARGUMENT")),
    ({"idempotencyKey": "k" * 256}, ("idempotencyKey", "INVALID_ARGUMENT")),
]


async def test_each_invalid_input_is_a_user_error_on_its_field(api: LiveServer) -> None:
    for fields, expected in REJECTED:
        assert await user_errors(api, **fields) == [expected], fields
    assert await total_count(api) == 0, "a rejected request created a job"


async def test_every_problem_is_reported_at_once(api: LiveServer) -> None:
    found = await user_errors(
        api, prompt="  ", width=10, height=4096, numOutputs=9, seed=-3, provider="nope"
    )
    assert sorted(found) == sorted(
        [
            ("prompt", "PROMPT_EMPTY"),
            ("width", "SIZE_OUT_OF_RANGE"),
            ("height", "SIZE_OUT_OF_RANGE"),
            ("numOutputs", "NUM_OUTPUTS_OUT_OF_RANGE"),
            ("seed", "SEED_OUT_OF_RANGE"),
            ("provider", "UNKNOWN_PROVIDER"),
        ]
    )
    assert await total_count(api) == 0


async def test_values_at_the_limits_are_accepted(api: LiveServer) -> None:
    accepted: list[dict[str, Any]] = [
        {"prompt": "x" * 2000, "negativePrompt": "y" * 2000},
        {"width": 64, "height": 2048, "numOutputs": 1, "seed": 0},
        {"width": 2048, "height": 64, "numOutputs": 4, "seed": 2147483647},
        {"provider": "mock", "extra": {"delayMs": 0, "fail": "transient", "failAttempts": 1}},
        {"idempotencyKey": "k" * 255},
    ]
    for fields in accepted:
        assert await user_errors(api, **fields) == [], fields
    assert await total_count(api) == len(accepted)


async def test_malformed_http_requests_are_400_with_a_code(api: LiveServer) -> None:
    bodies = [
        b"{not json",
        b"null",
        b'"a string"',
        b"42",
        b"{}",  # no query
        b'{"query": 5}',
        b'{"query": "{ jobs { totalCount } }", "variables": [1]}',
        b'[{"query": "{ jobs { totalCount } }"}]',  # batching is off
    ]
    for body in bodies:
        response = await post(api, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"] == "application/json"
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "BAD_REQUEST", body
    response = await post(api, content=TOTAL, headers={"content-type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_operations_over_the_wrong_transport_are_refused(api: LiveServer) -> None:
    mutation = 'mutation { cancelJob(id: "job_x") { userErrors { code } } }'
    subscription = "subscription { jobEvents { id } }"
    over_get = await api.http.get("/graphql", params={"query": mutation})
    assert_clean(over_get)
    assert (over_get.status_code, over_get.headers["allow"]) == (405, "POST"), over_get.text
    assert over_get.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    responses = [
        await api.http.get("/graphql", params={"query": subscription}),
        await api.http.post("/graphql", json={"query": subscription}),
        await api.http.post("/graphql", json={"query": TOTAL, "operationName": "Other"}),
    ]
    for response in responses:
        assert_clean(response)
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_documents_that_do_not_parse_or_validate(api: LiveServer) -> None:
    assert await error_codes(api, "{ jobs { totalCount ") == ["GRAPHQL_PARSE_FAILED"]
    assert await error_codes(api, "{ jobs { nope } }") == ["GRAPHQL_VALIDATION_FAILED"]
    assert await error_codes(api, "{ nope }") == ["GRAPHQL_VALIDATION_FAILED"]
    assert await error_codes(api, '{ job(extra: "x") { id } }') == ["GRAPHQL_VALIDATION_FAILED"] * 2
    status_literal = "{ jobs(filter: {status: [DONE]}) { totalCount } }"
    assert await error_codes(api, status_literal) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_variables_of_the_wrong_type(api: LiveServer) -> None:
    by_filter = "query($f: JobFilter) { jobs(filter: $f) { totalCount } }"
    wrong = [
        (by_filter, {"f": {"status": ["DONE"]}}),
        (by_filter, {"f": {"createdAfter": "yesterday"}}),
        (by_filter, {"f": {"colour": "red"}}),
        ("query($n: Int) { jobs(first: $n) { totalCount } }", {"n": "ten"}),
        ("query($n: Int) { jobs(first: $n) { totalCount } }", {"n": "Syntax Error tokens"}),
        ("query($a: String) { jobs(after: $a) { totalCount } }", {"a": [" 99 aliases found"]}),
        (GENERATE, {"input": {"prompt": "x", "outputFormat": "GIF"}}),
        (GENERATE, {"input": {"prompt": "x", "seed": 2**31}}),  # not a GraphQL Int
        (GENERATE, {"input": {"width": 64}}),  # prompt missing
        (GENERATE, {"input": None}),
        (GENERATE, {}),
    ]
    for query, variables in wrong:
        codes = await error_codes(api, query, variables)
        assert codes == ["GRAPHQL_VALIDATION_FAILED"], (variables, codes)
    assert await total_count(api) == 0


@pytest.fixture
async def limited(settings_factory: Any, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    settings = settings_factory(max_query_depth=3, max_aliases=2, max_tokens=40)
    async with start_server(settings, fake_redis_server, with_worker=False) as live:
        yield live


async def test_document_limits_come_from_settings(limited: LiveServer) -> None:
    assert await error_codes(limited, "{ jobs { edges { node { id } } } }") == []
    deep = "{ jobs { edges { node { outputs { id } } } } }"
    assert await error_codes(limited, deep) == ["QUERY_TOO_DEEP"]

    assert await error_codes(limited, "{ a: jobs { totalCount } b: jobs { totalCount } }") == []
    aliases = "{ a: jobs { totalCount } b: jobs { totalCount } c: jobs { totalCount } }"
    assert await error_codes(limited, aliases) == ["TOO_MANY_ALIASES"]

    fields = " ".join(["totalCount"] * 40)
    assert await error_codes(limited, f"{{ jobs {{ {fields} }} }}") == ["TOO_MANY_TOKENS"]


async def test_default_limits_reject_huge_documents(api: LiveServer) -> None:
    fields = " ".join(["totalCount"] * 2000)
    assert await error_codes(api, f"{{ jobs {{ {fields} }} }}") == ["TOO_MANY_TOKENS"]
    aliases = " ".join(f"a{i}: jobs {{ totalCount }}" for i in range(16))
    assert await error_codes(api, f"{{ {aliases} }}") == ["TOO_MANY_ALIASES"]


async def test_unknown_and_malformed_ids_read_as_null(api: LiveServer) -> None:
    ids = [
        "nope",
        "",
        "job_zz",
        "job_" + "0" * 32,  # well formed, unknown
        "job_" + "z" * 32,
        "med_" + "0" * 32,  # an asset id is not a job id
        "job_" + "0" * 31 + "/",
    ]
    for job_id in ids:
        body = await api.graphql("query($id: ID!) { job(id: $id) { id } }", {"id": job_id})
        assert body == {"data": {"job": None}}, job_id
