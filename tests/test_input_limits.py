"""Hostile values in a request, through a running api with auth required: every free-form
field is bounded and refused on its own field before anything is written; one tenant's row
the database refuses fails only that tenant's request, also inside a batch; the cap on
unfinished jobs holds against concurrent submissions and retries; ``extra`` cannot replace
what the checked fields set."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from gql_media.adapters import redis as redis_adapter
from gql_media.db.models import JobRow
from gql_media.runtime import Runtime
from gql_media.settings import Settings
from gql_media.worker.main import running_worker
from tests.media import jpeg
from tests.support import graphql_ws, start_server
from tests.test_security import Secured, make_keys

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()
SLOW = {"provider": "mock", "extra": {"delayMs": 60_000}}  # stays unfinished for the test
POISON = "a prompt only the database refuses"
PROCESS = """mutation($input: ProcessImageInput!) { processImage(input: $input) {
  job { id } userErrors { field code message } } }"""
RETRY = "mutation($id: ID!) { retryJob(id: $id) { job { id } userErrors { field code } } }"
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { userErrors { code } } }"


@dataclass
class Served(Secured):
    runtime: Runtime  # the server's own: its batcher of job inserts can be watched

    async def graphql(
        self, key: str | None, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """As ``Secured.graphql``, with the body encoded in ASCII: a lone surrogate goes as
        the JSON escape ``\\ud800`` (httpx's own encoding cannot carry one)."""
        async with self.client(key) as http:
            response = await http.post(
                "/graphql",
                content=json.dumps({"query": query, "variables": variables}),
                headers={"Content-Type": "application/json"},
            )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def codes(self, key: str, **fields: Any) -> list[tuple[str | None, str]]:
        payload = await self.generate(key, **fields)
        return [(e["field"], e["code"]) for e in payload["userErrors"]]


@asynccontextmanager
async def serving(settings_factory: Any, **overrides: Any) -> AsyncIterator[Served]:
    """A running api with auth required and the keys of ``tests.test_security``."""
    values: dict[str, Any] = {
        "auth": "required",
        "secret_key": "test-secret",
        "api_key_cache_seconds": 0,
        "rate_limit_per_minute": 0,
        "webhook_secret": WEBHOOK_SECRET,
        "shutdown_grace": 0,  # jobs still running at the end are handed back at once
        **overrides,
    }
    settings = settings_factory(**values)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    keys = await make_keys(settings, fake)
    served: list[Runtime] = []

    @asynccontextmanager
    async def worker(runtime: Runtime) -> AsyncIterator[None]:
        served.append(runtime)
        async with running_worker(runtime):
            yield

    async with start_server(settings, fake, with_worker=True, background=worker) as live:
        yield Served(live, keys, settings, served[0])


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` to hold (the per-test timeout bounds the wait)."""
    while not condition():
        await asyncio.sleep(0.005)


@asynccontextmanager
async def jobs_table_held(settings: Settings) -> AsyncIterator[None]:
    """While the block runs, no job can be inserted (another connection holds the lock that
    an INSERT needs): the api's inserts wait, and the ones after them pile up in one batch."""
    if settings.database_url is None:
        connection = sqlite3.connect(settings.data_dir / "gql_media.db", isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as connection, connection.begin() as transaction:
            await connection.execute(text("LOCK TABLE jobs IN EXCLUSIVE MODE"))
            yield
            await transaction.rollback()
    finally:
        await engine.dispose()


Call = Callable[[], Coroutine[Any, Any, Any]]


async def in_one_batch(api: Served, first: list[Call], batched: list[Call], waiting: int) -> Any:
    """Run ``first`` until each holds a place among the inserts being sent (they wait on the
    held table), then ``batched`` until at least ``waiting`` of them wait for the next send;
    then let the database go: those go to the database together. The results of all, in
    order."""
    batcher = api.runtime.deps.job_inserts.batcher
    async with jobs_table_held(api.settings):
        early = [asyncio.ensure_future(call()) for call in first]
        await until(lambda: batcher.sending == len(first))
        late = [asyncio.ensure_future(call()) for call in batched]
        await until(lambda: batcher.waiting >= waiting)
    return await asyncio.gather(*early), await asyncio.gather(*late)


async def count_jobs(api: Served, prompt: str | None = None) -> int:
    async with api.runtime.deps.sessions() as session:
        stmt = select(func.count()).select_from(JobRow)
        if prompt is not None:
            stmt = stmt.where(JobRow.prompt == prompt)
        return int(await session.scalar(stmt) or 0)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# (input fields, the field the userError must name); every value here is one that a
# database driver cannot store, or is over a documented bound
HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "a NUL \x00 byte"}, "prompt"),
    ({"prompt": "a lone \ud800 surrogate"}, "prompt"),
    ({"negativePrompt": "\udfff"}, "negativePrompt"),
    ({"provider": "mo\x00ck"}, "provider"),
    ({"provider": "p" * 65}, "provider"),
    ({"model": "flux\x00"}, "model"),
    ({"model": "m" * 257}, "model"),
    ({"extra": {"seedling": 2**70}}, "extra.seedling"),
    ({"extra": {"low": -(2**63) - 1}}, "extra.low"),
    ({"extra": {"list": [1, "\ud83d"]}}, "extra.list.1"),
    ({"extra": {"k\x00ey": 1}}, "extra"),
    ({"extra": {"text": "nul\x00"}}, "extra.text"),
    ({"extra": nested(11)}, "extra" + ".a" * 10),
    ({"extra": {"blob": "x" * 16_400}}, "extra"),
    ({"idempotencyKey": "key\x00"}, "idempotencyKey"),
    ({"idempotencyKey": "k" * 256}, "idempotencyKey"),
    ({"webhookUrl": "https://example.com/\x00"}, "webhookUrl"),
    ({"webhookUrl": "https://example.com/\ud800"}, "webhookUrl"),
    ({"webhookUrl": "https://example.com/a b"}, "webhookUrl"),
    ({"webhookUrl": "https://example.com/" + "a" * 2048}, "webhookUrl"),
]


async def test_hostile_values_are_refused_on_their_field_and_other_keys_go_through(
    settings_factory: Any,
) -> None:
    async with serving(settings_factory) as api:

        def good(i: int) -> Call:
            return lambda: api.generate(api.keys.bob, prompt=f"a good job {i}")

        def bad(fields: dict[str, Any]) -> Call:
            return lambda: api.generate(api.keys.alice, **fields)

        plugs, goods = [good(0), good(1)], [good(i) for i in range(2, 8)]
        early, late = await in_one_batch(
            api, plugs, [bad(fields) for fields, _ in HOSTILE] + goods, waiting=len(goods)
        )
        for (fields, field), payload in zip(HOSTILE, late, strict=False):
            assert payload["job"] is None, fields
            assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
                (field, "INVALID_ARGUMENT")
            ], fields
        for payload in early + late[len(HOSTILE) :]:
            assert payload["userErrors"] == [] and payload["job"]["status"] == "QUEUED"
        assert await count_jobs(api) == 8  # bob's, and nothing of alice's


async def test_processing_inputs_and_filters_are_bounded(settings_factory: Any) -> None:
    async with serving(settings_factory) as api:
        async with api.client(api.keys.alice) as http:
            uploaded = await http.post(
                "/uploads", content=jpeg(32, 32), headers={"Content-Type": "image/jpeg"}
            )
        media_id = uploaded.json()["media"]["id"]
        mark = {"text": "\x00", "color": "#" + "f" * 64}
        variants = [
            {"name": "a", "operations": [{"textWatermark": mark}]},
            {"name": "b\n", "operations": [{"rotate": {"degrees": 90, "background": "\ud800"}}]},
        ]
        body = await api.graphql(
            api.keys.alice, PROCESS, {"input": {"mediaId": media_id, "variants": variants}}
        )
        assert sorted(
            (e["field"], e["code"]) for e in body["data"]["processImage"]["userErrors"]
        ) == [
            ("variants.0.operations.0.textWatermark.color", "INVALID_ARGUMENT"),
            ("variants.0.operations.0.textWatermark.text", "INVALID_ARGUMENT"),
            ("variants.1.name", "INVALID_ARGUMENT"),
            ("variants.1.operations.0.rotate.background", "INVALID_ARGUMENT"),
        ]
        listed = await api.graphql(
            api.keys.alice,
            "query($p: String) { jobs(filter: {provider: $p}) { totalCount } }",
            {"p": "mo\x00ck"},
        )
        assert listed["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
        auth_payload = {"authorization": f"Bearer {api.keys.alice}"}
        async with graphql_ws(api.live.ws_url, payload=auth_payload) as ws:
            events = "subscription($p: String) { jobEvents(filter: {provider: $p}) { id } }"
            [refused] = await ws.collect(await ws.subscribe(events, {"p": "mo\x00ck"}))
            assert [e["extensions"]["code"] for e in refused["errors"]] == ["INVALID_ARGUMENT"]
        assert await count_jobs(api) == 0


@pytest.fixture
async def poisoned(settings_factory: Any) -> AsyncIterator[Served]:
    """An api whose database refuses (by a trigger) every job with the prompt ``POISON``:
    a value that passes every check of the api, which only the database knows is bad."""
    async with serving(settings_factory) as api:
        async with api.runtime.engine.begin() as connection:
            if api.settings.database_url is None:
                await connection.execute(
                    text(
                        "CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs "
                        f"WHEN NEW.prompt = '{POISON}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
                    )
                )
            else:
                await connection.execute(
                    text(
                        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                        f"IF NEW.prompt = '{POISON}' THEN RAISE EXCEPTION 'poisoned' "
                        "USING ERRCODE = '22023'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                    )
                )
                await connection.execute(
                    text(
                        "CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs "
                        "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                    )
                )
        try:
            yield api
        finally:
            if api.settings.database_url is not None:
                async with api.runtime.engine.begin() as connection:
                    await connection.execute(text("DROP FUNCTION refuse_poison CASCADE"))


async def test_a_row_only_the_database_refuses_fails_alone_in_its_batch(
    poisoned: Served,
) -> None:
    api = poisoned

    def job(key: str, prompt: str) -> Call:
        return lambda: api.generate(key, prompt=prompt)

    plugs = [job(api.keys.bob, "first"), job(api.keys.bob, "second")]
    batched = [job(api.keys.bob, f"batched {i}") for i in range(3)]
    batched.insert(1, job(api.keys.alice, POISON))
    early, late = await in_one_batch(api, plugs, batched, waiting=len(batched))
    refused = late.pop(1)
    assert refused["job"] is None
    assert [e["code"] for e in refused["userErrors"]] == ["INVALID_ARGUMENT"]
    for payload in early + late:
        assert payload["userErrors"] == [] and payload["job"]["status"] == "QUEUED"
    assert await count_jobs(api) == 5 and await count_jobs(api, POISON) == 0


async def test_the_unfinished_jobs_cap_holds_against_concurrent_submissions(
    settings_factory: Any,
) -> None:
    async with serving(settings_factory, max_active_jobs=5) as api:
        outcomes = await asyncio.gather(
            *(api.codes(api.keys.alice, prompt=f"job {i}", **SLOW) for i in range(25))
        )
        assert outcomes.count([]) == 5
        assert outcomes.count([(None, "TOO_MANY_ACTIVE_JOBS")]) == 20
        assert await count_jobs(api) == 5
        assert await api.codes(api.keys.bob, **SLOW) == []  # another key's cap is its own


async def test_the_unfinished_jobs_cap_holds_across_api_processes(settings_factory: Any) -> None:
    async with (
        serving(settings_factory, max_active_jobs=5) as api,
        start_server(api.settings, api.runtime.fake_redis_server, with_worker=False) as live,
    ):
        other = Served(live, api.keys, api.settings, api.runtime)  # its own engine and batches
        outcomes = await asyncio.gather(
            *(
                (api, other)[i % 2].codes(api.keys.alice, prompt=f"job {i}", **SLOW)
                for i in range(25)
            )
        )
        assert outcomes.count([]) == 5
        assert outcomes.count([(None, "TOO_MANY_ACTIVE_JOBS")]) == 20
        assert await count_jobs(api) == 5


async def test_retries_cannot_race_past_the_unfinished_jobs_cap(settings_factory: Any) -> None:
    async with serving(settings_factory, max_active_jobs=5) as api:
        canceled = []
        for _ in range(5):  # 25 canceled jobs, made five at a time
            made = [await api.generate(api.keys.alice, **SLOW) for _ in range(5)]
            ids = [payload["job"]["id"] for payload in made]
            for job_id in ids:
                await api.graphql(api.keys.alice, CANCEL, {"id": job_id})
            canceled += ids

        async def retry(job_id: str) -> list[tuple[str | None, str]]:
            body = await api.graphql(api.keys.alice, RETRY, {"id": job_id})
            return [(e["field"], e["code"]) for e in body["data"]["retryJob"]["userErrors"]]

        outcomes = await asyncio.gather(*(retry(job_id) for job_id in canceled))
        assert outcomes.count([]) == 5
        assert outcomes.count([(None, "TOO_MANY_ACTIVE_JOBS")]) == 20


async def test_extra_cannot_replace_what_the_checked_fields_set(settings_factory: Any) -> None:
    async with serving(
        settings_factory,
        replicate_api_token="r8_test",
        openai_base_url="https://api.openai.com",
        max_active_jobs=0,
    ) as api:
        replicate = await api.codes(
            api.keys.alice,
            provider="replicate",
            model="black-forest-labs/flux-1.1-pro",
            extra={"num_outputs": 4, "width": 4096, "aspect_ratio": "21:9", "go_fast": True},
        )
        assert replicate == [
            ("extra.aspect_ratio", "INVALID_ARGUMENT"),
            ("extra.num_outputs", "INVALID_ARGUMENT"),
            ("extra.width", "INVALID_ARGUMENT"),
        ]
        openai = await api.codes(
            api.keys.alice,
            provider="openai",
            width=1024,
            height=1024,
            extra={"model": "dall-e-3", "n": 10, "size": "1792x1024", "quality": "low"},
        )
        assert openai == [
            ("extra.model", "INVALID_ARGUMENT"),
            ("extra.n", "INVALID_ARGUMENT"),
            ("extra.size", "INVALID_ARGUMENT"),
        ]
        assert await count_jobs(api) == 0
