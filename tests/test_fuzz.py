"""Fuzzing the running api: operations generated from schema.graphql (valid ones, and
invalid ones), and arbitrary request bodies. No response may be a 5xx, carry a traceback or
an internal message, or have an error without a code.

Deterministic: hypothesis runs derandomized with a fixed number of examples.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

from gql_media.adapters import redis as redis_adapter
from gql_media.api.app import create_app
from tests.support import free_port

SCHEMA = (Path(__file__).resolve().parent.parent / "schema.graphql").read_text()
SCALARS = {
    "DateTime": st.sampled_from(
        ["2026-01-01T00:00:00Z", "2026-13-45T99:00:00", "", "yesterday"]
    ).map(nodes.String),
    "JSON": st.sampled_from(['{"a": 1}', "[]", "null", "{"]).map(nodes.String),
    "Upload": st.just(nodes.Null),
}
FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
LEAKS = ("Traceback", 'File "', "sqlalchemy", "asyncpg", "Exception", "gql_media/")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The real app on uvicorn in a thread, embedded backend, no worker: a sync client."""
    from gql_media.db.migrate import upgrade
    from gql_media.settings import Settings

    data = tmp_path_factory.mktemp("fuzz")
    config = Settings(data_dir=data, rate_limit_per_minute=0)
    upgrade(config.effective_database_url)
    app = create_app(config, fake_redis_server=redis_adapter.new_fake_server())
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while not started.wait(0.01):  # uvicorn offers no start-up event to wait on
        if server.started:
            started.set()
        elif not thread.is_alive():
            raise RuntimeError("server exited during start-up")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=30)


def check(response: httpx.Response, sent: str = "") -> None:
    """``sent``: the request's own text, which error messages may quote back (a name such as
    "Exception" written in the operation is no leak)."""
    assert response.status_code < 500, response.text
    text = response.text
    for leak in LEAKS:
        assert leak not in text or leak in sent, text
    if response.headers.get("content-type", "").startswith("application/json"):
        body: Any = response.json()
        for error in body.get("errors") or [] if isinstance(body, dict) else []:
            code = (error.get("extensions") or {}).get("code")
            assert code and code != "INTERNAL_ERROR", error


@FUZZ
@given(operation=from_schema(SCHEMA, custom_scalars=SCALARS))
def test_valid_operations(api: httpx.Client, operation: str) -> None:
    if operation.lstrip().startswith("subscription"):
        return  # subscriptions over HTTP are refused with BAD_REQUEST; covered elsewhere
    check(api.post("/graphql", json={"query": operation}), operation)


@FUZZ
@given(operation=from_schema(SCHEMA, custom_scalars=SCALARS, mode=Mode.NEGATIVE))
def test_invalid_operations(api: httpx.Client, operation: str) -> None:
    check(api.post("/graphql", json={"query": operation}), operation)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=200),
        JSON_VALUES.map(json.dumps).map(str.encode),
        st.fixed_dictionaries(
            {"query": st.text(max_size=100)},
            optional={"variables": JSON_VALUES, "operationName": JSON_VALUES},
        )
        .map(json.dumps)
        .map(str.encode),
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/graphql-response+json",
            "text/plain",
            "multipart/form-data; boundary=x",
        ]
    ),
)
def test_arbitrary_bodies(api: httpx.Client, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type, "GraphQL-Require-Preflight": "1"}
    check(api.post("/graphql", content=body, headers=headers))
    check(
        api.post(
            "/uploads?filename=x",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
    )
