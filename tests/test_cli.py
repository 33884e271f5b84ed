"""The command-line client against a running api, as real processes."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gql_media.api.protocols import GuardedHttpProtocol, LightWebSocketProtocol
from gql_media.cli import _serve
from gql_media.settings import Settings
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


async def test_with_auth_required_the_key_is_used_and_signed_urls_saved(
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
