"""The GraphQL over HTTP spec against a running api: graphql-http's audit suite under
Node, and the media types, statuses and methods it asks for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strawberry.http import streaming
from strawberry.http.base import BaseView
from strawberry.subscriptions import MULTIPART_SUBSCRIPTION_PROTOCOL

from gql_media.adapters import redis as redis_adapter
from gql_media.api.app import GraphQLView
from gql_media.api.negotiation import prefers_graphql_response
from gql_media.api.streams import TRANSPORTS, is_stream
from gql_media.runtime import open_runtime
from gql_media.services import auth
from tests.support import LiveServer, start_server
from tests.test_clients import CLIENTS, NODE, needs_node

needs_graphql_http = pytest.mark.skipif(
    not (CLIENTS / "node_modules" / "graphql-http").exists(),
    reason="tests/clients/node_modules has no graphql-http: run `npm ci` in tests/clients",
)
GRAPHQL_RESPONSE = "application/graphql-response+json"
PREFERS = {"Accept": f"{GRAPHQL_RESPONSE}, application/json;q=0.9"}


async def run_audit(url: str, key: str | None = None) -> tuple[int, str, str]:
    assert NODE is not None
    args = ["audit.mjs", "--url", f"{url}/graphql", *(["--key", key] if key else [])]
    process = await asyncio.create_subprocess_exec(
        NODE,
        *args,
        cwd=CLIENTS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@needs_node
@needs_graphql_http
async def test_graphql_http_audits_pass_without_warnings(server: LiveServer) -> None:
    code, findings, summary = await run_audit(server.url)
    # every audit that is not "ok" is printed, warnings and notices too
    assert (code, findings) == (0, ""), findings + summary
    assert " 0 errors" in summary, summary


@needs_node
@needs_graphql_http
async def test_graphql_http_audits_pass_with_a_key(settings_factory: Any) -> None:
    settings = settings_factory(auth="required", secret_key="test-secret")
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with open_runtime(settings, fake) as runtime:
        _, key = await auth.create_key(runtime.deps, "audit")
    async with start_server(settings, fake, with_worker=False) as live:
        code, findings, summary = await run_audit(live.url, key)
    assert (code, findings) == (0, ""), findings + summary


async def test_graphql_response_json_when_preferred(server: LiveServer) -> None:
    ok = await server.http.post("/graphql", json={"query": "{ __typename }"}, headers=PREFERS)
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert ok.json() == {"data": {"__typename": "Query"}}
    plain = await server.http.post("/graphql", json={"query": "{ __typename }"})
    assert plain.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": "{ jobs { totalCount "}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ nope }"}, "GRAPHQL_VALIDATION_FAILED"),
        (
            {"query": "query($n: Int) { jobs(first: $n) { totalCount } }", "variables": {"n": "x"}},
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ],
)
async def test_request_errors_are_4xx_without_data_when_preferred(
    server: LiveServer, body: dict[str, Any], code: str
) -> None:
    response = await server.http.post("/graphql", json=body, headers=PREFERS)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    payload = response.json()
    assert "data" not in payload and payload["errors"][0]["extensions"]["code"] == code
    # application/json, the default, answers as before: 200, with data null
    legacy = await server.http.post("/graphql", json=body)
    assert legacy.status_code == 200 and legacy.headers["content-type"] == "application/json"
    assert legacy.json()["data"] is None
    assert legacy.json()["errors"][0]["extensions"]["code"] == code


async def test_field_errors_keep_200_and_data(server: LiveServer) -> None:
    query = '{ job(id: "job_00000000000000000000000000000000") { id } }'
    response = await server.http.post("/graphql", json={"query": query}, headers=PREFERS)
    assert response.status_code == 200
    assert "data" in response.json()


async def test_a_mutation_over_get_is_405(server: LiveServer) -> None:
    mutation = 'mutation { cancelJob(id: "job_x") { userErrors { code } } }'
    for headers in ({}, PREFERS):
        response = await server.http.get("/graphql", params={"query": mutation}, headers=headers)
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize(
    ("accept", "prefers"),
    [
        (GRAPHQL_RESPONSE, True),
        (f"{GRAPHQL_RESPONSE}, application/json", True),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.9", False),
        (f"{GRAPHQL_RESPONSE};q=0.5, */*;q=0.1", True),
        (f"{GRAPHQL_RESPONSE};q=0", False),
        (f"{GRAPHQL_RESPONSE};q=nope", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_which_accept_prefers_graphql_response(accept: str, prefers: bool) -> None:
    assert prefers_graphql_response(accept) is prefers


@pytest.mark.parametrize(
    ("accept", "streams"),
    [
        ("text/event-stream", True),
        ("application/json;q=0.9, Text/Event-Stream", True),
        # Apollo Client's HttpLink, for a subscription
        ('multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json;q=0.9', True),
        ('multipart/mixed; subscriptionSpec="1.0"', True),
        # urql's fetchExchange: a subscription, then any other operation, which takes JSON
        ("text/event-stream, multipart/mixed", True),
        (
            "application/graphql-response+json, application/graphql+json, application/json, "
            "text/event-stream, multipart/mixed",
            False,
        ),
        # Apollo Client's HttpLink for a subscription: JSON as welcome, but only a
        # subscription asks for subscriptionSpec
        (
            "multipart/mixed;boundary=graphql;subscriptionSpec=1.0,"
            "application/graphql-response+json,application/json;q=0.9",
            True,
        ),
        ("multipart/mixed;subscriptionSpec=1.0, */*", True),
        # server-sent events no more welcome than JSON: one JSON answer
        ("application/json, text/event-stream", False),
        ("text/event-stream, */*", False),
        ("multipart/mixed", False),  # incremental delivery, which this api does not stream
        ("application/json", False),
        ("*/*", False),
    ],
)
def test_which_accept_asks_for_a_stream(accept: str, streams: bool) -> None:
    assert is_stream(accept) is streams


# pieces of Accept headers, odd spellings of the stream types among them
ACCEPT_PARTS = st.sampled_from(
    [
        "multipart/mixed",
        "Multipart/MIXED",
        "multipart/ mixed",
        "text/event-stream",
        "TEXT/Event-Stream",
        "application/json",
        "*/*",
        ";subscriptionSpec=1.0",
        ';subscriptionSpec="1.0"',
        ";boundary=graphql",
        ";boundary=-",
        ";q=0.5",
        ",",
        " ",
        "(x)",
        '"',
        "\\",
    ]
)


@settings(derandomize=True, database=None, max_examples=1000, deadline=None)
@given(accept=st.lists(ACCEPT_PARTS, max_size=8).map("".join))
@example(accept="multipart/mixed ;subscriptionSpec=1.0")
@example(accept="application/json, Multipart/Mixed;subscriptionSpec=1.0")
@example(accept="text/event-stream ;q=1")
@example(accept="application/json, TEXT/EVENT-STREAM")
def test_the_views_stream_transports_answer_as_strawberrys(accept: str) -> None:
    """The view's transports parse an Accept header only when it names their media type;
    they answer every header as strawberry's own transports do."""
    assert GraphQLView.stream_transport_classes_by_protocol is TRANSPORTS
    theirs = BaseView.stream_transport_classes_by_protocol
    assert set(theirs) == set(TRANSPORTS)
    for protocol, transport in TRANSPORTS.items():
        assert transport().accepts(accept) is theirs[protocol]().accepts(accept), protocol


def test_a_json_requests_accept_header_is_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    parse_content_type = streaming.parse_content_type

    def parse(value: str) -> tuple[str, dict[str, str]]:
        parsed.append(value)
        return parse_content_type(value)

    monkeypatch.setattr(streaming, "parse_content_type", parse)
    for accept in ("application/json", "application/graphql-response+json, */*;q=0.5", ""):
        assert not any(transport().accepts(accept) for transport in TRANSPORTS.values())
    assert parsed == []
    multipart = "multipart/mixed;subscriptionSpec=1.0,application/json"
    assert TRANSPORTS[MULTIPART_SUBSCRIPTION_PROTOCOL]().accepts(multipart)
    assert parsed == [multipart]
