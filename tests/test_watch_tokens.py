"""Watch tokens, attacked through a running api with auth required: a token follows its one
job (job(id:), jobUpdated on both protocols, its media) and nothing else; forged, foreign,
expired, oversized and revoked tokens are refused with their codes."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from gql_media.domain import JobAction, decode_id
from gql_media.runtime import open_runtime
from gql_media.services import auth, watch_tokens
from gql_media.settings import Settings
from tests.media import jpeg
from tests.support import graphql_ws, start_server
from tests.test_security import Secured, secured

MINT = """mutation($id: ID!, $ttl: Int, $cancel: Boolean!) {
  createWatchToken(jobId: $id, ttlSeconds: $ttl, allowCancel: $cancel) {
    token expiresAt userErrors { field code message } } }"""
JOB = "query($id: ID!) { job(id: $id) { id status outputs { url } } }"
FOLLOW = "subscription($id: ID!) { jobUpdated(id: $id) { id status } }"
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { job { status } userErrors { code } } }"
SLOW = {"provider": "mock", "extra": {"delayMs": 600_000}}


@pytest.fixture
async def api(settings_factory: Any) -> AsyncIterator[Secured]:
    async with secured(settings_factory) as running:
        yield running


async def mint(
    api: Secured, key: str, job_id: str, ttl: int | None = None, cancel: bool = False
) -> dict[str, Any]:
    body = await api.graphql(key, MINT, {"id": job_id, "ttl": ttl, "cancel": cancel})
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["createWatchToken"]
    return payload


async def token_for(api: Secured, job_id: str, **options: Any) -> str:
    made = await mint(api, api.keys.alice, job_id, **options)
    assert made["userErrors"] == [] and made["token"], made
    return str(made["token"])


async def job_of(api: Secured, key: str, **fields: Any) -> str:
    made = await api.generate(key, **fields)
    assert made["userErrors"] == [], made
    return str(made["job"]["id"])


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def refusal(
    url: str, payload: dict[str, Any], protocol: str = "graphql-transport-ws"
) -> tuple[int, str, Any]:
    """The close code and reason a connection_init with ``payload`` gets, and the legacy
    protocol's connection_error payload."""
    async with connect(url, subprotocols=[Subprotocol(protocol)], max_size=None) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        error = None
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = json.loads(await ws.recv())
                assert message["type"] in ("connection_error", "ka"), message
                error = message.get("payload") or error
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason, error


async def test_a_token_follows_its_job_and_fetches_its_media(api: Secured) -> None:
    job_id = await job_of(api, api.keys.alice)
    made = await mint(api, api.keys.alice, job_id)
    token = made["token"]
    assert token.startswith("gqlw_") and len(token) == watch_tokens.TOKEN_LENGTH
    async with graphql_ws(api.live.ws_url, payload={"authorization": f"Bearer {token}"}) as ws:
        seen = await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id}))
    assert seen[-1]["data"]["jobUpdated"] == {"id": job_id, "status": "SUCCEEDED"}
    async with graphql_ws(api.live.ws_url, "graphql-ws", {"apiKey": token}) as legacy:
        start = {"query": FOLLOW, "variables": {"id": job_id}}
        await legacy.send({"id": "1", "type": "start", "payload": start})
        message = await legacy.receive()
    assert message["payload"]["data"]["jobUpdated"]["status"] == "SUCCEEDED", message
    body = await api.graphql(token, JOB, {"id": job_id})
    [output] = body["data"]["job"]["outputs"]
    async with api.client(None) as browser:  # no header: the URL is signed
        assert (await browser.get(output["url"])).status_code == 200


async def test_a_token_sees_no_other_job(api: Secured) -> None:
    mine, other, bobs = (
        await job_of(api, api.keys.alice),
        await job_of(api, api.keys.alice),
        await job_of(api, api.keys.bob),
    )
    token = await token_for(api, mine)
    for job_id in (other, bobs, "job_" + "0" * 32, "nonsense"):
        body = await api.graphql(token, JOB, {"id": job_id})
        assert body["data"] == {"job": None} and "errors" not in body, body
    async with graphql_ws(api.live.ws_url, payload={"apiKey": token}) as ws:
        for job_id in (other, bobs):
            [missing] = await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id}))
            assert missing["data"] is None and codes(missing) == ["NOT_FOUND"], missing


