"""Time windows over bucketed counters: which windows exist and where each one starts.

A bucket is one UTC hour (``keys.hour_of``: whole hours since the epoch) of one row's
counter. Windows end with the current bucket: ``24h`` is the current hour and the 23
before it, ``7d`` the last 168 hours, ``30d`` the current UTC day and the 29 before it,
per day. Hours older than the hourly retention are kept per day (engine/retention.py).

Trending windows (``24h``, ``7d``) also keep a per-row total from an edge on
(``counter_window_edges``): the flush adds each batch to it (engine/buckets.py), the
retention task moves the edge forward and takes the hours it passes out of the totals.
A row's totals of every trending window are one row of ``counter_trending_totals``
(a column per window: :func:`total_column`), keyed by its counter's number in
``counter_series``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from .errors import UnknownWindow
from .keys import HOUR_MS, hour_of
from .registry import Registry

HOUR_S = HOUR_MS // 1000


@dataclass(frozen=True)
class Window:
    """``buckets`` buckets of one ``step`` ("hour" or "day"), the last one current."""

    name: str
    buckets: int
    step: str

    @property
    def step_hours(self) -> int:
        return 24 if self.step == "day" else 1

    def first_hour(self, now_hour: int) -> int:
        """The hour the window's first bucket starts at, the current hour being
        ``now_hour``."""
        current = now_hour - now_hour % self.step_hours
        return current - (self.buckets - 1) * self.step_hours


WINDOWS = {
    w.name: w
    for w in (Window("24h", 24, "hour"), Window("7d", 168, "hour"), Window("30d", 30, "day"))
}
TRENDING_WINDOWS = ("24h", "7d")


def total_column(name: str) -> str:
    """The column of ``counter_trending_totals`` that holds trending window ``name``."""
    if name not in TRENDING_WINDOWS:
        raise UnknownWindow(f"{name!r} is not a trending window")
    return "n_" + name


# The number of a counter (scope, table, column) in counter_series, as a scalar subquery.
SERIES = "(SELECT series FROM counter_series WHERE scope = :scope AND tbl = :tbl AND col = :col)"


def window(name: str, trending: bool = False) -> Window:
    """The window called ``name``; UnknownWindow if there is none (of the trending ones,
    with ``trending``)."""
    names = TRENDING_WINDOWS if trending else tuple(WINDOWS)
    if name not in names:
        raise UnknownWindow(f"unknown window {name!r}: use one of {', '.join(names)}")
    return WINDOWS[name]


def current_hour(now_s: float | None = None) -> int:
    return hour_of(int((time.time() if now_s is None else now_s) * 1000))


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * HOUR_S, tz=timezone.utc)


ENSURE_SERIES = sa.text(
    """INSERT INTO counter_series (scope, tbl, col)
    SELECT :scope, :tbl, :col WHERE NOT EXISTS (SELECT 1 FROM counter_series
        WHERE scope = :scope AND tbl = :tbl AND col = :col)
    ON CONFLICT (scope, tbl, col) DO NOTHING"""
)
ENSURE_EDGE = sa.text(
    """INSERT INTO counter_window_edges (scope, tbl, col, win, edge)
    VALUES (:scope, :tbl, :col, :win, to_timestamp(:edge * 3600))
    ON CONFLICT (scope, tbl, col, win) DO NOTHING"""
)


def ensure_edge(conn: sa.Connection, params: dict, edge: int) -> None:
    """Give one trending window of one counter (``params``: scope, tbl, col, win) its
    edge, and the counter its series number, if they have none yet."""
    conn.execute(ENSURE_SERIES, params)
    conn.execute(ENSURE_EDGE, {**params, "edge": edge})


def ensure_edges(conn: sa.Connection, scope: str, registry: Registry, now_hour: int) -> None:
    """Give every trending window of every trending counter its edge, if it has none yet
    (its totals count from then on). Committed before a flush adds to the totals."""
    for counter in registry:
        if not counter.trending:
            continue
        for name in TRENDING_WINDOWS:
            params = {"scope": scope, "tbl": counter.table, "col": counter.column, "win": name}
            ensure_edge(conn, params, WINDOWS[name].first_hour(now_hour))
