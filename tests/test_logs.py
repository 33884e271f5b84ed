"""Logs tell the truth: a client's mistake is not logged as an error by the GraphQL layer,
while a fault of the server still is, with its traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gql_media.services import jobs as job_service
from tests.support import LiveServer, graphql_ws
from tests.test_documents import fragment_chain

UNKNOWN_JOB = "job_" + "0" * 32
FOLLOW = "subscription($id: ID!) { jobUpdated(id: $id) { id status } }"


def graphql_errors(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    """Records of the GraphQL layer (strawberry's execution logger and our api) at
    ``level`` or above."""
    return [
        r
        for r in caplog.records
        if r.levelno >= level and r.name.startswith(("strawberry", "gql_media.api"))
    ]


async def codes(live: LiveServer, query: str, variables: dict[str, Any] | None = None) -> list[str]:
    response = await live.http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code in (200, 400), response.text
    return [error["extensions"]["code"] for error in response.json().get("errors", [])]


async def test_a_clients_mistakes_are_not_logged_as_errors(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refused = {
        "unknown field": await codes(server, "{ nope }"),
        "bad argument": await codes(server, '{ jobs(first: "ten") { totalCount } }'),
        "missing variable": await codes(server, "query($id: ID!) { job(id: $id) { id } }"),
        "syntax": await codes(server, "{ jobs {"),
        "too costly": await codes(server, fragment_chain(21)),
    }
    assert refused == {
        "unknown field": ["GRAPHQL_VALIDATION_FAILED"],
        "bad argument": ["GRAPHQL_VALIDATION_FAILED"],
        "missing variable": ["GRAPHQL_VALIDATION_FAILED"],
        "syntax": ["GRAPHQL_PARSE_FAILED"],
        "too costly": ["QUERY_TOO_COSTLY"],
    }
    async with graphql_ws(server.ws_url) as ws:
        [payload] = await ws.collect(await ws.subscribe(FOLLOW, {"id": UNKNOWN_JOB}))
    assert [e["extensions"]["code"] for e in payload["errors"]] == ["NOT_FOUND"]
    cancel = await server.graphql(
        "mutation($id: ID!) { cancelJob(id: $id) { userErrors { code } } }", {"id": UNKNOWN_JOB}
    )
    assert cancel["data"]["cancelJob"]["userErrors"] == [{"code": "NOT_FOUND"}]

    malformed = await server.http.post(
        "/graphql", content=b'{"query": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    subscription_over_http = await codes(server, FOLLOW, {"id": UNKNOWN_JOB})
    assert subscription_over_http == ["BAD_REQUEST"]

    assert graphql_errors(caplog, logging.WARNING) == []
    # they are still there for whoever debugs a client
    debug = [r.getMessage() for r in caplog.records if r.name == "gql_media.api.errors"]
    assert any("Cannot query field 'nope'" in m for m in debug), debug
    assert any("no job" in m.lower() or "not found" in m.lower() for m in debug), debug


async def test_a_fault_of_the_server_is_logged_as_an_error_with_its_traceback(
    server: LiveServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(job_service, "get_job", broken)
    caplog.set_level(logging.DEBUG)
    assert await codes(server, "query($id: ID!) { job(id: $id) { id } }", {"id": UNKNOWN_JOB}) == [
        "INTERNAL_ERROR"
    ]
    [record] = graphql_errors(caplog, logging.ERROR)
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert "the disk caught fire" in caplog.text
