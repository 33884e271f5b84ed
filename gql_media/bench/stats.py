"""Summaries of measurements and the printed results table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """count, p50, p90, p99, max and mean of ``values`` (milliseconds), rounded to µs."""
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 50), 3),
        "p90": round(percentile(ordered, 90), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3),
        "mean": round(sum(ordered) / len(ordered), 3),
    }


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    n: str
    result: str
    p50: float | None = None
    p99: float | None = None
    notes: str = ""


@dataclass
class Report:
    """Everything a run measured: rows for the table, details for the JSON file."""

    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, details: dict[str, Any], rows: list[Row]) -> None:
        self.details[name] = details
        self.rows.extend(rows)


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def render_table(rows: Sequence[Row]) -> str:
    """The results table."""
    header = ("scenario", "n", "result", "p50 ms", "p99 ms", "notes")
    lines = [(r.scenario, r.n, r.result, _ms(r.p50), _ms(r.p99), r.notes or "") for r in rows]
    return markdown_table(header, lines)


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """A Markdown table: readable in a terminal and ready to paste."""
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), separator, *(fmt(line) for line in lines)])


def cpu_ms_per(before: float | None, after: float | None, count: int) -> float | None:
    """CPU milliseconds per item between two readings of a process's CPU time."""
    if before is None or after is None or count <= 0:
        return None
    return round((after - before) * 1000 / count, 2)


def cpu_note(process: str, ms: float | None) -> str:
    return f"; {process} CPU {ms:.2f} ms/job" if ms is not None else ""


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0
