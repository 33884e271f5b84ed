"""No document runs without a principal that auth chose: every HTTP and WebSocket way of
sending one is tried without a key against a running api in production mode, and what
comes back is a refusal (or GraphiQL's bare page), never a result."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gql_media import domain
from gql_media.api.schema import build_schema
from gql_media.domain import OPEN, SYSTEM, Principal
from gql_media.services import auth, catchup, jobs, limits, media, new_jobs, processing, webhooks
from tests.test_security import Secured, secured

SECRET_PROMPT = "the owner's secret prompt"
# a document that shows whether it ran: its data, or a field that needs no principal
PROBES = (
    "{ jobs { edges { node { prompt outputs { url } } } } }",
    "{ __typename }",
    "{ providers { name } }",
)


@pytest.fixture
async def production(settings_factory: Any) -> AsyncIterator[Secured]:
    async with secured(settings_factory, env="production", secret_key="s" * 32) as api:
        made = await api.generate(api.keys.alice, prompt=SECRET_PROMPT)
        assert made["userErrors"] == [], made
        yield api


def assert_refused(response: Any, what: str) -> None:
    """A 401 with its code, or GraphiQL's page: never a document's result."""
    assert SECRET_PROMPT not in response.text, what
    assert '"data"' not in response.text and "__typename" not in response.text, what
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("text/html"), what
        assert "graphiql" in response.text.lower(), what
        return
    assert response.status_code == 401, (what, response.status_code, response.text)
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", what


def query_names() -> list[str]:
    """Spellings of the ``query`` parameter: the plain one and percent-encoded ones, which
    a check of raw bytes misses but a parser decodes."""
    return ["query", "%71uery", "q%75ery", "%71%75%65%72%79", "quer%79"]


async def test_no_http_request_runs_a_document_without_a_key(production: Secured) -> None:
    accepts = ("text/html", "text/html,application/json", "*/*", "application/json", "")
    async with production.client(None) as http:
        for probe in PROBES:
            for name in query_names():
                for accept in accepts:
                    target = f"/graphql?{name}={quote(probe)}"
                    response = await http.get(target, headers={"Accept": accept})
                    assert_refused(response, f"GET {target} Accept: {accept}")
            for accept in accepts:
                response = await http.post(
                    "/graphql", json={"query": probe}, headers={"Accept": accept}
                )
                assert_refused(response, f"POST {probe} Accept: {accept}")
            response = await http.post(
                "/graphql",
                files={
                    "operations": (None, json.dumps({"query": probe, "variables": {}})),
                    "map": (None, "{}"),
                },
                headers={"GraphQL-Require-Preflight": "1"},
            )
            assert_refused(response, f"multipart {probe}")
        # the page itself opens, and so does every asset it loads
        page = await http.get("/graphql", headers={"Accept": "text/html"})
        assert_refused(page, "GraphiQL's page")
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="(/graphiql-assets/[^"]+)"', page.text)
        assert len(assets) == 7, assets
        for path in assets:
            asset = await http.get(path)
            assert asset.status_code == 200, path
    owner = await production.graphql(production.keys.alice, PROBES[0])
    assert SECRET_PROMPT in json.dumps(owner)  # the probe does show the job to its owner


async def test_media_urls_with_malformed_expiries_are_refused(production: Secured) -> None:
    """``exp`` is ASCII digits only: "²" passes ``str.isdigit`` but not ``int``, and Python
    refuses to turn more than 4300 digits into an int."""
    made = await production.generate(production.keys.alice)
    job_id = made["job"]["id"]
    query = "query($id: ID!) { job(id: $id) { status outputs { url } } }"
    while True:  # the job's output, once it is made (the test's timeout bounds the wait)
        job = (await production.graphql(production.keys.alice, query, {"id": job_id}))["data"]
        if job["job"]["status"] == "SUCCEEDED":
            break
    url = httpx.URL(job["job"]["outputs"][0]["url"])
    async with production.client(None) as http:
        assert (await http.get(str(url))).status_code == 200
        for expiry in ("²", "١٢٣", "9" * 5000, "-1", "1e9", "", " 1"):
            forged = url.copy_merge_params({"exp": expiry})
            response = await http.get(str(forged))
            assert response.status_code == 403, (expiry[:5], response.status_code)
        # /uploads checks the Origin as /graphql does
        foreign = await http.post(
            "/uploads",
            content=b"x",
            headers={
                "Origin": "https://evil.example",
                "Content-Type": "image/jpeg",
                "Authorization": f"Bearer {production.keys.alice}",
            },
        )
        assert foreign.status_code == 403
        assert foreign.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN_ORIGIN"


async def test_no_websocket_runs_a_document_without_a_key(production: Secured) -> None:
    url = production.live.ws_url
    subscribe = {"query": "subscription { jobEvents { id prompt } }"}
    # graphql-transport-ws: a subscribe before connection_init, and inits with no or bad keys
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    for payload in (None, {}, {"authorization": "Bearer gqlm_wrong"}, {"apiKey": ""}):
        async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    message = json.loads(await ws.recv())
                    assert message["type"] not in ("next", "connection_ack"), message
        assert closed.value.rcvd is not None and closed.value.rcvd.code in (4400, 4403), payload
    # the legacy graphql-ws protocol: a start before connection_init, and a bad key
    async with connect(url, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"id": "1", "type": "start", "payload": subscribe}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    async with connect(url, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": "nope"}}))
        await ws.send(json.dumps({"id": "1", "type": "start", "payload": subscribe}))
        with pytest.raises(ConnectionClosed):
            while True:
                message = json.loads(await ws.recv())
                assert message["type"] in ("connection_error", "ka"), message


async def test_a_document_that_reaches_the_schema_without_a_principal_runs_nothing(
    settings_factory: Any,
) -> None:
    """The last line: whatever transport skipped auth, the schema runs nothing for a
    context that has no principal."""

    class Bare:
        caller = None

    schema = build_schema(settings_factory(auth="required", secret_key="s"))
    for probe in PROBES:
        result = await schema.execute(probe, context_value=Bare())
        assert result.data is None, probe
        assert result.errors and result.errors[0].extensions == {"code": "UNAUTHENTICATED"}


def test_authority_is_always_passed_explicitly() -> None:
    """No service function has a default principal; OPEN is what auth gives when it is off,
    and is never a default anywhere."""
    checked = 0
    for module in (jobs, new_jobs, media, processing, limits, catchup, webhooks, auth):
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__:
                continue
            for parameter in inspect.signature(function).parameters.values():
                assert not isinstance(parameter.default, Principal), (module, name)
                if parameter.name == "principal":
                    assert parameter.default is inspect.Parameter.empty, (module, name)
                    checked += 1
    assert checked >= 10
    assert not hasattr(domain, "ANONYMOUS")
    assert OPEN != SYSTEM and OPEN.key_id is None and SYSTEM.key_id is None


async def test_the_open_principal_exists_only_with_auth_off(settings_factory: Any) -> None:
    from gql_media.runtime import open_runtime

    for required, expected in ((False, OPEN), (True, None)):
        settings = settings_factory(auth="required" if required else "off", secret_key="s")
        async with open_runtime(settings) as runtime:
            authenticator = auth.Authenticator(runtime.deps)
            for key in (None, "", "gqlm_wrong"):
                assert await authenticator.principal(key) is expected
