"""Scenarios on the job pipeline: submit throughput, pickup, end to end, drain.

Times are the client's (``perf_counter``): when a request was written, when its response
was read, when an event arrived on a WebSocket that was open before the job existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gql_media.bench.http import Api, Submitted
from gql_media.bench.options import Options
from gql_media.bench.stats import Report, Row, cpu_ms_per, cpu_note, rate, summarize
from gql_media.bench.target import Target
from gql_media.bench.ws import EVENTS, FOLLOW, TERMINAL, GraphQLSocket, field_of

SETTLE_TIMEOUT = 120.0


def since() -> str:
    """A ``createdAfter`` bound that covers every job the bench makes from now on."""
    return (datetime.now(UTC) - timedelta(seconds=5)).isoformat()


@dataclass
class Seen:
    """When each status of each job first arrived (perf_counter), and the event itself."""

    times: dict[tuple[str, str], float] = field(default_factory=dict)
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    def handle(self, message: dict[str, Any], now: float, wall: float) -> None:
        job = field_of(message)
        if job is None:
            return
        key = (job["id"], job["status"])
        if key not in self.times:
            self.times[key] = now
            self.events[key] = job
        if job["status"] in TERMINAL:
            waiter = self.waiters.get(job["id"])
            if waiter is not None and not waiter.done():
                waiter.set_result(now)

    async def finished(self, job_id: str, timeout: float) -> float | None:
        """When a terminal event of ``job_id`` arrived (perhaps before this call)."""
        for status in TERMINAL:
            if (job_id, status) in self.times:
                return self.times[job_id, status]
        waiter = self.waiters.setdefault(job_id, asyncio.get_running_loop().create_future())
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            return None
        finally:
            self.waiters.pop(job_id, None)


@contextlib.asynccontextmanager
async def watching(target: Target, options: Options, statuses: list[str]) -> AsyncIterator[Seen]:
    """A ``jobEvents`` socket (bench jobs in ``statuses``), open and listening."""
    seen = Seen()
    socket = await GraphQLSocket.open(target.url_ws, options.key, options.compression)
    job_filter = {"provider": "mock", "status": statuses, "createdAfter": since()}
    await socket.subscribe("events", EVENTS, {"filter": job_filter})
    listener = asyncio.create_task(socket.listen(seen.handle))
    try:
        await _until_listening(target, seen)
        yield seen
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await socket.close()


async def _until_listening(target: Target, seen: Seen) -> None:
    """A subscription sends nothing when it starts: probe jobs until one is seen."""
    api = target.api
    for _ in range(100):
        probe = await api.submit(prompt="bench probe")
        if probe.job_id and await seen.finished(probe.job_id, timeout=2) is not None:
            return
    raise RuntimeError("no job event arrived: are workers running?")


async def _submit_level(
    api: Api, concurrency: int, count: int, seconds: float
) -> tuple[list[Submitted], float]:
    """Up to ``count`` submissions by ``concurrency`` users for at most ``seconds``."""
    results: list[Submitted] = []
    counter = itertools.count()
    deadline = time.perf_counter() + seconds

    async def user() -> None:
        while next(counter) < count and time.perf_counter() < deadline:
            results.append(await api.submit())

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    return results, time.perf_counter() - started


async def run_submit(target: Target, options: Options, report: Report) -> None:
    """Throughput of generateImage at each concurrency, workers running."""
    api = target.api
    levels: list[dict[str, Any]] = []
    rows: list[Row] = []
    for concurrency in options.submit_concurrency:
        await api.warm(concurrency)
        cpu_before = target.api_cpu_seconds()
        results, elapsed = await _submit_level(
            api, concurrency, options.submit_requests, options.submit_seconds
        )
        api_cpu = cpu_ms_per(cpu_before, target.api_cpu_seconds(), len(results))
        ok = [r for r in results if r.error is None]
        errors = sorted({r.error for r in results if r.error is not None})
        latency = summarize([r.latency_ms for r in results])
        settled = await api.wait_idle(since(), SETTLE_TIMEOUT)
        level = {
            "concurrency": concurrency,
            "requests": len(results),
            "ok": len(ok),
            "errors": len(results) - len(ok),
            "error_kinds": errors[:5],
            "seconds": round(elapsed, 3),
            "jobs_per_s": rate(len(ok), elapsed),
            "latency_ms": latency,
            "api_cpu_ms_per_request": api_cpu,
            "settled": settled,
        }
        levels.append(level)
        rows.append(
            Row(
                f"submit c={concurrency}",
                str(len(results)),
                f"{level['jobs_per_s']:,.0f} jobs/s",
                latency["p50"],
                latency["p99"],
                f"errors {level['errors']}" + cpu_note("api", api_cpu),
            )
        )
    report.add("submit", {"levels": levels}, rows)


async def _sequential(
    target: Target, seen: Seen, count: int, follow: GraphQLSocket | None
) -> list[dict[str, Any]]:
    """Submit ``count`` jobs one after another, each once the previous one finished."""
    samples: list[dict[str, Any]] = []
    finished_via_follow: dict[str, asyncio.Future[float]] = {}

    def on_follow(message: dict[str, Any], now: float, wall: float) -> None:
        job = field_of(message)
        waiter = finished_via_follow.get(str(message.get("id")))
        if job is not None and job["status"] in TERMINAL and waiter and not waiter.done():
            waiter.set_result(now)

    listener = asyncio.create_task(follow.listen(on_follow)) if follow else None
    try:
        for _ in range(count):
            submitted = await target.api.submit()
            if submitted.job_id is None:
                samples.append({"error": submitted.error})
                continue
            followed: asyncio.Future[float] | None = None
            if follow is not None:
                followed = asyncio.get_running_loop().create_future()
                finished_via_follow[submitted.job_id] = followed
                await follow.subscribe(submitted.job_id, FOLLOW, {"id": submitted.job_id})
            done = await seen.finished(submitted.job_id, timeout=30)
            sample: dict[str, Any] = {"submitted": submitted, "finished": done}
            if followed is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):
                        sample["followed"] = await followed
                finished_via_follow.pop(submitted.job_id, None)
            samples.append(sample)
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    return samples


def _server_ms(event: dict[str, Any] | None) -> float | None:
    if not event or not event.get("startedAt"):
        return None
    started = datetime.fromisoformat(event["startedAt"])
    return (started - datetime.fromisoformat(event["createdAt"])).total_seconds() * 1000


async def run_pickup(target: Target, options: Options, report: Report) -> None:
    """From the mutation's response to RUNNING on a jobEvents socket opened beforehand."""
    async with watching(target, options, ["RUNNING", *TERMINAL]) as seen:
        samples = await _sequential(target, seen, options.pickup_jobs, None)
    pickup, server, early, missing, errors = [], [], 0, 0, 0
    for sample in samples:
        submitted = sample.get("submitted")
        if submitted is None:
            errors += 1
            continue
        running = seen.times.get((submitted.job_id, "RUNNING"))
        if running is None:
            missing += 1  # coalesced into a later state, or never ran
            continue
        if running < submitted.answered:
            early += 1  # the worker was faster than the response: nothing to wait for
        pickup.append(max(0.0, running - submitted.answered) * 1000)
        server_ms = _server_ms(seen.events.get((submitted.job_id, "RUNNING")))
        if server_ms is not None:
            server.append(server_ms)
    latency = summarize(pickup)
    details: dict[str, Any] = {
        "jobs": len(samples),
        "latency_ms": latency,
        "running_before_response": early,
        "running_not_seen": missing,
        "errors": errors,
        "server_started_minus_created_ms": summarize(server),
    }
    server_p50 = details["server_started_minus_created_ms"]["p50"]
    notes = f"RUNNING before response {early}; server startedAt−createdAt p50 {server_p50} ms"
    report.add(
        "pickup",
        details,
        [
            Row(
                "pickup",
                str(len(samples)),
                f"{len(pickup)} seen",
                latency["p50"],
                latency["p99"],
                notes,
            )
        ],
    )


