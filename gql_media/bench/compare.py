"""Two builds measured in one run: ``--local`` deployments of this build and of a baseline
source tree, running side by side, take turns on every scenario.

On a shared machine the same build's rates move by a quarter between runs minutes apart,
so two separate runs cannot tell a 10% difference. Here both deployments are up for the
whole run and each scenario runs on one, then at once on the other, in the order
A B, B A, A B, … round after round; drift in the machine touches both alike. Each round
gives a ratio per metric, and the table reports the median ratio and its range.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any

from gql_media.bench.options import Options
from gql_media.bench.stats import Report, markdown_table
from gql_media.bench.target import Scenario, Target, open_target

LABELS = ("this build", "baseline")


@dataclass(frozen=True)
class Metric:
    """A number read from one scenario's details; ``higher``: more is better."""

    name: str
    unit: str
    higher: bool
    read: Callable[[dict[str, Any]], float | None]
    # read in the first round alone: an api's RSS keeps the high-water mark of the round
    # before, so later rounds' growth per socket says nothing
    first_round: bool = False


def _path(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def read(details: dict[str, Any]) -> float | None:
        value: Any = details
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return float(value) if isinstance(value, int | float) else None

    return read


def _level(concurrency: int, key: str) -> Callable[[dict[str, Any]], float | None]:
    def read(details: dict[str, Any]) -> float | None:
        for level in details.get("levels", []):
            if level.get("concurrency") == concurrency:
                return _path(key)(level)
        return None

    return read


def metrics(scenario: str, options: Options) -> list[Metric]:
    """What is compared for ``scenario`` (a key of the report's details)."""
    if scenario == "submit":
        found: list[Metric] = []
        for c in options.submit_concurrency:
            found.append(Metric(f"submit c={c}", "jobs/s", True, _level(c, "jobs_per_s")))
            found.append(
                Metric(
                    f"submit c={c} api CPU",
                    "ms/request",
                    False,
                    _level(c, "api_cpu_ms_per_request"),
                )
            )
        return found
    table: dict[str, list[Metric]] = {
        "pickup": [Metric("pickup p50", "ms", False, _path("latency_ms", "p50"))],
        "e2e": [Metric("end to end p50", "ms", False, _path("latency_ms", "p50"))],
        "drain": [
            Metric("drain", "jobs/s", True, _path("jobs_per_s")),
            Metric("drain worker CPU", "ms/job", False, _path("worker_cpu_ms_per_job")),
        ],
        "fanout_updated": [
            Metric(
                "fan-out jobUpdated memory",
                "KiB/socket",
                False,
                _path("rss", "per_connection_kib"),
                first_round=True,
            ),
            Metric("fan-out jobUpdated p50", "ms", False, _path("terminal_latency_ms", "p50")),
        ],
        "fanout_events": [
            Metric("fan-out jobEvents p50", "ms", False, _path("terminal_latency_ms", "p50")),
        ],
    }
    return table.get(scenario, [])


def baseline_options(options: Options) -> Options:
    """The options of the baseline's deployment: its tree, database, Redis and logs."""
    assert options.baseline is not None and options.baseline_database_url is not None
    return replace(
        options,
        tree=options.baseline,
        database_url=options.baseline_database_url,
        redis_url=options.baseline_redis_url or options.redis_url,
        namespace=None,
        log_dir=options.log_dir / "baseline" if options.log_dir else None,
    )


def _summary(options: Options, rounds: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per metric: each build's values, the median of both, and the ratios of the rounds."""
    rows: list[dict[str, Any]] = []
    for scenario in rounds[0][LABELS[0]]:
        for metric in metrics(scenario, options):
            read = rounds[:1] if metric.first_round else rounds
            ours = [metric.read(r[LABELS[0]].get(scenario, {})) for r in read]
            base = [metric.read(r[LABELS[1]].get(scenario, {})) for r in read]
            ratios = [
                a / b
                for a, b in zip(ours, base, strict=True)
                if a is not None and b is not None and b > 0
            ]
            rows.append(
                {
                    "metric": metric.name,
                    "unit": metric.unit,
                    "higher_is_better": metric.higher,
                    "this_build": ours,
                    "baseline": base,
                    "ratios": [round(r, 4) for r in ratios],
                    "median_ratio": round(statistics.median(ratios), 4) if ratios else None,
                }
            )
    return rows


def _median(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.median(present):,.2f}" if present else "–"


def _percent(ratio: float) -> int:
    return round((ratio - 1) * 100)


def _change(ratio: float) -> str:
    return f"{_percent(ratio):+d}%"


def _span(low: float, high: float) -> str:
    return f"{_change(low)} … {_change(high)}"


def _quartiles(ratios: list[float]) -> tuple[float, float]:
    """The first and third quartiles (the ratio itself when there is one)."""
    if len(ratios) < 2:
        return ratios[0], ratios[0]
    first, _, third = statistics.quantiles(ratios, n=4, method="inclusive")
    return first, third


def render_comparison(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: per metric, the medians, the change (median of the rounds' ratios,
    this build against the baseline), where the middle half of those ratios lie and their
    whole range."""
    header = ("metric", "this build", "baseline", "change", "middle half", "all rounds", "better")
    lines = []
    for row in rows:
        ratios = row["ratios"]
        median = row["median_ratio"]
        better = "–"
        if median is not None and _percent(median) != 0:
            better = "this build" if (median > 1) == row["higher_is_better"] else "baseline"
        lines.append(
            (
                f"{row['metric']} ({row['unit']})",
                _median(row["this_build"]),
                _median(row["baseline"]),
                _change(median) if median is not None else "–",
                _span(*_quartiles(ratios)) if ratios else "–",
                _span(min(ratios), max(ratios)) if ratios else "–",
                better,
            )
        )
    return markdown_table(header, lines)


async def run_compare(
    options: Options,
    scenarios: dict[str, Scenario],
    warm_up: Callable[[Target], Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every chosen scenario, ``options.rounds`` times on each build, taking turns."""
    chosen = [name for name in options.only if name in scenarios]
    rounds: list[dict[str, dict[str, Any]]] = []
    async with AsyncExitStack() as stack:
        targets = {
            LABELS[0]: await stack.enter_async_context(open_target(options)),
            LABELS[1]: await stack.enter_async_context(open_target(baseline_options(options))),
        }
        for target in targets.values():
            await warm_up(target)
        for index in range(options.rounds):
            reports = {label: Report() for label in LABELS}
            for name in chosen:
                order = LABELS if index % 2 == 0 else LABELS[::-1]
                for label in order:
                    log(f"bench: round {index + 1}, {name} on {label} …")
                    began = time.perf_counter()
                    await scenarios[name](targets[label], options, reports[label])
                    log(f"bench: {name} on {label} done in {time.perf_counter() - began:.1f} s")
            rounds.append({label: reports[label].details for label in LABELS})
    rows = _summary(options, rounds)
    return {
        "baseline": str(options.baseline),
        "rounds": rounds,
        "comparison": rows,
        "table": render_comparison(rows),
    }
