"""The scheduler with a large backlog: how long handing the next job to a free slot takes
when many jobs of many owners and groups wait (``--only scheduler``).

It runs the scheduler's scripts on the bench's Redis (``--redis-url``; the embedded
stand-in without one) under a fresh namespace, which it deletes afterwards: no api or
worker is involved. Each measured start is one round trip that ends a run (its slot frees)
and hands the next job in order to it, as a worker does when a job ends.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.scheduling import Dispatched, Scheduler, Waiting
from gql_media.bench.options import Options
from gql_media.bench.stats import Report, Row, summarize

GROUPS_PER_OWNER = 10
SLOTS = 64
BATCH = 1_000


async def run_scheduler(options: Options, report: Report) -> None:
    redis = redis_adapter.connect(options.redis_url)
    namespace = f"gql-media-bench-{uuid.uuid4().hex[:8]}"
    scheduler = Scheduler(redis, namespace, group_cap=SLOTS // 8)
    try:
        fill_s = await _fill(scheduler, options)
        latencies, running = await _starts(scheduler, options.schedule_picks)
    finally:
        await _clean(redis, namespace)
        await redis_adapter.close(redis)
    summary = summarize(latencies)
    details = {
        "jobs": options.schedule_jobs,
        "owners": options.schedule_owners,
        "groups_per_owner": GROUPS_PER_OWNER,
        "slots": SLOTS,
        "fill_seconds": round(fill_s, 3),
        "start_ms": summary,
        "in_flight_at_end": running,
    }
    rows = [
        Row(
            "scheduler: next start",
            f"{options.schedule_jobs:,} waiting / {options.schedule_owners:,} owners",
            f"{options.schedule_picks:,} starts",
            summary["p50"],
            summary["p99"],
            f"one round trip: a run ends and the next job in order takes its slot; "
            f"filled at {options.schedule_jobs / fill_s:,.0f} jobs/s",
        )
    ]
    report.add("scheduler", details, rows)


async def _fill(scheduler: Scheduler, options: Options) -> float:
    """The backlog: priorities 0 (most), 1 and -1; owners with up to 10 groups; every
    tenth owner capped at 4 jobs running."""
    rng = random.Random(1)
    began = time.perf_counter()
    for start in range(0, options.schedule_jobs, BATCH):
        batch = []
        for i in range(start, min(start + BATCH, options.schedule_jobs)):
            owner = rng.randrange(options.schedule_owners)
            batch.append(
                Waiting(
                    f"bench-{i}",
                    1,
                    rng.choice((0, 0, 0, 1, -1)),
                    f"owner-{owner}",
                    f"group-{rng.randrange(GROUPS_PER_OWNER)}",
                    max_running=4 if owner % 10 == 0 else 0,
                )
            )
        await scheduler.add(batch)
    return time.perf_counter() - began


async def _starts(scheduler: Scheduler, picks: int) -> tuple[list[float], int]:
    running: list[Dispatched] = await scheduler.register("bench", SLOTS, ttl=3600)
    latencies = []
    for _ in range(picks):
        if not running:
            break
        done = running.pop(0)
        began = time.perf_counter()
        running += await scheduler.release([(done.job_id, done.version)])
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies, len(running)


async def _clean(redis: Any, namespace: str) -> None:
    async for key in redis.scan_iter(match=f"{namespace}:*", count=1_000):
        await redis.unlink(key)
