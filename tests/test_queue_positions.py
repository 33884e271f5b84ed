"""Where am I: a waiting job's queuePosition and estimatedStartAt, its place sent again over
jobUpdated as it falls, and the queue query and /metrics, against a running api (no worker:
the jobs wait)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from gql_media.adapters import redis as redis_adapter
from tests.support import LiveServer, graphql_ws, start_server
from tests.test_security import make_keys

PLACE = "query($id: ID!) { job(id: $id) { status queuePosition estimatedStartAt } }"
FOLLOW = "subscription($id: ID!) { jobUpdated(id: $id) { status version queuePosition } }"
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { userErrors { code } } }"
QUEUE = """{ queue { queued running oldestWaitSeconds startsPerSecond
  priorities { priority queued running oldestQueuedAt } } }"""


@pytest.fixture
async def live(settings_factory: Any) -> AsyncIterator[LiveServer]:
    settings = settings_factory(queue_position_interval=0.05)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as server:
        yield server


async def _place(live: LiveServer, job_id: str) -> dict[str, Any]:
    body = await live.graphql(PLACE, {"id": job_id})
    assert "errors" not in body, body
    job: dict[str, Any] = body["data"]["job"]
    return job


async def test_a_waiting_job_knows_its_place(live: LiveServer) -> None:
    ids = [(await live.generate(provider="mock"))["job"]["id"] for _ in range(4)]
    places = [await _place(live, job_id) for job_id in ids]
    assert [p["queuePosition"] for p in places] == [0, 1, 2, 3]
    assert datetime.fromisoformat(places[0]["estimatedStartAt"])  # next: now
    assert places[3]["estimatedStartAt"] is None  # no job started lately: no rate to go by
    await live.graphql(CANCEL, {"id": ids[0]})
    assert await _place(live, ids[0]) == {
        "status": "CANCELED",
        "queuePosition": None,
        "estimatedStartAt": None,
    }
    assert (await _place(live, ids[3]))["queuePosition"] == 2


async def test_a_follower_receives_the_place_as_it_falls(live: LiveServer) -> None:
    ids = [(await live.generate(provider="mock"))["job"]["id"] for _ in range(4)]
    async with graphql_ws(live.ws_url) as ws:
        op = await ws.subscribe(FOLLOW, {"id": ids[3]})
        first = (await ws.next_payload(op))["data"]["jobUpdated"]
        assert (first["status"], first["queuePosition"]) == ("QUEUED", 3)
        seen = [3]
        for ahead in ids[:3]:
            await live.graphql(CANCEL, {"id": ahead})
            while True:  # the next interval sends the new place
                update = (await ws.next_payload(op))["data"]["jobUpdated"]
                assert update["version"] == first["version"]  # nothing of the job changed
                if update["queuePosition"] != seen[-1]:
                    break
            seen.append(update["queuePosition"])
        assert seen == [3, 2, 1, 0]
        await live.graphql(CANCEL, {"id": ids[3]})
        last = (await ws.next_payload(op))["data"]["jobUpdated"]
        assert (last["status"], last["queuePosition"]) == ("CANCELED", None)
        assert await ws.next_payload(op) is None  # complete


@pytest.fixture
async def owners(settings_factory: Any) -> AsyncIterator[tuple[LiveServer, Any]]:
    settings = settings_factory(auth="required", secret_key="test-secret", api_key_cache_seconds=0)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    keys = await make_keys(settings, fake)
    async with start_server(settings, fake, with_worker=False) as server:
        yield server, keys


async def _as(live: LiveServer, key: str, query: str, variables: Any = None) -> Any:
    response = await live.http.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def test_the_queue_query_counts_per_priority_and_owner(
    owners: tuple[LiveServer, Any],
) -> None:
    live, keys = owners
    generate = 'mutation($p: Int!) { generateImage(input: {prompt: "x", provider: "mock", priority: $p}) { userErrors { code } } }'  # noqa: E501
    for key, priority in ((keys.alice, 0), (keys.alice, 0), (keys.alice, 5), (keys.bob, 0)):
        assert (await _as(live, key, generate, {"p": priority}))["generateImage"] == {
            "userErrors": []
        }
    mine = (await _as(live, keys.alice, QUEUE))["queue"]
    assert (mine["queued"], mine["running"]) == (3, 0)
    assert [(p["priority"], p["queued"]) for p in mine["priorities"]] == [(5, 1), (0, 2)]
    assert mine["oldestWaitSeconds"] >= 0
    everyone = (await _as(live, keys.admin, QUEUE))["queue"]
    assert [(p["priority"], p["queued"]) for p in everyone["priorities"]] == [(5, 1), (0, 3)]
    metrics = (await live.http.get("/metrics")).text
    assert 'gql_media_queue_jobs{priority="0",status="QUEUED"} 3.0' in metrics
    assert 'gql_media_queue_jobs{priority="5",status="QUEUED"} 1.0' in metrics
    assert 'gql_media_queue_oldest_wait_seconds{priority="5"}' in metrics


async def test_followers_beyond_the_batch_take_turns(settings_factory: Any) -> None:
    """One position looked up per interval (GQL_MEDIA_QUEUE_POSITION_BATCH=1): two followed
    jobs still both hear their new place, in turns."""
    settings = settings_factory(queue_position_interval=0.05, queue_position_batch=1)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        ids = [(await live.generate(provider="mock"))["job"]["id"] for _ in range(3)]
        # a socket each: reading one operation's messages skips the other's on a socket
        async with graphql_ws(live.ws_url) as one, graphql_ws(live.ws_url) as two:
            sockets = [(one, await one.subscribe(FOLLOW, {"id": ids[1]}))]
            sockets.append((two, await two.subscribe(FOLLOW, {"id": ids[2]})))
            firsts = [(await ws.next_payload(op))["data"]["jobUpdated"] for ws, op in sockets]
            assert [f["queuePosition"] for f in firsts] == [1, 2]
            await live.graphql(CANCEL, {"id": ids[0]})
            for (ws, op), first in zip(sockets, firsts, strict=True):
                while True:
                    update = (await ws.next_payload(op))["data"]["jobUpdated"]
                    if update["queuePosition"] != first["queuePosition"]:
                        break
                assert update["queuePosition"] == first["queuePosition"] - 1


async def test_only_a_subscription_that_asks_for_the_place_is_sent_it_again(
    live: LiveServer,
) -> None:
    """A place that falls changes nothing a subscription without queuePosition or
    estimatedStartAt shows: it is not sent the same result again. A fragment asking for
    estimatedStartAt counts."""
    ids = [(await live.generate(provider="mock"))["job"]["id"] for _ in range(3)]
    plain = "subscription($id: ID!) { jobUpdated(id: $id) { status version } }"
    fragment = """subscription($id: ID!) { jobUpdated(id: $id) { status ...When } }
