"""Soak: many jobs while worker processes are SIGKILLed and restarted at random.

    python -m tests.soak --jobs 200 --workers 3 --kill-interval 0.5

Needs GQL_MEDIA_TEST_DATABASE_URL and GQL_MEDIA_TEST_REDIS_URL (a throwaway database is
created and dropped). Bounded by --jobs and --timeout; prints a summary and exits non-zero
when any job was lost, finished twice, or has missing or extra outputs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from gql_media.adapters.events import EventHub
from gql_media.db.migrate import upgrade
from gql_media.db.models import AssetRow, utcnow
from gql_media.domain import SYSTEM, TERMINAL_STATUSES, JobSnapshot, JobStatus
from gql_media.runtime import open_runtime
from gql_media.services.catchup import catch_up
from gql_media.services.deps import Deps
from gql_media.services.jobs import NewImageJob, create_image_job, get_job
from gql_media.settings import Settings
from tests.conftest import _admin, _with_database


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-interval", type=float, default=0.5)
    parser.add_argument("--max-delay-ms", type=int, default=400)
    parser.add_argument(
        "--kill-for", type=float, default=30, help="seconds of kills; then the jobs settle"
    )
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-dir", type=Path, help="keep the workers' logs here")
    return parser.parse_args(argv)


class Workers:
    """Worker processes that can be killed and replaced."""

    def __init__(self, count: int, env: dict[str, str], logdir: Path) -> None:
        self.env, self.logdir = env, logdir
        self.procs = [self._spawn(i) for i in range(count)]
        self.kills = 0

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        with (self.logdir / f"worker-{index}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "gql_media", "worker"], env=self.env, stdout=log, stderr=log
            )

    def kill_one(self, rng: random.Random) -> None:
        index = rng.randrange(len(self.procs))
        self.procs[index].send_signal(signal.SIGKILL)
        self.procs[index].wait()
        self.kills += 1
        self.procs[index] = self._spawn(index)

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


async def _soak(args: argparse.Namespace, database_url: str, redis_url: str, tmp: Path) -> int:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_namespace=f"gql_media_soak_{uuid.uuid4().hex[:8]}",
        data_dir=tmp,
        lease_seconds=1.0,
        reconcile_interval=0.2,
        worker_poll_delay=0.05,
        max_attempts=20,
        retry_base_delay=0.05,
        retry_max_delay=0.2,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GQL_MEDIA_")}
    for name in (
        "database_url",
        "redis_url",
        "redis_namespace",
        "data_dir",
        "lease_seconds",
        "reconcile_interval",
        "worker_poll_delay",
        "max_attempts",
        "retry_base_delay",
        "retry_max_delay",
    ):
        env[f"GQL_MEDIA_{name.upper()}"] = str(getattr(settings, name))
    rng = random.Random(args.seed)
    succeeded_events: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    start_time = utcnow()
    caught_up = 0
    async with open_runtime(settings) as runtime:
        hub = EventHub(runtime.redis, settings.redis_namespace, queue_size=100_000)
        await hub.start()
        await hub.wait_listening()
        inbox = hub.subscribe(None)
        logdir = args.log_dir or tmp
        logdir.mkdir(parents=True, exist_ok=True)
        workers = Workers(args.workers, env, logdir)
        try:
            jobs = [
                await create_image_job(
                    runtime.deps,
                    NewImageJob(
                        prompt=f"soak {i}",
                        provider="mock",
                        width=64,
                        height=64,
                        num_outputs=1 + i % 2,
                        extra={"delayMs": rng.randint(0, args.max_delay_ms), "failureRate": 0.1},
                    ),
                    SYSTEM,
                )
                for i in range(args.jobs)
            ]
            pending = {job.id for job in jobs}
            next_kill = time.monotonic() + args.kill_interval
            next_check = time.monotonic() + 0.5
            while pending and time.monotonic() - started < args.timeout:
                if time.monotonic() >= next_check:
                    # what the api does for events lost with a killed worker
                    caught_up += await catch_up(runtime.deps, hub, start_time)
                    next_check = time.monotonic() + 0.5
                item = None
                with contextlib.suppress(TimeoutError):
                    # not wait_for: on 3.11 it can drop a result that races the timeout
                    async with asyncio.timeout(args.kill_interval):
                        item = await inbox.get()
                if isinstance(item, JobSnapshot) and item.status in TERMINAL_STATUSES:
                    if item.status is JobStatus.SUCCEEDED:
                        succeeded_events[item.id] += 1
                    pending.discard(item.id)
                if time.monotonic() >= next_kill and time.monotonic() - started < args.kill_for:
                    workers.kill_one(rng)
                    next_kill = time.monotonic() + args.kill_interval
        finally:
            workers.stop()
            await hub.stop()
        summary = Summary(succeeded_events, workers.kills, caught_up, started)
        return await _report(runtime.deps, jobs, summary, settings)


@dataclass
class Summary:
    succeeded_events: collections.Counter[str]
    kills: int
    caught_up: int
    started: float


async def _report(deps: Deps, jobs: list[JobSnapshot], summary: Summary, settings: Settings) -> int:
    succeeded_events = summary.succeeded_events
    statuses: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    attempts = 0
    for job in jobs:
        final = await get_job(deps, job.id, SYSTEM)
        assert final is not None
        statuses[final.status.value] += 1
        attempts += final.attempts
        expected = int(job.parameters["numOutputs"])
        if final.status is JobStatus.SUCCEEDED:
            if len(final.outputs) != expected:
                problems.append(f"{job.id}: {len(final.outputs)} outputs, expected {expected}")
            for output in final.outputs:
                if not deps.storage.path_for(output.key).is_file():
                    problems.append(f"{job.id}: output file {output.key} missing")
            if succeeded_events[job.id] != 1:
                problems.append(f"{job.id}: SUCCEEDED announced {succeeded_events[job.id]} times")
        elif final.status not in TERMINAL_STATUSES:
            problems.append(
                f"{job.id}: still {final.status.value} (v{final.version}, attempt "
                f"{final.attempts}, updated {final.updated_at:%H:%M:%S.%f}, "
                f"error {final.error.code if final.error else None})"
            )
    async with deps.sessions() as session:
        rows = await session.scalar(select(func.count()).select_from(AssetRow))
    files = list((settings.effective_storage_dir / "jobs").rglob("*.*"))
    if rows != len(files):
        problems.append(f"{rows} output rows but {len(files)} files in storage")
    elapsed = time.monotonic() - summary.started
    print(f"jobs            {len(jobs)}")
    for status, count in sorted(statuses.items()):
        print(f"  {status:<13} {count}")
    print(f"worker kills    {summary.kills}")
    print(f"mean attempts   {attempts / max(len(jobs), 1):.2f}")
    print(f"output rows     {rows} (files {len(files)})")
    print(f"caught up       {summary.caught_up} (events lost with a killed worker)")
    print(f"elapsed         {elapsed:.1f}s")
    print(f"problems        {len(problems)}")
    for problem in problems[:20]:
        print(f"  {problem}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    admin_url = os.environ.get("GQL_MEDIA_TEST_DATABASE_URL")
    redis_url = os.environ.get("GQL_MEDIA_TEST_REDIS_URL")
    if not admin_url or not redis_url:
        sys.exit("set GQL_MEDIA_TEST_DATABASE_URL and GQL_MEDIA_TEST_REDIS_URL")
    name = f"gql_media_soak_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        database_url = _with_database(admin_url, name)
        upgrade(database_url)
        with tempfile.TemporaryDirectory(prefix="gql-media-soak-") as tmp:
            return asyncio.run(_soak(args, database_url, redis_url, Path(tmp)))
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    sys.exit(main())
