"""`gql-media serve` as a user runs it: it says where to open the dashboard, and on Ctrl-C
with a job running it says that it waits for the job and for how long."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from gql_media.cli import browser_url
from tests.support import JOB_FIELDS, free_port, graphql_ws

FOLLOW = f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"
GENERATE = (
    'mutation { generateImage(input: {prompt: "a slow tide", width: 64, height: 64}) '
    "{ job { id } userErrors { code } } }"
)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://[::1]:8000"),
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("::1", "http://[::1]:8000"),
        ("media.example.org", "http://media.example.org:8000"),
    ],
)
def test_the_url_is_one_a_browser_can_open(host: str, url: str) -> None:
    assert browser_url(host, 8000) == url


async def read_until(proc: asyncio.subprocess.Process, seen: list[str], text: str) -> str:
    """Lines of the process's output until one holds ``text``; that line."""
    assert proc.stdout is not None
    while line := (await proc.stdout.readline()).decode():
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"the process ended without saying {text!r}:\n{''.join(seen)}")


async def until_ready(url: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while True:
            assert proc.returncode is None, "serve exited during start-up"
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)  # polling a process that is starting up


async def test_serve_says_where_to_look_and_what_it_waits_for(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GQL_MEDIA_")},
        "GQL_MEDIA_DATA_DIR": str(tmp_path),
        "GQL_MEDIA_LOCAL_STEPS": "64",
        "GQL_MEDIA_LOCAL_STEP_DELAY": "1",  # a job that runs for a minute
        "GQL_MEDIA_SHUTDOWN_GRACE": "1.5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gql_media",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    seen: list[str] = []
    try:
        line = await read_until(proc, seen, "dashboard: ")
        url = f"http://127.0.0.1:{port}"
        assert f"dashboard: {url}/ " in line and f"GraphiQL: {url}/graphql" in line
        await until_ready(url, proc)
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            dashboard = await http.get("/")
            assert dashboard.status_code == 200
            assert "text/html" in dashboard.headers["content-type"]
            made = (await http.post("/graphql", json={"query": GENERATE})).json()
        job_id = made["data"]["generateImage"]["job"]["id"]
        async with graphql_ws(url.replace("http://", "ws://") + "/graphql") as ws:
            op = await ws.subscribe(FOLLOW, {"id": job_id})
            while (payload := await ws.next_payload(op)) is not None:
                if payload["data"]["jobUpdated"]["status"] == "RUNNING":
                    break

        proc.send_signal(signal.SIGINT)
        waiting = await read_until(proc, seen, "stopping: waiting")
        assert "up to 1.5s (GQL_MEDIA_SHUTDOWN_GRACE) for 1 running job(s)" in waiting
        assert await proc.wait() == 0, "".join(seen)
        # as said: the job that did not finish in time went back to the queue
        with closing(sqlite3.connect(tmp_path / "gql_media.db")) as db:
            assert db.execute("SELECT status FROM jobs").fetchall() == [("QUEUED",)]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