async def run_e2e(target: Target, options: Options, report: Report) -> None:
    """Submit → SUCCEEDED: on a jobEvents socket open before the job, and on jobUpdated
    subscribed after the response (what a typical client does)."""
    follow = await GraphQLSocket.open(target.url_ws, options.key, options.compression)
    try:
        async with watching(target, options, list(TERMINAL)) as seen:
            samples = await _sequential(target, seen, options.e2e_jobs, follow)
    finally:
        await follow.close()
    events, followed, failed, errors = [], [], 0, 0
    for sample in samples:
        submitted = sample.get("submitted")
        if submitted is None:
            errors += 1
            continue
        if (submitted.job_id, "SUCCEEDED") not in seen.times:
            failed += 1
            continue
        events.append((seen.times[submitted.job_id, "SUCCEEDED"] - submitted.sent) * 1000)
        if "followed" in sample:
            followed.append((sample["followed"] - submitted.sent) * 1000)
    details: dict[str, Any] = {
        "jobs": len(samples),
        "latency_ms": summarize(events),
        "follow_latency_ms": summarize(followed),
        "not_succeeded": failed,
        "errors": errors,
    }
    ev, fo = details["latency_ms"], details["follow_latency_ms"]
    report.add(
        "e2e",
        details,
        [
            Row(
                "end to end (jobEvents)",
                str(len(samples)),
                f"{len(events)} succeeded",
                ev["p50"],
                ev["p99"],
                f"not succeeded {failed}, errors {errors}",
            ),
            Row(
                "end to end (jobUpdated after response)",
                str(len(samples)),
                f"{len(followed)} succeeded",
                fo["p50"],
                fo["p99"],
                "subscribes once the id is known",
            ),
        ],
    )


