"""Shared fixtures: a backend (embedded, or real PostgreSQL and Redis), a running server."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gql_media.adapters import redis as redis_adapter
from gql_media.db.migrate import upgrade
from gql_media.runtime import Runtime, open_runtime
from gql_media.settings import Settings
from tests.support import TEST_PATCHES, LiveServer, start_server

TEST_DATABASE_URL = os.environ.get("GQL_MEDIA_TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("GQL_MEDIA_TEST_REDIS_URL")
INTEGRATION = bool(TEST_DATABASE_URL and TEST_REDIS_URL)

BACKENDS = [
    "embedded",
    pytest.param(
        "postgres",
        marks=[
            pytest.mark.integration,
            pytest.mark.skipif(
                not INTEGRATION,
                reason="set GQL_MEDIA_TEST_DATABASE_URL and GQL_MEDIA_TEST_REDIS_URL",
            ),
        ],
    ),
]


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway database on the test server, migrated to head, dropped at the end."""
    assert TEST_DATABASE_URL is not None
    name = f"gql_media_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"'))
    url = _with_database(TEST_DATABASE_URL, name)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def fast_settings(**overrides: Any) -> dict[str, Any]:
    """Settings that keep tests quick: short steps, short polls, no backoff waits."""
    values: dict[str, Any] = {
        "local_steps": 4,
        "local_step_delay": 0.0,
        "worker_poll_delay": 0.05,
        "retry_base_delay": 0.0,
        "retry_max_delay": 0.0,
        "reconcile_interval": 0.2,
    }
    values.update(overrides)
    return values


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_factory(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Builds Settings for this test's backend; each test gets its own namespace and files."""
    namespace = f"gql_media_test_{uuid.uuid4().hex[:10]}"
    database_url: str | None = None
    if backend == "postgres":
        database_url = request.getfixturevalue("postgres_url")
        asyncio.run(_admin(database_url, "TRUNCATE jobs, media_assets, api_keys CASCADE"))
    else:
        upgrade(f"sqlite+aiosqlite:///{tmp_path / 'gql_media.db'}")

    def make(**overrides: Any) -> Settings:
        values = fast_settings(
            data_dir=tmp_path,
            database_url=database_url,
            redis_url=TEST_REDIS_URL if backend == "postgres" else None,
            redis_namespace=namespace,
            patches=TEST_PATCHES,
        )
        values.update(overrides)
        return Settings(**values)

    yield make


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    return settings_factory()  # type: ignore[no-any-return]


@pytest.fixture
def fake_redis_server(settings: Settings) -> Any:
    return redis_adapter.new_fake_server() if settings.redis_url is None else None


@pytest.fixture
async def runtime(settings: Settings, fake_redis_server: Any) -> AsyncIterator[Runtime]:
    async with open_runtime(settings, fake_redis_server) as rt:
        yield rt


@pytest.fixture
async def server(settings: Settings, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    """A real uvicorn server on a free port, with the worker running in-process."""
    async with start_server(settings, fake_redis_server, with_worker=True) as live:
        yield live


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """A page in Debian's chromium, for the browser tests (they skip without it)."""
    from playwright.async_api import async_playwright

    from tests.browser import CHROMIUM

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield await browser.new_page(viewport={"width": 1200, "height": 820})
        finally:
            await browser.close()
