"""The command-line client against a running api, as real processes."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gql_media.api.protocols import GuardedHttpProtocol, LightWebSocketProtocol
from gql_media.cli import _serve
from gql_media.settings import Settings
from tests.faults import worker_env
from tests.support import LiveServer, free_port


async def gql_media(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gql_media",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    """Jobs of the built-in provider that take about a second (4 steps of 0.25 s), so the
    CLI, which follows a job from the moment it is created, sees it RUNNING."""
    return settings_factory(local_step_delay=0.25)  # type: ignore[no-any-return]


async def test_generate_waits_with_progress_and_saves_the_images(
    server: LiveServer, tmp_path: Path
) -> None:
    code, out, err = await gql_media(
        "generate",
        "a red fox",
        "--size",
        "96x64",
        "--num",
        "2",
        "--out",
        str(tmp_path),
        "--url",
        server.url,
    )
    assert code == 0, err
    job_id, *files = out.split()
    assert job_id.startswith("job_")
    assert files == [str(tmp_path / f"{job_id}-{index}.png") for index in (0, 1)]
    assert "100.0% SUCCEEDED" in err and "RUNNING" in err
    for file in files:
        with Image.open(file) as image:
            assert (image.format, image.size) == ("PNG", (96, 64))

    code, out, _ = await gql_media("jobs", "list", "--url", server.url)
    assert code == 0 and job_id in out and "SUCCEEDED" in out
    code, out, _ = await gql_media("jobs", "show", job_id, "--url", server.url)
    assert code == 0 and '"status": "SUCCEEDED"' in out
    shown = json.loads(out)
    assert shown["parameters"]["__typename"] == "GenerateImageParameters"
    assert (shown["parameters"]["width"], shown["parameters"]["numOutputs"]) == (96, 2)
    assert shown["result"] is None
    code, _, err = await gql_media("jobs", "cancel", job_id, "--url", server.url)
    assert code == 2 and "INVALID_STATE" in err


async def test_errors_have_codes_and_exit_statuses(server: LiveServer, tmp_path: Path) -> None:
    code, out, err = await gql_media("generate", "   ", "--url", server.url)
    assert (code, out) == (2, "") and "error PROMPT_EMPTY (prompt)" in err
    code, _, err = await gql_media(
        "generate", "x", "--provider", "mock", "--wait", "--out", str(tmp_path), "--url", server.url
    )
    assert code == 0, err
    unreachable = f"http://127.0.0.1:{free_port()}"
    code, _, err = await gql_media("jobs", "list", "--url", unreachable)
    assert code == 3 and "CONNECTION_FAILED" in err


async def test_with_auth_required_the_key_is_used_signed_urls_saved_and_tokens_minted(
    settings_factory: Any, tmp_path: Path
) -> None:
    from gql_media.adapters import redis as redis_adapter
    from gql_media.runtime import open_runtime
    from gql_media.services.auth import create_key
    from tests.support import start_server

    settings = settings_factory(auth="required", secret_key="cli-secret")
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with open_runtime(settings, fake) as runtime:
        _, key = await create_key(runtime.deps, "cli")
    async with start_server(settings, fake, with_worker=True) as live:
        code, out, err = await gql_media(
            "generate", "a fox", "--size", "64x64", "--out", str(tmp_path),
            "--url", live.url, "--key", key,
        )  # fmt: skip
        assert code == 0, err
        [saved] = out.split()[1:]
        assert saved.endswith(".png") and "?" not in saved
        with Image.open(saved) as image:
            assert image.size == (64, 64)
        code, out, err = await gql_media("jobs", "list", "--url", live.url, "--key", "gqlm_wrong")
        assert (code, out) == (2, "") and "UNAUTHENTICATED" in err
        job_id = saved.rsplit("/", 1)[-1].split("-")[0]
        code, out, err = await gql_media(
            "jobs", "watch-token", job_id, "--ttl", "60", "--url", live.url, "--key", key
        )
        assert code == 0 and out.startswith("gqlw_") and "expires" in err, err
        token = out.strip()
        code, out, _ = await gql_media("jobs", "show", job_id, "--url", live.url, "--key", token)
        assert code == 0 and '"status": "SUCCEEDED"' in out
        code, out, err = await gql_media("jobs", "list", "--url", live.url, "--key", token)
        assert (code, out) == (2, "") and "FORBIDDEN" in err
        code, out, err = await gql_media(
            "jobs", "watch-token", job_id, "--ttl", "0", "--url", live.url, "--key", key
        )
        assert (code, out) == (2, "") and "INVALID_ARGUMENT (ttlSeconds)" in err


def test_the_api_collects_garbage_at_its_own_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving the api raises the young-generation GC threshold (0 keeps Python's), keeps
    start-up objects out of later collections and passes the access-log setting on."""
    import uvicorn

    served: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(options))
    args = argparse.Namespace(host="127.0.0.1", port=0)
    before = gc.get_threshold()
    try:
        _serve(object(), Settings(gc_threshold=12_345, access_log=True), args)
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 0
        _serve(object(), Settings(gc_threshold=0), args)
        assert gc.get_threshold()[0] == 12_345
        assert [options["access_log"] for options in served] == [True, False]
        assert all(issubclass(options["ws"], LightWebSocketProtocol) for options in served)
        assert all(issubclass(options["http"], GuardedHttpProtocol) for options in served)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def keys(settings: Settings, *args: str) -> tuple[int, str, str]:
    """``gql-media keys <args>`` as a real process on the test's database."""
    values = {"data_dir": settings.data_dir, "redis_namespace": settings.redis_namespace}
    if settings.database_url is not None:
        values.update(database_url=settings.database_url, redis_url=settings.redis_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gql_media",
        "keys",
        *args,
        env=worker_env(**values),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def listed(out: str, name: str) -> str:
    [line] = [line for line in out.splitlines() if line.endswith(f"  {name}")]
    return line


async def test_keys_limits_are_set_changed_and_listed(settings_factory: Any) -> None:
    from gql_media.adapters import redis as redis_adapter
    from tests.support import start_server

    settings = settings_factory(auth="required", secret_key="s", api_key_cache_seconds=0)
    code, key, err = await keys(
        settings, "create", "--name", "app", "--max-priority", "2", "--max-running", "3"
    )
    assert code == 0, err
    code, admin, err = await keys(settings, "create", "--name", "ops", "--admin")
    assert code == 0, err
    code, out, _ = await keys(settings, "list")
    assert "max-priority=2 max-running=3  app" in listed(out, "app")
    assert "admin" in listed(out, "ops") and "max-priority=none max-running=none" in out

    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:

        async def codes(key: str, priority: int) -> list[str]:
            response = await live.http.post(
                "/graphql",
                json={
                    "query": "mutation($input: GenerateImageInput!) { generateImage(input: "
                    "$input) { userErrors { code } } }",
                    "variables": {"input": {"prompt": "x", "priority": priority}},
                },
                headers={"Authorization": f"Bearer {key.strip()}"},
            )
            return [e["code"] for e in response.json()["data"]["generateImage"]["userErrors"]]

        assert await codes(key, 3) == ["PRIORITY_NOT_ALLOWED"]
        assert await codes(key, 2) == []
        assert await codes(admin, 10) == []

        code, out, err = await keys(settings, "update", "app", "--max-priority", "none")
        assert code == 0, err
        assert "max-priority=none max-running=3  app" in out
        assert await codes(key, 10) == []  # the cache lasts 0 s here

        code, out, err = await keys(settings, "update", "app", "--max-running", "none")
        assert code == 0 and "max-priority=none max-running=none  app" in out, err
        code, out, err = await keys(settings, "update", "app", "--max-priority", "0")
        assert code == 0 and "max-priority=0 max-running=none  app" in out, err
        assert await codes(key, 1) == ["PRIORITY_NOT_ALLOWED"]

    code, out, _ = await keys(settings, "list")
    assert "max-priority=0 max-running=none  app" in listed(out, "app")
    code, _, err = await keys(settings, "update", "nobody", "--max-priority", "1")
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = await keys(settings, "update", "app", "--max-priority", "11")
    assert code == 2 and "INVALID_ARGUMENT" in err
    code, _, err = await keys(settings, "update", "app", "--max-running", "0")
    assert code == 2 and "INVALID_ARGUMENT" in err
    code, _, err = await keys(settings, "update", "app", "--max-running", "many")
    assert code == 2 and "not a whole number or none" in err
    code, _, err = await keys(settings, "update", "app")
    assert code == 2 and "nothing to change" in err
    code, _, err = await keys(settings, "create", "--name", "x", "--max-priority", "-1")
    assert code == 2 and "INVALID_ARGUMENT" in err
    code, out, _ = await keys(settings, "list")
    assert "max-priority=0 max-running=none  app" in listed(out, "app") and "  x\n" not in out


@pytest.mark.parametrize(
    ("command", "blocker"),
    [("serve", "a file"), ("worker", "a file"), ("serve", "a read-only directory")],
)
async def test_an_unwritable_data_dir_is_one_clear_error(
    command: str, blocker: str, tmp_path: Path
) -> None:
    """A data directory the process cannot write (a volume owned by another user, a path
    under a file) stops the command at once with one line naming it, and exit status 1."""
    if blocker == "a file":
        (tmp_path / "taken").write_text("")
        data_dir = tmp_path / "taken" / "data"  # cannot be created: its parent is a file
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only directory")
        (tmp_path / "locked").mkdir(mode=0o500)
        data_dir = tmp_path / "locked" / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GQL_MEDIA_")}
    env["GQL_MEDIA_DATA_DIR"] = str(data_dir)
    args = [command, "--port", str(free_port())] if command == "serve" else [command]
    if command == "worker":  # the split mode's servers; never reached
        env["GQL_MEDIA_DATABASE_URL"] = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
        env["GQL_MEDIA_REDIS_URL"] = "redis://127.0.0.1:1/0"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gql_media",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1
    assert lines == [lines[0]] and lines[0].startswith(
        "gql-media: the data directory is not writable: "
    ), lines
    assert str(data_dir) in lines[0] and "GQL_MEDIA_DATA_DIR" in lines[0]
