"""Retention of time buckets, and the trending windows moved forward.

Three jobs, each a run of short transactions that is safe to repeat or to kill:

* **windows**: per trending counter and window, lock its edge (FOR UPDATE, so no flush
  is adding to the totals meanwhile), take the hourly buckets the edge passes out of the
  per-row totals, move the edge: one transaction, so an hour leaves a total exactly once.
* **hours into days**: hourly buckets older than the hourly retention move into their
  UTC day, a chunk at a time: each chunk's DELETE ... RETURNING and the upsert into
  ``counter_daily`` are one statement, so a chunk moves wholly or not at all, and a
  second run (or a concurrent one: SKIP LOCKED) finds only what is left. Sums stay equal.
* **days**: daily buckets older than the daily retention are dropped, a chunk at a time.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from .errors import sql_errors
from .registry import Registry
from .windows import SERIES, TRENDING_WINDOWS, WINDOWS, ensure_edge, total_column

HOURLY_RETENTION_DAYS = 14  # the default of COUNTERS_HOURLY_RETENTION_DAYS
# the longest trending window is 7 days: its hours must still be hourly when they leave it
MIN_HOURLY_RETENTION_DAYS = 8
DAILY_RETENTION_DAYS = 400
CHUNK_ROWS = 5_000  # buckets per transaction

EDGE_FOR_UPDATE = sa.text(
    """SELECT (extract(epoch FROM edge) / 3600)::bigint FROM counter_window_edges
    WHERE scope = :scope AND tbl = :tbl AND col = :col AND win = :win FOR UPDATE"""
)


@functools.lru_cache(maxsize=len(TRENDING_WINDOWS))
def subtract(name: str) -> sa.TextClause:
    """What the hours in [edge, new edge) added to each row's total of window ``name``."""
    column = total_column(name)
    return sa.text(
        f"""UPDATE counter_trending_totals t SET {column} = t.{column} - g.n
    FROM (SELECT row_id, sum(n) AS n FROM counter_hourly
          WHERE scope = :scope AND tbl = :tbl AND col = :col
            AND hour >= to_timestamp(:edge * 3600) AND hour < to_timestamp(:new * 3600)
          GROUP BY row_id ORDER BY row_id) g
    WHERE t.series = {SERIES} AND t.row_id = g.row_id"""
    )


# rows left with nothing in any trending window
DROP_EMPTY = sa.text(
    f"""DELETE FROM counter_trending_totals WHERE series = {SERIES}
    AND {" AND ".join(f"{total_column(name)} <= 0" for name in TRENDING_WINDOWS)}"""
)
MOVE_EDGE = sa.text(
    """UPDATE counter_window_edges SET edge = to_timestamp(:new * 3600)
    WHERE scope = :scope AND tbl = :tbl AND col = :col AND win = :win"""
)
HOURS_INTO_DAYS = sa.text(
    """WITH old AS (
        SELECT scope, tbl, col, row_id, hour FROM counter_hourly
        WHERE scope = :scope AND tbl = :tbl AND col = :col
          AND hour < to_timestamp(:cutoff * 3600)
        ORDER BY hour LIMIT :chunk FOR UPDATE SKIP LOCKED),
    moved AS (
        DELETE FROM counter_hourly h USING old
        WHERE h.scope = old.scope AND h.tbl = old.tbl AND h.col = old.col
          AND h.row_id = old.row_id AND h.hour = old.hour
        RETURNING h.scope, h.tbl, h.col, h.row_id, (h.hour AT TIME ZONE 'UTC')::date AS day, h.n),
    added AS (
        INSERT INTO counter_daily AS d (scope, tbl, col, row_id, day, n)
        SELECT scope, tbl, col, row_id, day, sum(n) FROM moved
        GROUP BY scope, tbl, col, row_id, day ORDER BY scope, tbl, col, row_id, day
        ON CONFLICT (scope, tbl, col, row_id, day) DO UPDATE SET n = d.n + EXCLUDED.n
        RETURNING 1)
    SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM added)"""
)
DROP_DAYS = sa.text(
    """DELETE FROM counter_daily WHERE ctid IN (
        SELECT ctid FROM counter_daily WHERE scope = :scope AND day < :cutoff
        LIMIT :chunk FOR UPDATE SKIP LOCKED)"""
)

Hook = Callable[[str, int], None]  # (stage, chunk number): "windows", "hours", "days"


@dataclass
class RetentionResult:
    windows_moved: dict[str, int] = field(default_factory=dict)  # "table.col/win" -> hours
    hours_rolled: int = 0  # hourly buckets moved into days
    days_dropped: int = 0
    chunks: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Retention:
    def __init__(self, sql: sa.Engine, registry: Registry, scope: str, hook: Hook | None = None):
        self.sql = sql
        self.registry = registry
        self.scope = scope
        self.hook = hook

    def _stage(self, stage: str, n: int) -> None:
        if self.hook is not None:
            self.hook(stage, n)

    def run(
        self, now_hour: int, hourly_days: int = HOURLY_RETENTION_DAYS, chunk: int = CHUNK_ROWS
    ) -> RetentionResult:
        """Move the trending windows to ``now_hour``, roll hours older than
        ``hourly_days`` into days, drop days older than DAILY_RETENTION_DAYS."""
        if hourly_days < MIN_HOURLY_RETENTION_DAYS:
            raise ValueError(f"hourly retention must be at least {MIN_HOURLY_RETENTION_DAYS} days")
        result = RetentionResult()
        for counter in self.registry:
            if counter.trending:
                for name in TRENDING_WINDOWS:
                    moved = self._move_edge(counter, name, now_hour)
                    result.windows_moved[f"{counter.name}/{name}"] = moved
                    self._stage("windows", moved)
        cutoff = now_hour - now_hour % 24 - hourly_days * 24  # whole UTC days stay together
        for counter in self.registry:
            if counter.bucketed:
                params = {"scope": self.scope, "tbl": counter.table, "col": counter.column}
                while True:
                    with sql_errors("roll hours into days"), self.sql.begin() as conn:
                        moved, _ = conn.execute(
                            HOURS_INTO_DAYS, {**params, "cutoff": cutoff, "chunk": chunk}
                        ).one()
                    if not moved:
                        break
                    result.hours_rolled += moved
                    result.chunks += 1
                    self._stage("hours", result.chunks)
        last_day = dt.date(1970, 1, 1) + dt.timedelta(hours=now_hour)
        oldest = last_day - dt.timedelta(days=DAILY_RETENTION_DAYS)
        while True:
            with sql_errors("drop old days"), self.sql.begin() as conn:
                params = {"scope": self.scope, "cutoff": oldest, "chunk": chunk}
                dropped = conn.execute(DROP_DAYS, params).rowcount
            if not dropped:
                break
            result.days_dropped += dropped
            result.chunks += 1
            self._stage("days", result.chunks)
        return result

    def _move_edge(self, counter, name: str, now_hour: int) -> int:
        """Move one window's edge to where ``now_hour`` puts it; the hours it passed."""
        new = WINDOWS[name].first_hour(now_hour)
        params = {"scope": self.scope, "tbl": counter.table, "col": counter.column, "win": name}
        with sql_errors("move window edge"), self.sql.begin() as conn:
            edge = conn.execute(EDGE_FOR_UPDATE, params).scalar()
            if edge is None:
                ensure_edge(conn, params, new)
                return 0
            if new <= edge:
                return 0
            conn.execute(subtract(name), {**params, "edge": edge, "new": new})
            conn.execute(DROP_EMPTY, params)
            conn.execute(MOVE_EDGE, {**params, "new": new})
        return new - edge
