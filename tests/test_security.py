"""API keys, per-owner isolation, rate limits, GraphQL limits and origins, through a running
api with auth required."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gql_media.adapters import redis as redis_adapter
from gql_media.db.models import ApiKeyRow
from gql_media.runtime import open_runtime
from gql_media.services import auth
from gql_media.settings import Settings
from tests.media import jpeg
from tests.support import JOB_FIELDS, LiveServer, graphql_ws, start_server

GENERATE = """mutation($input: GenerateImageInput!) { generateImage(input: $input) {
  job { id status outputs { url } } userErrors { field code message retryAfter } } }"""
FOLLOW = f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"


@dataclass
class Keys:
    alice: str
    bob: str
    admin: str
    revoked: str


@dataclass
class Secured:
    live: LiveServer
    keys: Keys
    settings: Settings

    def client(self, key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.live.url, headers=headers, timeout=10)

    async def graphql(
        self, key: str | None, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        async with self.client(key) as http:
            response = await http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def generate(self, key: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("prompt", "a quiet harbour")
        fields.setdefault("width", 64)
        fields.setdefault("height", 64)
        body = await self.graphql(key, GENERATE, {"input": fields})
        payload: dict[str, Any] = body["data"]["generateImage"]
        return payload


@asynccontextmanager
async def secured(settings_factory: Any, **overrides: Any) -> AsyncIterator[Secured]:
    values: dict[str, Any] = {
        "auth": "required",
        "secret_key": "test-secret",
        "api_key_cache_seconds": 0,
        "rate_limit_per_minute": 0,
    }
    values.update(overrides)
    settings = settings_factory(**values)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    keys = await make_keys(settings, fake)
    async with start_server(settings, fake, with_worker=True) as live:
        yield Secured(live, keys, settings)


async def make_keys(settings: Settings, fake: Any) -> Keys:
    """alice, bob, an admin key, and a key that is revoked at once."""
    async with open_runtime(settings, fake) as runtime:
        made = {}
        for name in ("alice", "bob", "admin", "revoked"):
            _, made[name] = await auth.create_key(runtime.deps, name, admin=name == "admin")
        assert await auth.revoke_key(runtime.deps, "revoked")
    return Keys(**made)


@pytest.fixture
async def api(settings_factory: Any) -> AsyncIterator[Secured]:
    async with secured(settings_factory) as running:
        yield running


async def follow(api: Secured, key: str, job_id: str) -> list[dict[str, Any]]:
    async with graphql_ws(api.live.ws_url, payload={"authorization": f"Bearer {key}"}) as ws:
        op = await ws.subscribe(FOLLOW, {"id": job_id})
        return [p["data"]["jobUpdated"] for p in await ws.collect(op)]


async def test_other_owners_nodes_read_as_null(api: Secured) -> None:
    """node and nodes see what job(id:) and media(id:) see: another owner's job, output
    or upload is null, like an unknown id."""
    job = (await api.generate(api.keys.alice))["job"]
    done = (await follow(api, api.keys.alice, job["id"]))[-1]
    async with api.client(api.keys.alice) as http:
        uploaded = await http.post(
            "/uploads", content=jpeg(32, 32), headers={"Content-Type": "image/jpeg"}
        )
    ids = [job["id"], done["outputs"][0]["id"], uploaded.json()["media"]["id"]]
    query = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    single = "query($id: ID!) { node(id: $id) { id } }"
    for key, seen in ((api.keys.alice, ids), (api.keys.admin, ids), (api.keys.bob, [None] * 3)):
        body = await api.graphql(key, query, {"ids": ids})
        assert [node and node["id"] for node in body["data"]["nodes"]] == seen
        for node_id, expected in zip(ids, seen, strict=True):
            one = await api.graphql(key, single, {"id": node_id})
            assert one["data"]["node"] == (expected and {"id": expected})


async def test_keys_are_stored_hashed_and_listed(api: Secured, settings_factory: Any) -> None:
    async with open_runtime(api.settings) as runtime:
        async with runtime.deps.sessions() as session:
            rows = list((await session.execute(select(ApiKeyRow))).scalars())
        listed = {k.name: k for k in await auth.list_keys(runtime.deps)}
    stored = {row.key_hash for row in rows} | {row.prefix for row in rows}
    assert api.keys.alice not in stored and auth.hash_key(api.keys.alice) in stored
    assert listed["admin"].admin and not listed["alice"].admin
    assert listed["revoked"].revoked and not listed["bob"].revoked
    assert api.keys.alice.startswith(listed["alice"].prefix)


async def test_http_needs_a_valid_key(api: Secured) -> None:
    for key in (None, "gqlm_wrong", api.keys.revoked):
        async with api.client(key) as http:
            response = await http.post("/graphql", json={"query": "{ jobs { totalCount } }"})
        assert response.status_code == 401, key
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    ok = await api.graphql(api.keys.alice, "{ jobs { totalCount } }")
    assert ok["data"]["jobs"]["totalCount"] == 0
    async with api.client(None) as http:  # GraphiQL's page itself opens without a key
        page = await http.get("/graphql", headers={"Accept": "text/html"})
        upload = await http.post(
            "/uploads", content=jpeg(32, 32), headers={"Content-Type": "image/jpeg"}
        )
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    assert upload.status_code == 401


async def test_websockets_need_a_valid_key_in_connection_init(api: Secured) -> None:
    # a null payload (the protocol allows it) carries no key, like an empty one
    for payload in (None, {}, {"authorization": "Bearer gqlm_wrong"}, {"apiKey": api.keys.revoked}):
        async with connect(api.live.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    async with graphql_ws(api.live.ws_url, payload={"apiKey": api.keys.bob}) as ws:
        op = await ws.subscribe("subscription { jobEvents { id status } }")
        job_id = (await api.generate(api.keys.bob))["job"]["id"]
        payload = await ws.next_payload(op)
    assert payload is not None and payload["data"]["jobEvents"]["id"] == job_id


async def test_other_owners_jobs_behave_like_unknown_ids(api: Secured) -> None:
    job = (await api.generate(api.keys.alice))["job"]
    final = (await follow(api, api.keys.alice, job["id"]))[-1]
    assert final["status"] == "SUCCEEDED"
    unknown = "job_" + "0" * 32
    for job_id in (job["id"], unknown):
        seen = await api.graphql(
            api.keys.bob, "query($id: ID!) { job(id: $id) { id } }", {"id": job_id}
        )
        assert seen["data"]["job"] is None
        for action in ("cancelJob", "retryJob"):
            body = await api.graphql(
                api.keys.bob,
                f"mutation($id: ID!) {{ {action}(id: $id) "
                "{ job { id } userErrors { code } } }",
                {"id": job_id},
            )
            assert body["data"][action] == {"job": None, "userErrors": [{"code": "NOT_FOUND"}]}
        async with graphql_ws(api.live.ws_url, payload={"apiKey": api.keys.bob}) as ws:
            op = await ws.subscribe(FOLLOW, {"id": job_id})
            message = await ws.receive()
        assert (
            message["id"] == op and message["type"] == "next" and message["payload"]["data"] is None
        )
        assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    listed = await api.graphql(api.keys.bob, "{ jobs { totalCount } }")
    assert listed["data"]["jobs"]["totalCount"] == 0
    everything = await api.graphql(api.keys.admin, "{ jobs { totalCount edges { node { id } } } }")
    assert everything["data"]["jobs"]["totalCount"] == 1
    # idempotency keys are per owner: bob's same key makes bob's own job
    first = await api.generate(api.keys.alice, idempotencyKey="k1")
    second = await api.generate(api.keys.bob, idempotencyKey="k1")
    assert first["job"]["id"] != second["job"]["id"] and second["userErrors"] == []


async def test_job_events_carry_only_the_owners_jobs(api: Secured) -> None:
    async with graphql_ws(api.live.ws_url, payload={"apiKey": api.keys.bob}) as bob_ws:
        bob_op = await bob_ws.subscribe("subscription { jobEvents { id status } }")
        async with graphql_ws(api.live.ws_url, payload={"apiKey": api.keys.admin}) as admin_ws:
            admin_op = await admin_ws.subscribe("subscription { jobEvents { id status } }")
            alice_job = (await api.generate(api.keys.alice))["job"]["id"]
            bob_job = (await api.generate(api.keys.bob))["job"]["id"]
            seen_by_admin: set[str] = set()
            while bob_job not in seen_by_admin or alice_job not in seen_by_admin:
                payload = await admin_ws.next_payload(admin_op)
                assert payload is not None
                seen_by_admin.add(payload["data"]["jobEvents"]["id"])
        seen_by_bob: list[str] = []
        while True:  # bob's own job's events, up to its end; alice's never appear
            payload = await bob_ws.next_payload(bob_op)
            assert payload is not None
            event = payload["data"]["jobEvents"]
            seen_by_bob.append(event["id"])
            if event["id"] == bob_job and event["status"] == "SUCCEEDED":
                break
    assert set(seen_by_bob) == {bob_job}


async def test_media_urls_are_signed_and_uploads_owned(api: Secured) -> None:
    job = (await api.generate(api.keys.alice))["job"]
    final = (await follow(api, api.keys.alice, job["id"]))[-1]
    url = final["outputs"][0]["url"]
    assert "sig=" in url and "exp=" in url
    async with httpx.AsyncClient(timeout=10) as anyone:
        assert (await anyone.get(url)).status_code == 200  # the signed URL works in an <img>
        bare = url.split("?")[0]
        assert (await anyone.get(bare)).status_code == 403
        assert (await anyone.get(url[:-2] + "xx")).status_code == 403
        expired = url.split("exp=")[0] + f"exp={int(time.time()) - 1}&sig=" + url.split("sig=")[1]
        assert (await anyone.get(expired)).status_code == 403

    async with api.client(api.keys.alice) as http:
        uploaded = await http.post(
            "/uploads", content=jpeg(64, 48), headers={"Content-Type": "image/jpeg"}
        )
    media = uploaded.json()["media"]
    query = "query($id: ID!) { media(id: $id) { id } }"
    assert (await api.graphql(api.keys.alice, query, {"id": media["id"]}))["data"]["media"]
    assert (await api.graphql(api.keys.bob, query, {"id": media["id"]}))["data"]["media"] is None
    process = """mutation($input: ProcessImageInput!) { processImage(input: $input) {
      job { id } userErrors { field code } } }"""
    variables = {"input": {"mediaId": media["id"], "variants": [{"name": "t"}]}}
    refused = await api.graphql(api.keys.bob, process, variables)
    assert refused["data"]["processImage"]["userErrors"] == [
        {"field": "mediaId", "code": "NOT_FOUND"}
    ]
    allowed = await api.graphql(api.keys.alice, process, variables)
    assert allowed["data"]["processImage"]["userErrors"] == []


async def test_rate_limit_per_key_with_retry_time(settings_factory: Any) -> None:
    async with secured(settings_factory, rate_limit_per_minute=6, rate_limit_burst=2) as api:
        results = [await api.generate(api.keys.alice) for _ in range(3)]
        assert [r["userErrors"] for r in results[:2]] == [[], []]
        [limited] = results[2]["userErrors"]
        assert limited["code"] == "RATE_LIMITED" and results[2]["job"] is None
        assert 0 < limited["retryAfter"] <= 10
        assert (await api.generate(api.keys.bob))["userErrors"] == []  # per key
        async with api.client(api.keys.alice) as http:
            upload = await http.post(
                "/uploads", content=jpeg(32, 32), headers={"Content-Type": "image/jpeg"}
            )
        assert upload.status_code == 429 and int(upload.headers["retry-after"]) >= 1
        assert upload.json()["userErrors"][0]["code"] == "RATE_LIMITED"


async def test_cap_on_unfinished_jobs(settings_factory: Any) -> None:
    async with secured(settings_factory, max_active_jobs=1) as api:
        slow = await api.generate(api.keys.alice, provider="mock", extra={"delayMs": 60_000})
        assert slow["userErrors"] == []
        over = await api.generate(api.keys.alice, provider="mock")
        assert [e["code"] for e in over["userErrors"]] == ["TOO_MANY_ACTIVE_JOBS"]
        assert over["userErrors"][0]["retryAfter"] > 0
        assert (await api.generate(api.keys.bob, provider="mock"))["userErrors"] == []
        cancel = "mutation($id: ID!) { cancelJob(id: $id) { userErrors { code } } }"
        await api.graphql(api.keys.alice, cancel, {"id": slow["job"]["id"]})
        assert (await api.generate(api.keys.alice, provider="mock"))["userErrors"] == []


async def test_graphql_limits(settings_factory: Any) -> None:
    async with secured(
        settings_factory,
        introspection=False,
        max_subscriptions_per_connection=2,
        max_query_cost=2000,
    ) as api:
        fields = " ".join(
            f"a{i}: jobs(first: 100) {{ edges {{ node {{ id status prompt progress }} }} }}"
            for i in range(10)
        )
        costly = await api.graphql(api.keys.alice, f"{{ {fields} }}")
        assert costly["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
        one_page = await api.graphql(api.keys.alice, f"{{ {fields.split(' a1:')[0]} }}")
        assert "errors" not in one_page, one_page
        closed = await api.graphql(api.keys.alice, "{ __schema { types { name } } }")
        assert closed["errors"][0]["extensions"]["code"] == "INTROSPECTION_DISABLED"
        typename = await api.graphql(api.keys.alice, "{ __typename }")
        assert typename["data"] == {"__typename": "Query"}
        async with api.client(api.keys.alice) as http:
            batch = await http.post("/graphql", json=[{"query": "{ __typename }"}] * 2)
        assert batch.status_code == 400
        async with graphql_ws(api.live.ws_url, payload={"apiKey": api.keys.alice}) as ws:
            for _ in range(2):
                await ws.subscribe("subscription { jobEvents { id } }")
            third = await ws.subscribe("subscription { jobEvents { id } }")
            message = await ws.receive()
        assert message["id"] == third and message["type"] == "error"


async def test_connection_init_must_come_in_time(settings_factory: Any) -> None:
    async with secured(settings_factory, connection_init_timeout=0.2) as api:
        async with connect(api.live.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()  # no connection_init sent: the server gives up
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408


async def test_origins(settings_factory: Any) -> None:
    async with secured(settings_factory, cors_origins=["https://app.example"]) as api:
        hostile = {"Origin": "https://evil.example"}
        async with api.client(api.keys.alice) as http:
            refused = await http.post("/graphql", json={"query": "{ __typename }"}, headers=hostile)
            allowed = await http.post(
                "/graphql",
                json={"query": "{ __typename }"},
                headers={"Origin": "https://app.example"},
            )
            preflight = await http.options(
                "/graphql",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN_ORIGIN"
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert preflight.status_code == 200
        with pytest.raises(Exception, match="403|4403"):
            async with connect(
                api.live.ws_url,
                subprotocols=["graphql-transport-ws"],
                additional_headers=hostile,  # type: ignore[list-item]
            ) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
                await ws.recv()


def test_production_refuses_unsafe_settings(tmp_path: Any) -> None:
    with pytest.raises(ValidationError, match="GQL_MEDIA_AUTH=required"):
        Settings(env="production", data_dir=tmp_path)
    with pytest.raises(ValidationError, match="GQL_MEDIA_SECRET_KEY"):
        Settings(env="production", auth="required", data_dir=tmp_path)
    safe = Settings(env="production", auth="required", secret_key="s", data_dir=tmp_path)
    assert not safe.introspection_enabled