async def submit_many(api: Api, count: int, concurrency: int) -> list[Submitted]:
    results: list[Submitted] = []
    counter = itertools.count()

    async def user() -> None:
        while next(counter) < count:
            results.append(await api.submit())

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return results


async def run_drain(target: Target, options: Options, report: Report) -> None:
    """N jobs queued while workers are stopped; time from resuming them to the last SUCCEEDED."""
    async with watching(target, options, list(TERMINAL)) as seen:
        if target.can_pause:
            with target.workers_paused():
                submitted = await submit_many(target.api, options.drain_jobs, 32)
                cpu_before = target.worker_cpu_seconds()
                started = time.perf_counter()
        else:
            cpu_before = None  # the workers take jobs while they are submitted
            started = time.perf_counter()
            submitted = await submit_many(target.api, options.drain_jobs, 32)
        ids = [s.job_id for s in submitted if s.job_id is not None]
        ends = await asyncio.gather(*(seen.finished(i, SETTLE_TIMEOUT) for i in ids))
        worker_cpu = cpu_ms_per(cpu_before, target.worker_cpu_seconds(), len(ids))
    finished = [t for t in ends if t is not None]
    succeeded = sum(1 for i in ids if (i, "SUCCEEDED") in seen.times)
    elapsed = (max(finished) - started) if finished else 0.0
    workers = target.workers
    per_second = rate(succeeded, elapsed)
    details = {
        "jobs": len(ids),
        "submit_errors": len(submitted) - len(ids),
        "succeeded": succeeded,
        "not_finished": len(ids) - len(finished),
        "seconds": round(elapsed, 3),
        "jobs_per_s": per_second,
        "workers": workers,
        "jobs_per_s_per_worker": round(per_second / workers, 1) if workers else None,
        "workers_paused_while_queueing": target.can_pause,
        "worker_cpu_ms_per_job": worker_cpu,
    }
    per_worker = (
        f"{details['jobs_per_s_per_worker']:,.0f}/worker × {workers}" if workers else "workers ?"
    )
    report.add(
        "drain",
        details,
        [
            Row(
                "drain",
                str(len(ids)),
                f"{per_second:,.0f} jobs/s",
                None,
                None,
                f"{per_worker}; {elapsed:.2f} s" + cpu_note("worker", worker_cpu),
            )
        ],
    )