fragment When on Job { estimatedStartAt }"""
    async with (
        graphql_ws(live.ws_url) as one,
        graphql_ws(live.ws_url) as two,
        graphql_ws(live.ws_url) as three,
    ):
        follow, quiet, when = (
            await one.subscribe(FOLLOW, {"id": ids[2]}),
            await two.subscribe(plain, {"id": ids[2]}),
            await three.subscribe(fragment, {"id": ids[2]}),
        )
        assert (await one.next_payload(follow))["data"]["jobUpdated"]["queuePosition"] == 2
        assert (await two.next_payload(quiet))["data"]["jobUpdated"]["status"] == "QUEUED"
        assert (await three.next_payload(when))["data"]["jobUpdated"]["status"] == "QUEUED"
        for ahead in ids[:2]:
            await live.graphql(CANCEL, {"id": ahead})
        while (await one.next_payload(follow))["data"]["jobUpdated"]["queuePosition"] != 0:
            pass  # the place fell twice, and was sent to whoever asks for it
        assert (await three.next_payload(when))["data"]["jobUpdated"]["status"] == "QUEUED"
        await live.graphql(CANCEL, {"id": ids[2]})
        # the quiet one's next message is the job's change, nothing in between
        assert (await two.next_payload(quiet))["data"]["jobUpdated"]["status"] == "CANCELED"
        assert await two.next_payload(quiet) is None
