"""Fan-out scenarios: many WebSocket subscribers while jobs run.

(i) ``fanout-updated``: N sockets, each following its own job with ``jobUpdated``. With
worker processes started here, the workers are stopped while the jobs are queued and the
sockets subscribe, so every socket holds an idle subscription when the api's memory is
read; then the workers resume and every socket should see RUNNING and SUCCEEDED.

(ii) ``fanout-events``: N dashboard sockets on ``jobEvents`` while jobs are submitted at a
fixed rate; every socket should see every job's terminal event.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gql_media.bench.jobs import since, submit_many
from gql_media.bench.options import Options
from gql_media.bench.sockets import Clients, Plan
from gql_media.bench.stats import Report, Row, summarize
from gql_media.bench.target import Target

SETTLE = 1.0  # seconds for the api to finish its work on new sockets before memory is read


def _plan(kind: str, target: Target, options: Options, share: int, **what: Any) -> Plan:
    """One client process's plan: ``share`` sockets of ``kind``, following ``what``."""
    return Plan(
        kind=kind,
        base_url=target.url,
        key=options.key,
        compression=options.compression,
        connections=share,
        connect_concurrency=max(1, options.connect_concurrency // options.client_procs),
        **what,
    )


def _split(count: int, parts: int) -> list[int]:
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        key: sum(r[key] for r in results)
        for key in ("connected", "failed", "finished_early", "expected", "delivered", "events")
    }
    merged["latency_ms"] = summarize([x for r in results for x in r["latencies"]])
    merged["terminal_latency_ms"] = summarize([x for r in results for x in r["terminal_latencies"]])
    return merged


def _rss(target: Target, before: int | None, after: int | None, sockets: int) -> dict[str, Any]:
    if before is None or after is None:
        reason = "the api runs elsewhere (--url)" if target.mode == "url" else "unreadable"
        return {"measured": False, "note": f"api memory not measured: {reason}"}
    return {
        "measured": True,
        "before_kib": before,
        "after_kib": after,
        "per_connection_kib": round((after - before) / sockets, 1) if sockets else None,
    }


def _row(name: str, n: str, merged: dict[str, Any], rss: dict[str, Any], extra: str) -> Row:
    latency = merged["terminal_latency_ms"]
    memory = (
        f"api RSS {rss['per_connection_kib']} KiB/conn"
        if rss.get("measured")
        else "api RSS not measured"
    )
    return Row(
        name,
        n,
        f"{merged['delivered']:,}/{merged['expected']:,} delivered",
        latency["p50"],
        latency["p99"],
        f"{memory}; {extra}",
    )


async def run_fanout_updated(target: Target, options: Options, report: Report) -> None:
    count, procs = options.fanout_connections, options.client_procs
    before = target.api_rss_kib()
    created_after = since()
    paused = target.can_pause
    started = time.perf_counter()
    ids: list[str] = []
    if paused:
        target.pause_workers()
    clients: Clients | None = None
    try:
        if paused:
            submitted = await submit_many(target.api, count, 32)
            ids = [s.job_id for s in submitted if s.job_id is not None]
            await asyncio.sleep(SETTLE)
            before = target.api_rss_kib()  # after the mutations: only sockets differ
        plans = _updated_plans(target, options, ids, len(ids) if paused else count, paused)
        clients = Clients(plans, in_process=procs == 1)
        ready = await clients.gather(timeout=max(60.0, count / 50))
        connect_seconds = time.perf_counter() - started
        await asyncio.sleep(SETTLE)
        after = target.api_rss_kib()
        if paused:
            target.resume_workers()
            paused = False
        await clients.broadcast(("go", {"timeout": options.fanout_timeout}))
        results = await clients.gather(timeout=options.fanout_timeout + 30)
        unfinished = await target.api.unfinished(created_after)
    finally:
        if paused:
            target.resume_workers()
        if clients is not None:
            await clients.close()
    merged = _merge(results)
    rss = _rss(target, before, after, sum(r["connected"] for r in ready))
    _report_updated(report, target, options, merged, rss, connect_seconds, unfinished)


def _updated_plans(
    target: Target, options: Options, ids: list[str], count: int, paused: bool
) -> list[Plan]:
    """One client process's share of the ``count`` jobUpdated sockets each (of ``ids``,
    the jobs submitted beforehand while workers were paused)."""
    plans: list[Plan] = []
    offset = 0
    for share in _split(count, options.client_procs):
        plans.append(
            _plan(
                "updated",
                target,
                options,
                share,
                job_ids=tuple(ids[offset : offset + share]),
                job_ms=0 if paused else options.fanout_job_ms,
            )
        )
        offset += share
    return plans


def _report_updated(
    report: Report,
    target: Target,
    options: Options,
    merged: dict[str, Any],
    rss: dict[str, Any],
    connect_seconds: float,
    unfinished: int,
) -> None:
    count = options.fanout_connections
    details = {
        "connections": count,
        "client_procs": options.client_procs,
        "workers_paused_while_subscribing": target.can_pause,
        "connect_seconds": round(connect_seconds, 2),
        # jobs still QUEUED or RUNNING at the deadline: their sockets had nothing to deliver
        "jobs_unfinished_at_deadline": unfinished,
        **merged,
        "rss": rss,
    }
    extra = f"failed {merged['failed']}; connected in {connect_seconds:.0f} s"
    if unfinished:
        extra += f"; jobs unfinished at deadline {unfinished}"
    if merged["finished_early"]:
        extra += f", ended before subscribing {merged['finished_early']}"
    report.add(
        "fanout_updated",
        details,
        [_row("fan-out jobUpdated", f"{count:,} sockets", merged, rss, extra)],
    )


async def run_fanout_events(target: Target, options: Options, report: Report) -> None:
    count, procs = options.events_connections, options.client_procs
    before = target.api_rss_kib()
    job_filter = {"provider": "mock", "createdAfter": since()}
    plans = [
        _plan("events", target, options, share, job_filter=job_filter)
        for share in _split(count, procs)
    ]
    clients = Clients(plans, in_process=procs == 1)
    try:

        async def probe() -> None:
            await target.api.submit(prompt="bench probe")

        ready = await clients.gather(timeout=max(60.0, count / 50), probe=probe)
        await target.api.wait_idle(since(), 60)
        await asyncio.sleep(SETTLE)
        after = target.api_rss_kib()
        ids = await _submit_at_rate(target, options.events_rate, options.events_seconds)
        await clients.broadcast(("go", {"expect": ids, "timeout": options.fanout_timeout}))
        results = await clients.gather(timeout=options.fanout_timeout + 30)
    finally:
        await clients.close()
    merged = _merge(results)
    connected = sum(r["connected"] for r in ready)
    rss = _rss(target, before, after, connected)
    details = {
        "connections": count,
        "client_procs": procs,
        "jobs": len(ids),
        "rate": options.events_rate,
        **merged,
        "rss": rss,
    }
    report.add(
        "fanout_events",
        details,
        [
            _row(
                "fan-out jobEvents",
                f"{count:,} sockets × {len(ids)} jobs",
                merged,
                rss,
                f"{options.events_rate:g} jobs/s; events {merged['events']:,}",
            )
        ],
    )


async def _submit_at_rate(target: Target, per_second: float, seconds: float) -> list[str]:
    """Submit jobs on a fixed schedule (a slow response does not delay the next one)."""
    total = max(1, int(per_second * seconds))
    start = time.perf_counter()
    tasks = []
    for index in range(total):
        delay = start + index / per_second - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(target.api.submit()))
    results = await asyncio.gather(*tasks)
    return [r.job_id for r in results if r.job_id is not None]
