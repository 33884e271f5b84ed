"""Runs the chosen scenarios against the target, prints the table and writes the JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from typing import Any

from gql_media.bench import fanout, images, jobs, scheduling
from gql_media.bench.compare import run_compare
from gql_media.bench.options import Options, OptionsError, build_options
from gql_media.bench.sockets import raise_fd_limit
from gql_media.bench.stats import Report, render_table
from gql_media.bench.target import Scenario, Target, TargetError, open_target

SCENARIOS: dict[str, Scenario] = {
    "submit": jobs.run_submit,
    "pickup": jobs.run_pickup,
    "e2e": jobs.run_e2e,
    "drain": jobs.run_drain,
    "fanout-updated": fanout.run_fanout_updated,
    "fanout-events": fanout.run_fanout_events,
}
WARMUP_JOBS = 5


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def warm_up(target: Target) -> None:
    """A few jobs through the whole pipeline first: connections opened, code paths warm,
    and a clear error when no worker runs the jobs."""
    for _ in range(WARMUP_JOBS):
        submitted = await target.api.submit(prompt="bench warm-up")
        if submitted.job_id is None:
            raise TargetError(f"the api refused a job: {submitted.error}")
    if not await target.api.wait_idle(jobs.since(), 60):
        raise TargetError("warm-up jobs did not finish within 60 s: are workers running?")


async def run(options: Options) -> dict[str, Any]:
    """Every chosen scenario; the JSON document of the results."""
    report = Report()
    started = datetime.now(UTC)
    fd_limit = raise_fd_limit()
    remote = [s for s in options.only if s in SCENARIOS]
    target_info: dict[str, Any] = {"mode": options.mode}
    if remote:
        async with open_target(options) as target:
            target_info.update(url=target.url, workers=target.workers, api_pid=target.api_pid)
            await warm_up(target)
            for name in remote:
                _log(f"bench: {name} …")
                began = time.perf_counter()
                await SCENARIOS[name](target, options, report)
                _log(f"bench: {name} done in {time.perf_counter() - began:.1f} s")
    if "images" in options.only:
        _log("bench: images …")
        await images.run_images(options, report)
    if "scheduler" in options.only:
        _log("bench: scheduler …")
        await scheduling.run_scheduler(options, report)
    return {
        "started_at": started.isoformat(),
        "target": target_info,
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "fd_limit": fd_limit,
        },
        "options": {
            k: (str(v) if k in ("json_path", "log_dir") else v)
            for k, v in vars(options).items()
            if k not in ("key", "database_url", "redis_url")
        },
        "scenarios": report.details,
        "table": render_table(report.rows),
    }


def _runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main(args: argparse.Namespace) -> int:
    """``gql-media bench``; the exit status."""
    try:
        options = build_options(args)
    except OptionsError as exc:
        _log(str(exc))
        return 2
    try:
        with _runner() as runner:
            if options.baseline is not None:
                result = runner.run(run_compare(options, SCENARIOS, warm_up, _log))
            else:
                result = runner.run(run(options))
    except TargetError as exc:
        _log(f"bench: {exc}")
        return 3
    print(result["table"])
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(result, indent=2) + "\n")
        _log(f"bench: results written to {options.json_path}")
    return 0