async def test_a_token_may_not_list_create_upload_or_mint(api: Secured) -> None:
    job_id = await job_of(api, api.keys.alice)
    token = await token_for(api, job_id)
    for query in ("{ jobs { totalCount } }", "{ queue { queued } }", "{ providers { name } }"):
        body = await api.graphql(token, query)
        assert codes(body) == ["FORBIDDEN"], body
    mutations = {
        "generateImage": 'mutation { generateImage(input: {prompt: "x"}) { userErrors { code } } }',
        "generateImages": 'mutation { generateImages(inputs: [{prompt: "x"}]) '
        "{ userErrors { code } } }",
        "retryJob": f'mutation {{ retryJob(id: "{job_id}") {{ userErrors {{ code }} }} }}',
        "cancelJob": f'mutation {{ cancelJob(id: "{job_id}") {{ userErrors {{ code }} }} }}',
        "createWatchToken": f'mutation {{ createWatchToken(jobId: "{job_id}") '
        "{ token userErrors { code } } }",
        "processVideo": 'mutation { processVideo(input: {mediaId: "med_x", operations: '
        "[{videoMetadata: true}]}) { userErrors { code } } }",
    }
    for name, mutation in mutations.items():
        body = await api.graphql(token, mutation)
        assert [e["code"] for e in body["data"][name]["userErrors"]] == ["FORBIDDEN"], body
    async with api.client(token) as browser:
        upload = await browser.post(
            "/uploads", content=b"\xff\xd8", headers={"content-type": "image/jpeg"}
        )
    assert upload.status_code == 403 and upload.json()["userErrors"][0]["code"] == "FORBIDDEN"
    async with api.client(api.keys.alice) as backend:
        stored = await backend.post(
            "/uploads", content=jpeg(64, 48), headers={"content-type": "image/jpeg"}
        )
    media = "query($id: ID!) { media(id: $id) { id } }"
    variables = {"id": stored.json()["media"]["id"]}
    assert (await api.graphql(token, media, variables))["data"] == {"media": None}
    assert (await api.graphql(api.keys.alice, media, variables))["data"]["media"]
    node = "query($id: ID!) { node(id: $id) { id } nodes(ids: [$id]) { id } }"
    assert (await api.graphql(token, node, {"id": job_id}))["data"] == {
        "node": None,
        "nodes": [None],
    }
    assert (await api.graphql(api.keys.alice, node, {"id": job_id}))["data"]["node"] == {
        "id": job_id
    }
    async with graphql_ws(api.live.ws_url, payload={"apiKey": token}) as ws:
        [events] = await ws.collect(await ws.subscribe("subscription { jobEvents { id } }"))
    assert codes(events) == ["FORBIDDEN"], events
    assert (await api.graphql(api.keys.alice, JOB, {"id": job_id}))["data"]["job"]  # key works


async def test_a_token_spends_nothing_of_its_keys_rate_or_sockets(settings_factory: Any) -> None:
    limits = {"rate_limit_per_minute": 1, "rate_limit_burst": 3, "max_sockets_per_key": 1}
    async with secured(settings_factory, **limits) as api:
        job_id = await job_of(api, api.keys.alice)
        token = await token_for(api, job_id)  # the key's bucket: one left
        refused = 'mutation { generateImage(input: {prompt: "x"}) { userErrors { code } } }'
        for _ in range(3):
            body = await api.graphql(token, refused)
            assert body["data"]["generateImage"]["userErrors"] == [{"code": "FORBIDDEN"}]
        assert (await api.generate(api.keys.alice))["userErrors"] == []
        # sockets: the key's own and a token's are counted apart, each pair capped
        async with (
            graphql_ws(api.live.ws_url, payload={"apiKey": api.keys.alice}),
            graphql_ws(api.live.ws_url, payload={"apiKey": token}),
        ):
            code, reason, _ = await refusal(
                api.live.ws_url, {"apiKey": token}, "graphql-transport-ws"
            )
            assert (code, reason) == (4429, "TOO_MANY_SOCKETS")


