"""Production topology: migrate, api and worker as separate OS processes on PostgreSQL+Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import INTEGRATION, TEST_REDIS_URL
from tests.faults import gql_media_process
from tests.support import JOB_FIELDS, free_port, graphql_ws

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not INTEGRATION, reason="needs PostgreSQL and Redis"),
]

EVENTS = f"subscription {{ jobEvents {{ {JOB_FIELDS} }} }}"
GENERATE = (
    'mutation { generateImage(input: {prompt: "tide pools", width: 96, height: 64}) '
    "{ job { id } userErrors { code } } }"
)


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/graphql"


@asynccontextmanager
async def until_ready(url: str, proc: subprocess.Popen[bytes]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while True:
            assert proc.poll() is None, "api exited during start-up"
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)  # polling a process that is starting up
        yield client


@pytest.fixture
def env(postgres_url: str, tmp_path: Path) -> dict[str, str]:
    assert TEST_REDIS_URL is not None
    return {
        **os.environ,
        "GQL_MEDIA_DATABASE_URL": postgres_url,
        "GQL_MEDIA_REDIS_URL": TEST_REDIS_URL,
        "GQL_MEDIA_REDIS_NAMESPACE": f"gql_media_proc_{uuid.uuid4().hex[:8]}",
        "GQL_MEDIA_DATA_DIR": str(tmp_path),
        "GQL_MEDIA_LOCAL_STEPS": "4",
        "GQL_MEDIA_LOCAL_STEP_DELAY": "0.05",
    }


async def test_api_and_worker_processes_run_a_job(env: dict[str, str], tmp_path: Path) -> None:
    migrate = subprocess.run(
        [sys.executable, "-m", "gql_media", "migrate"], env=env, capture_output=True, check=False
    )
    assert migrate.returncode == 0, migrate.stderr.decode()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        gql_media_process(["api", "--port", str(port)], env, tmp_path / "api.log") as api,
        gql_media_process(["worker"], env, tmp_path / "worker.log") as worker,
    ):
        async with until_ready(url, api) as client, graphql_ws(ws_url(url)) as ws:
            op = await ws.subscribe(EVENTS)  # listening before the job exists: nothing missed
            response = await client.post("/graphql", json={"query": GENERATE})
            job_id = response.json()["data"]["generateImage"]["job"]["id"]
            updates = []
            while not updates or updates[-1]["status"] != "SUCCEEDED":
                payload = await ws.next_payload(op)
                assert payload is not None
                if payload["data"]["jobEvents"]["id"] == job_id:
                    updates.append(payload["data"]["jobEvents"])
            statuses = [u["status"] for u in updates]
            assert statuses[0] == "QUEUED" and "RUNNING" in statuses, statuses
            progress = [u["progress"] for u in updates if u["status"] == "RUNNING"]
            assert progress == sorted(progress) and progress[-1] > 0
            media = await client.get(updates[-1]["outputs"][0]["url"])
            assert media.status_code == 200 and media.content[:8] == b"\x89PNG\r\n\x1a\n"

        async with graphql_ws(ws_url(url)) as watcher:
            await watcher.subscribe(EVENTS)
            for proc in (api, worker):
                proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                while True:  # an event still on its way to the socket may come first
                    message = await watcher.receive()
                    assert message["type"] in ("next", "ping"), message
            # 1012 "service restart": clients know to reconnect (to another api process).
            assert watcher.connection.close_code == 1012
        # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit.
        assert api.wait(timeout=30) in (0, -signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert "Application shutdown complete" in (tmp_path / "api.log").read_text()
    assert "worker stopped" in (tmp_path / "worker.log").read_text()


def test_api_refuses_to_start_without_servers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GQL_MEDIA_")}
    result = subprocess.run(
        [sys.executable, "-m", "gql_media", "worker"],
        env={**env, "GQL_MEDIA_DATA_DIR": str(tmp_path)},
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0
    assert b"GQL_MEDIA_DATABASE_URL" in result.stderr
