"""What a job asks of the scheduler: priority, group and deadline on every job-creating
mutation, stored on the row, returned on Job and carried in events; their refusals; a key's
max priority."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gql_media.adapters import redis as redis_adapter
from gql_media.db.models import JobRow
from gql_media.domain import OPEN, JobSnapshot
from gql_media.runtime import open_runtime
from gql_media.services import auth
from gql_media.settings import Settings
from tests.media import jpeg, quadrant_video
from tests.support import LiveServer, graphql_ws, start_server
from tests.test_subscriptions import listening

SCHEDULING = "priority group deadline"
CREATE = f"""
mutation Create($input: GenerateImageInput!) {{
  generateImage(input: $input) {{ job {{ id status {SCHEDULING} }} userErrors {{ field code }} }}
}}
"""
PROCESS_IMAGE = f"""
mutation Process($input: ProcessImageInput!) {{
  processImage(input: $input) {{ job {{ id {SCHEDULING} }} userErrors {{ field code }} }}
}}
"""
PROCESS_VIDEO = f"""
mutation Process($input: ProcessVideoInput!) {{
  processVideo(input: $input) {{ job {{ id {SCHEDULING} }} userErrors {{ field code }} }}
}}
"""
JOB = f"query Job($id: ID!) {{ job(id: $id) {{ id {SCHEDULING} }} }}"
EVENTS = f"subscription {{ jobEvents {{ id {SCHEDULING} }} }}"
FOLLOW = f"subscription Follow($id: ID!) {{ jobUpdated(id: $id) {{ status {SCHEDULING} }} }}"
TOTAL = "{ jobs { totalCount } }"


def later(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


@pytest.fixture
async def api(settings: Settings, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    """The api without a worker: jobs stay QUEUED."""
    async with start_server(settings, fake_redis_server, with_worker=False) as live:
        yield live


async def create(
    live: LiveServer, query: str = CREATE, headers: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    if query is CREATE:
        fields.setdefault("prompt", "a lighthouse at dusk")
        fields.setdefault("width", 64)
        fields.setdefault("height", 64)
    response = await live.http.post(
        "/graphql", json={"query": query, "variables": {"input": fields}}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    payload: dict[str, Any] = next(iter(body["data"].values()))
    return payload


async def refusals(live: LiveServer, **fields: Any) -> list[tuple[str, str]]:
    payload = await create(live, **fields)
    assert payload["job"] is None, payload
    return [(e["field"], e["code"]) for e in payload["userErrors"]]


async def stored(settings: Settings, job_id: str) -> JobRow:
    async with open_runtime(settings) as runtime, runtime.deps.sessions() as session:
        row = await session.scalar(select(JobRow).where(JobRow.id == uuid.UUID(job_id[4:])))
    assert row is not None
    return row


async def test_generate_image_stores_and_returns_priority_group_and_deadline(
    api: LiveServer, settings: Settings
) -> None:
    deadline = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    payload = await create(
        api, priority=7, group="end-user-42", deadline=deadline.astimezone().isoformat()
    )
    assert payload["userErrors"] == []
    job = payload["job"]
    expected = {"priority": 7, "group": "end-user-42", "deadline": deadline.isoformat()}
    assert {k: job[k] for k in expected} == expected
    fetched = (await api.graphql(JOB, {"id": job["id"]}))["data"]["job"]
    assert {k: fetched[k] for k in expected} == expected
    row = await stored(settings, job["id"])
    assert (row.priority, row.fair_group, row.deadline) == (7, "end-user-42", deadline)

    plain = (await create(api))["job"]
    assert (plain["priority"], plain["group"], plain["deadline"]) == (0, None, None)
    row = await stored(settings, plain["id"])
    assert (row.priority, row.fair_group, row.deadline) == (0, None, None)
    low = (await create(api, priority=-10))["job"]
    assert low["priority"] == -10


async def test_processing_jobs_take_them_too(
    api: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    image = await api.http.post(
        "/uploads", content=jpeg(64, 48), headers={"Content-Type": "image/jpeg"}
    )
    video = await api.http.post(
        "/uploads",
        content=quadrant_video(tmp_path / "clip.mp4").read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    deadline = later(minutes=30)
    processed = await create(
        api,
        PROCESS_IMAGE,
        mediaId=image.json()["media"]["id"],
        variants=[{"name": "small", "operations": [{"resize": {"width": 32}}]}],
        priority=-3,
        group="g",
        deadline=deadline,
    )
    assert processed["userErrors"] == [], processed
    assert (processed["job"]["priority"], processed["job"]["group"]) == (-3, "g")
    assert datetime.fromisoformat(processed["job"]["deadline"]) == datetime.fromisoformat(deadline)
    clip = await create(
        api,
        PROCESS_VIDEO,
        mediaId=video.json()["media"]["id"],
        operations=[{"videoMetadata": True}],
        priority=4,
        group="h",
    )
    assert clip["userErrors"] == [], clip
    row = await stored(settings, clip["job"]["id"])
    assert (row.priority, row.fair_group, row.deadline) == (4, "h", None)
    refused = await create(
        api,
        PROCESS_VIDEO,
        mediaId=video.json()["media"]["id"],
        operations=[{"videoMetadata": True}],
        priority=11,
        group="",
        deadline=later(seconds=-1),
    )
    assert refused["job"] is None
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [
        ("priority", "INVALID_ARGUMENT"),
        ("group", "INVALID_ARGUMENT"),
        ("deadline", "DEADLINE_IN_PAST"),
    ]


async def test_refusals_name_the_field_and_insert_nothing(api: LiveServer) -> None:
    assert await refusals(api, priority=11) == [("priority", "INVALID_ARGUMENT")]
    assert await refusals(api, priority=-11) == [("priority", "INVALID_ARGUMENT")]
    assert await refusals(api, group="") == [("group", "INVALID_ARGUMENT")]
    assert await refusals(api, group="g" * 129) == [("group", "INVALID_ARGUMENT")]
    assert await refusals(api, group="a\x00b") == [("group", "INVALID_ARGUMENT")]
    assert await refusals(api, deadline=later(seconds=-5)) == [("deadline", "DEADLINE_IN_PAST")]
    assert await refusals(api, deadline=later(seconds=-0.001)) == [("deadline", "DEADLINE_IN_PAST")]
    naive = datetime.now() + timedelta(days=1)  # no time zone
    assert await refusals(api, deadline=naive.isoformat()) == [("deadline", "INVALID_ARGUMENT")]
    assert await refusals(api, deadline="9999-12-31T23:00:00-05:00") == [
        ("deadline", "INVALID_ARGUMENT")
    ]
    assert (await api.graphql(TOTAL))["data"]["jobs"]["totalCount"] == 0
    accepted = await create(api, priority=10, group="g" * 128, deadline=later(seconds=30))
    assert accepted["userErrors"] == []


async def test_an_idempotency_key_covers_the_scheduling_fields(api: LiveServer) -> None:
    first = await create(api, idempotencyKey="k1", priority=2, group="a")
    again = await create(api, idempotencyKey="k1", priority=2, group="a")
    assert again["job"]["id"] == first["job"]["id"]
    for changed in ({"priority": 3, "group": "a"}, {"priority": 2, "group": "b"}):
        conflict = await create(api, idempotencyKey="k1", **changed)
        assert [e["code"] for e in conflict["userErrors"]] == ["IDEMPOTENCY_CONFLICT"]
    deadline = later(hours=1)
    with_deadline = await create(api, idempotencyKey="k2", deadline=deadline)
    conflict = await create(api, idempotencyKey="k2", deadline=later(hours=2))
    assert [e["code"] for e in conflict["userErrors"]] == ["IDEMPOTENCY_CONFLICT"]
    same = await create(api, idempotencyKey="k2", deadline=deadline)
    assert same["job"]["id"] == with_deadline["job"]["id"]
    elsewhere = datetime.fromisoformat(deadline).astimezone(timezone(timedelta(hours=-7)))
    same_instant = await create(api, idempotencyKey="k2", deadline=elsewhere.isoformat())
    assert same_instant["job"]["id"] == with_deadline["job"]["id"]


async def test_events_carry_them(api: LiveServer) -> None:
    async with graphql_ws(api.ws_url) as ws:
        op = await listening(ws, EVENTS, {})
        job = (await create(api, priority=5, group="watchers", deadline=later(hours=1)))["job"]
        event = await ws.next_payload(op)  # the QUEUED event the api published
        assert event is not None
        seen = event["data"]["jobEvents"]
        assert seen == {"id": job["id"], **job_fields(job)}
        op = await ws.subscribe(FOLLOW, {"id": job["id"]})
        current = await ws.next_payload(op)  # read from the row
    assert current is not None
    assert current["data"]["jobUpdated"] == {"status": "QUEUED", **job_fields(job)}
    assert job_fields(job)["priority"] == 5 and job["group"] == "watchers"


def job_fields(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in ("priority", "group", "deadline")}


def test_a_snapshot_travels_with_them() -> None:
    now = datetime.now(UTC)
    snapshot = JobSnapshot.from_dict(
        {
            "id": "job_1",
            "kind": "GENERATE_IMAGE",
            "status": "QUEUED",
            "progress": 0,
            "version": 1,
            "provider": "local",
            "attempts": 0,
            "max_attempts": 3,
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
            "priority": -4,
            "group": "g",
            "deadline": now.isoformat(),
        }
    )
    import orjson

    again = JobSnapshot.from_dict(orjson.loads(snapshot.to_json()))
    assert (again.priority, again.group, again.deadline) == (-4, "g", now)
    older = JobSnapshot.from_dict({**orjson.loads(snapshot.to_json()), "priority": None})
    assert older.priority == 0  # events published before jobs had a priority


def test_who_may_ask_for_which_priority() -> None:
    assert OPEN.priority_limit == 10
    key = uuid.uuid4()
    from gql_media.domain import Principal

    assert Principal(key, False, max_priority=3).priority_limit == 3
    assert Principal(key, False, max_priority=None).priority_limit == 10
    assert Principal(key, True, max_priority=0).priority_limit == 10


async def test_a_keys_max_priority_holds_and_admin_keys_have_none(settings_factory: Any) -> None:
    settings = settings_factory(auth="required", secret_key="s", api_key_cache_seconds=0)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with open_runtime(settings, fake) as runtime:
        _, limited = await auth.create_key(runtime.deps, "limited", max_priority=2)
        _, admin = await auth.create_key(runtime.deps, "ops", admin=True, max_priority=0)
    async with start_server(settings, fake, with_worker=False) as live:

        async def codes(key: str, priority: int) -> list[tuple[str, str]]:
            payload = await create(
                live, headers={"Authorization": f"Bearer {key}"}, priority=priority
            )
            return [(e["field"], e["code"]) for e in payload["userErrors"]]

        assert await codes(limited, 3) == [("priority", "PRIORITY_NOT_ALLOWED")]
        assert await codes(limited, 2) == []
        assert await codes(limited, -10) == []
        assert await codes(admin, 10) == []
        assert await codes(limited, 11) == [("priority", "INVALID_ARGUMENT")]
        async with open_runtime(settings, fake) as runtime:
            changed = await auth.update_key(runtime.deps, "limited", max_priority=None)
        assert changed is not None and changed.max_priority is None
        assert await codes(limited, 10) == []
