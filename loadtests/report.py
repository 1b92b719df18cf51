"""Read Locust's CSV output and format the run's report."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    method: str
    name: str
    requests: int
    failures: int
    p50: str
    p95: str
    p99: str
    rps: float


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def endpoint_stats(prefix: Path) -> tuple[list[Row], Row | None]:
    """Per-endpoint rows and the aggregated one from ``<prefix>_stats.csv``."""
    rows, total = [], None
    for r in _rows(Path(f"{prefix}_stats.csv")):
        row = Row(
            r["Type"],
            r["Name"],
            int(r["Request Count"]),
            int(r["Failure Count"]),
            r["50%"],
            r["95%"],
            r["99%"],
            float(r["Requests/s"]),
        )
        if r["Name"] == "Aggregated":
            total = row
        else:
            rows.append(row)
    return rows, total


def failures(prefix: Path) -> list[tuple[int, str, str, str]]:
    """``(occurrences, method, name, error)`` from ``<prefix>_failures.csv``."""
    out = []
    for r in _rows(Path(f"{prefix}_failures.csv")):
        out.append((int(r["Occurrences"]), r["Method"], r["Name"], r["Error"]))
    return sorted(out, reverse=True)


def exceptions(prefix: Path) -> list[tuple[int, str]]:
    return [(int(r["Count"]), r["Message"]) for r in _rows(Path(f"{prefix}_exceptions.csv"))]


def endpoint_table(rows: list[Row], total: Row | None) -> list[str]:
    width = max([len(r.name) for r in rows] + [20])
    head = f"  {'endpoint':<{width}} {'reqs':>7} {'fails':>5} {'req/s':>7}"
    head += f" {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    lines = [head]
    for r in sorted(rows, key=lambda r: -r.requests) + ([total] if total else []):
        label = "all endpoints" if r is total else r.name  # names start with the method
        lines.append(
            f"  {label:<{width}} {r.requests:>7} {r.failures:>5} {r.rps:>7.1f}"
            f" {r.p50:>7} {r.p95:>7} {r.p99:>7}"
        )
    return lines