async def test_a_token_minted_to_cancel_cancels_its_job_only(api: Secured) -> None:
    job_id, other = await job_of(api, api.keys.alice, **SLOW), await job_of(api, api.keys.alice)
    token = await token_for(api, job_id, cancel=True)
    body = await api.graphql(token, CANCEL, {"id": other})
    assert body["data"]["cancelJob"] == {"job": None, "userErrors": [{"code": "NOT_FOUND"}]}
    body = await api.graphql(token, CANCEL, {"id": job_id})
    assert body["data"]["cancelJob"] == {"job": {"status": "CANCELED"}, "userErrors": []}


async def test_minting_needs_a_job_the_key_sees(api: Secured) -> None:
    alices = await job_of(api, api.keys.alice)
    for key, job_id in ((api.keys.bob, alices), (api.keys.alice, "job_nope")):
        made = await mint(api, key, job_id)
        assert made["token"] is None, made
        assert [(e["field"], e["code"]) for e in made["userErrors"]] == [("jobId", "NOT_FOUND")]
    # an admin key may mint for another owner's job; the token carries that owner
    token = (await mint(api, api.keys.admin, alices))["token"]
    assert (await api.graphql(token, JOB, {"id": alices}))["data"]["job"]["id"] == alices


async def test_the_ttl_is_bounded(api: Secured) -> None:
    job_id = await job_of(api, api.keys.alice)
    for ttl in (0, -5, api.settings.watch_token_max_ttl + 1):
        made = await mint(api, api.keys.alice, job_id, ttl=ttl)
        assert [(e["field"], e["code"]) for e in made["userErrors"]] == [
            ("ttlSeconds", "INVALID_ARGUMENT")
        ], made
    before = time.time()
    made = await mint(api, api.keys.alice, job_id)
    left = datetime.fromisoformat(made["expiresAt"]).timestamp() - before
    assert api.settings.watch_token_ttl - 2 <= left <= api.settings.watch_token_ttl + 2
    with pytest.raises(ValidationError):
        Settings(watch_token_ttl=100, watch_token_max_ttl=50)


def forged(token: str) -> list[str]:
    """The token with its signature, its job and its expiry changed."""
    raw = bytearray(base64.urlsafe_b64decode(token[5:]))
    variants = []
    for index in (len(raw) - 1, 1, 50):  # the HMAC, the job id, the expiry
        changed = bytearray(raw)
        changed[index] ^= 1
        variants.append("gqlw_" + base64.urlsafe_b64encode(changed).decode())
    return variants


async def test_forged_and_foreign_tokens_are_refused(api: Secured) -> None:
    job_id = await job_of(api, api.keys.alice)
    token = await token_for(api, job_id)
    claims = watch_tokens.decode(watch_tokens.signing_key(b"test-secret"), token)
    assert claims.actions == {JobAction.READ}
    elsewhere = watch_tokens.encode(watch_tokens.signing_key(b"another-secret"), claims)
    for bad in [*forged(token), elsewhere, token[:-1], token + "A", "gqlw_" + "!" * 120]:
        async with api.client(bad) as browser:
            response = await browser.post("/graphql", json={"query": "{ __typename }"})
        assert response.status_code == 401, response.text
        assert codes(response.json()) == ["WATCH_TOKEN_INVALID"], bad
    for protocol in ("graphql-transport-ws", "graphql-ws"):
        code, reason, error = await refusal(api.live.ws_url, {"apiKey": forged(token)[0]}, protocol)
        assert (code, reason) == (4403, "WATCH_TOKEN_INVALID")
        if protocol == "graphql-ws":
            assert error["extensions"]["code"] == "WATCH_TOKEN_INVALID", error


