"""``gql-media bench --local`` with tiny counts against real PostgreSQL and Redis.

Checks the shape and the bookkeeping of the results (every event delivered, every job
accounted for), never the timings.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gql_media.bench.compare import run_compare
from gql_media.bench.options import OptionsError, build_options
from gql_media.bench.runner import SCENARIOS, run, warm_up
from gql_media.cli import build_parser
from tests.conftest import INTEGRATION, TEST_REDIS_URL, _admin, _with_database

ROOT = Path(__file__).resolve().parent.parent

TINY = [
    "--submit-concurrency", "1,4",
    "--submit-requests", "8",
    "--pickup-jobs", "3",
    "--e2e-jobs", "3",
    "--drain-jobs", "10",
    "--fanout-connections", "8",
    "--events-connections", "4",
    "--events-rate", "10",
    "--events-seconds", "0.5",
    "--fanout-timeout", "15",
    "--image-megapixels", "0.3",
    "--image-repeat", "1",
    "--schedule-jobs", "3000",
    "--schedule-owners", "50",
    "--schedule-picks", "200",
]  # fmt: skip


def parse(*argv: str) -> Any:
    return build_parser().parse_args(["bench", *argv])


def assert_latencies(summary: dict[str, Any], count: int, positive: bool = True) -> None:
    assert summary["count"] == count, summary
    assert summary["p50"] is not None and summary["p99"] >= summary["p50"]
    assert summary["p50"] > 0 if positive else summary["p50"] >= 0


def test_refuses_without_a_deployment() -> None:
    with pytest.raises(OptionsError, match="--url"):
        build_options(parse(), env={})


def test_scenarios_can_be_chosen_by_name_or_letter() -> None:
    args = parse("--embedded", "--only", "e,a,images")
    assert build_options(args, env={}).only == (
        "submit",
        "fanout-updated",
        "fanout-events",
        "images",
    )


@pytest.mark.integration
@pytest.mark.skipif(not INTEGRATION, reason="needs PostgreSQL and Redis")
@pytest.mark.timeout(90)
async def test_local_bench_reports_every_scenario(postgres_url: str, tmp_path: Path) -> None:
    assert TEST_REDIS_URL is not None
    out = tmp_path / "bench.json"
    args = parse(
        "--local",
        "--database-url", postgres_url,
        "--redis-url", TEST_REDIS_URL,
        "--client-procs", "2",
        "--json", str(out),
        *TINY,
    )  # fmt: skip
    result = await run(build_options(args, env={}))
    out.write_text(json.dumps(result))
    scenarios = json.loads(out.read_text())["scenarios"]
    assert set(scenarios) == {
        "submit",
        "pickup",
        "e2e",
        "drain",
        "fanout_updated",
        "fanout_events",
        "images",
        "scheduler",
    }

    for level in scenarios["submit"]["levels"]:
        assert level["ok"] == level["requests"] == 8 and level["errors"] == 0
        assert level["jobs_per_s"] > 0 and level["settled"]
        # read from /proc of the api started here; in clock ticks, so 8 requests may read 0
        assert level["api_cpu_ms_per_request"] is not None
        assert level["api_cpu_ms_per_request"] >= 0
        assert_latencies(level["latency_ms"], 8)

    pickup = scenarios["pickup"]
    assert pickup["errors"] == 0 and pickup["running_not_seen"] == 0
    assert_latencies(pickup["latency_ms"], 3, positive=False)

    e2e = scenarios["e2e"]
    assert e2e["errors"] == 0 and e2e["not_succeeded"] == 0
    assert_latencies(e2e["latency_ms"], 3)
    assert_latencies(e2e["follow_latency_ms"], 3)

    drain = scenarios["drain"]
    assert drain["succeeded"] == drain["jobs"] == 10 and drain["not_finished"] == 0
    assert drain["workers"] == 1 and drain["jobs_per_s_per_worker"] > 0
    # the worker's CPU while it drained (clock ticks: a tiny drain may read 0)
    assert drain["worker_cpu_ms_per_job"] is not None
    assert drain["worker_cpu_ms_per_job"] >= 0

    updated = scenarios["fanout_updated"]
    assert updated["connected"] == 8 and updated["failed"] == 0
    assert updated["delivered"] == updated["expected"] == 8
    assert updated["rss"]["measured"] and updated["rss"]["per_connection_kib"] is not None
    assert updated["terminal_latency_ms"]["count"] == 8

    events = scenarios["fanout_events"]
    assert events["jobs"] == 5 and events["connected"] == 4
    assert events["delivered"] == events["expected"] == 4 * 5
    assert events["terminal_latency_ms"]["count"] == 20

    scheduler = scenarios["scheduler"]
    assert scheduler["jobs"] == 3000 and scheduler["owners"] == 50
    assert_latencies(scheduler["start_ms"], 200)
    assert scheduler["in_flight_at_end"] == scheduler["slots"]  # every freed slot was refilled

    for op in scenarios["images"]["ops"]:
        assert op["service_ms"] > 0 and op["pillow_ms"] > 0
        assert op["service_bytes"] > 0 and op["pillow_bytes"] > 0
        assert op["isolated_ms"] > 0 and op["isolated_bytes"] == op["service_bytes"]


# -- comparing two builds -------------------------------------------------------------------


def test_a_baseline_is_compared_only_where_both_builds_can_run(tmp_path: Path) -> None:
    env = {"GQL_MEDIA_DATABASE_URL": "postgresql+asyncpg://h/a", "GQL_MEDIA_REDIS_URL": "redis://h"}
    tree = tmp_path / "tree"
    (tree / "gql_media").mkdir(parents=True)
    (tree / "gql_media" / "__main__.py").write_text("")
    other_db = ["--baseline-database-url", "postgresql+asyncpg://h/b"]
    refusals = {
        "use --local": parse("--embedded", "--baseline", str(tree), *other_db),
        "not a source tree": parse("--local", "--baseline", str(tmp_path), *other_db),
        "database of its own": parse("--local", "--baseline", str(tree)),
        "images, scheduler run in the bench itself": parse(
            "--local", "--baseline", str(tree), *other_db, "--only", "submit,images,scheduler"
        ),
    }
    for message, args in refusals.items():
        with pytest.raises(OptionsError, match=message):
            build_options(args, env=env)
    options = build_options(
        parse("--local", "--baseline", str(tree), *other_db, "--only", "a,d", "--rounds", "3"),
        env=env,
    )
    assert options.baseline == tree.resolve() and options.rounds == 3
    assert options.only == ("submit", "drain")


@pytest.fixture
def scratch_database(postgres_url: str) -> Iterator[str]:
    """An empty database of its own (the baseline migrates it with its own migrations)."""
    name = f"gql_media_baseline_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(postgres_url, name)
    finally:
        asyncio.run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _marked_tree(root: Path, marks: Path) -> Path:
    """A copy of this build's source whose every process leaves a file in ``marks`` when it
    imports gql_media: the proof that a deployment ran from that tree."""
    tree = root / "baseline"
    shutil.copytree(
        ROOT / "gql_media", tree / "gql_media", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        ROOT / "alembic", tree / "alembic", ignore=shutil.ignore_patterns("__pycache__")
    )
    init = tree / "gql_media" / "__init__.py"
    marker = f"\nimport os as _os\nopen({str(marks)!r} + f'/{{_os.getpid()}}', 'w').close()\n"
    init.write_text(init.read_text() + marker)
    return tree


@pytest.mark.integration
@pytest.mark.skipif(not INTEGRATION, reason="needs PostgreSQL and Redis")
@pytest.mark.timeout(120)
async def test_two_builds_take_turns_on_every_scenario(
    postgres_url: str, scratch_database: str, tmp_path: Path
) -> None:
    assert TEST_REDIS_URL is not None
    marks = tmp_path / "marks"
    marks.mkdir()
    tree = _marked_tree(tmp_path, marks)
    args = parse(
        "--local",
        "--database-url", postgres_url,
        "--redis-url", TEST_REDIS_URL,
        "--baseline", str(tree),
        "--baseline-database-url", scratch_database,
        "--rounds", "2",
        "--only", "submit,pickup,e2e,drain",
        *TINY,
    )  # fmt: skip
    logged: list[str] = []
    result = await run_compare(build_options(args, env={}), SCENARIOS, warm_up, logged.append)

    # the baseline's migrate, api and worker ran from its tree; this build's did not
    assert len(list(marks.iterdir())) == 3
    # each scenario ran on one build and then at once on the other, the order turning round
    starts = [line for line in logged if line.endswith("…")]
    assert starts[:2] == [
        "bench: round 1, submit on this build …",
        "bench: round 1, submit on baseline …",
    ]
    assert "bench: round 2, submit on baseline …" in starts[8]
    assert "bench: round 2, submit on this build …" in starts[9]
    assert len(starts) == 2 * 2 * 4

    rows = {row["metric"]: row for row in result["comparison"]}
    assert set(rows) == {
        "submit c=1", "submit c=1 api CPU", "submit c=4", "submit c=4 api CPU",
        "pickup p50", "end to end p50", "drain", "drain worker CPU",
    }  # fmt: skip
    for name in ("submit c=4", "pickup p50", "end to end p50", "drain"):
        row = rows[name]
        assert len(row["this_build"]) == len(row["baseline"]) == len(row["ratios"]) == 2, row
        ours, base = row["this_build"], row["baseline"]
        assert row["ratios"] == [round(a / b, 4) for a, b in zip(ours, base, strict=True)]
        assert row["median_ratio"] == pytest.approx(sum(row["ratios"]) / 2, abs=1e-4)
    for round_ in result["rounds"]:
        for label in ("this build", "baseline"):
            assert round_[label]["drain"]["succeeded"] == 10, round_[label]["drain"]
    assert "| drain (jobs/s) " in result["table"]


def test_memory_per_socket_is_compared_on_the_first_round_alone() -> None:
    """An api's RSS keeps the high-water mark of the round before: only the first round's
    growth per socket is a measurement."""
    from gql_media.bench.compare import _summary

    def details(kib: float, p50: float) -> dict[str, Any]:
        return {"rss": {"per_connection_kib": kib}, "terminal_latency_ms": {"p50": p50}}

    rounds = [
        {"this build": {"fanout_updated": details(40.0, 10.0)},
         "baseline": {"fanout_updated": details(32.0, 8.0)}},
        {"this build": {"fanout_updated": details(0.5, 12.0)},
         "baseline": {"fanout_updated": details(9.0, 8.0)}},
    ]  # fmt: skip
    options = build_options(parse("--embedded"), env={})
    rows = {row["metric"]: row for row in _summary(options, rounds)}
    memory = rows["fan-out jobUpdated memory"]
    assert memory["this_build"] == [40.0] and memory["baseline"] == [32.0]
    assert memory["median_ratio"] == 1.25
    latency = rows["fan-out jobUpdated p50"]
    assert latency["ratios"] == [1.25, 1.5] and latency["median_ratio"] == 1.375