async def test_an_oversized_token_is_refused_with_a_code(api: Secured) -> None:
    huge = "gqlw_" + "A" * 50_000
    async with api.client(huge) as browser:
        response = await browser.post("/graphql", json={"query": "{ __typename }"})
    assert (response.status_code, codes(response.json())) == (401, ["WATCH_TOKEN_INVALID"])
    # refused by its length, before it is decoded
    assert "exactly" in response.json()["errors"][0]["message"]
    code, reason, _ = await refusal(
        api.live.ws_url, {"authorization": "Bearer gqlw_" + "A" * 500_000}, "graphql-transport-ws"
    )
    assert (code, reason) == (4403, "WATCH_TOKEN_INVALID")


async def test_an_expired_token_is_refused_and_its_socket_closed(settings_factory: Any) -> None:
    async with secured(settings_factory) as api:
        job_id = await job_of(api, api.keys.alice, **SLOW)
        token = await token_for(api, job_id)
        claims = watch_tokens.decode(watch_tokens.signing_key(b"test-secret"), token)
        stale = watch_tokens.encode(
            watch_tokens.signing_key(b"test-secret"),
            dataclasses.replace(claims, expires_at=int(time.time()) - 1),
        )
        async with api.client(stale) as browser:
            response = await browser.post(
                "/graphql", json={"query": JOB, "variables": {"id": job_id}}
            )
        assert (response.status_code, codes(response.json())) == (401, ["WATCH_TOKEN_EXPIRED"])
        code, reason, _ = await refusal(api.live.ws_url, {"apiKey": stale}, "graphql-transport-ws")
        assert (code, reason) == (4403, "WATCH_TOKEN_EXPIRED")
        # expiry is in whole seconds: 2 leaves at least one for the socket to be accepted
        short = await token_for(api, job_id, ttl=2)
        async with graphql_ws(api.live.ws_url, payload={"apiKey": short}) as ws:  # accepted
            with pytest.raises(ConnectionClosed) as closed:
                # the subscription's first answer may come before the expiry or not at all
                await ws.subscribe(FOLLOW, {"id": job_id})
                while True:  # ends once the token has expired, at the next check
                    await ws.receive()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4403, "WATCH_TOKEN_EXPIRED")


async def test_a_revoked_keys_tokens_stop_working(settings_factory: Any) -> None:
    async with secured(settings_factory, api_key_cache_seconds=1) as api:
        job_id = await job_of(api, api.keys.alice, **SLOW)
        token = await token_for(api, job_id)
        async with graphql_ws(api.live.ws_url, payload={"apiKey": token}) as ws:
            op = await ws.subscribe(FOLLOW, {"id": job_id})
            assert (await ws.next_payload(op)) is not None
            async with open_runtime(api.settings) as runtime:
                assert await auth.revoke_key(runtime.deps, "alice")
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # bounded by the key cache time, then a check
                    await ws.receive()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4403, "UNAUTHENTICATED")
        async with api.client(token) as browser:
            response = await browser.post(
                "/graphql", json={"query": JOB, "variables": {"id": job_id}}
            )
        assert (response.status_code, codes(response.json())) == (401, ["UNAUTHENTICATED"])


def test_a_token_names_its_job_key_and_owner() -> None:
    key = watch_tokens.signing_key(b"secret")
    job, owner = uuid.uuid4(), uuid.uuid4()
    claims = watch_tokens.Claims(job, owner, owner, int(time.time()) + 60, frozenset(JobAction))
    assert watch_tokens.decode(key, watch_tokens.encode(key, claims)) == claims
    assert decode_id("job_", "job_" + job.hex) == job


async def test_without_a_secret_a_token_works_only_where_it_was_minted(
    settings_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with secured(settings_factory, secret_key=None) as api:
        job_id = await job_of(api, api.keys.alice)
        token = await token_for(api, job_id)
        assert (await api.graphql(token, JOB, {"id": job_id}))["data"]["job"]
        async with start_server(api.settings, None, with_worker=False) as other:
            response = await other.http.post(
                "/graphql",
                json={"query": JOB, "variables": {"id": job_id}},
                headers={"Authorization": f"Bearer {token}"},
            )
    assert (response.status_code, codes(response.json())) == (401, ["WATCH_TOKEN_INVALID"])
    assert any("watch tokens" in record.getMessage() for record in caplog.records)
