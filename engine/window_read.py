"""Live window reads: stored buckets plus the bucket deltas Postgres does not hold yet.

Like a live count (engine/live.py), a read takes one Redis snapshot per shard, then the
stored side in one Postgres snapshot (REPEATABLE READ) with the shard's ledger, and adds
a pending or inflight delta only while the ledger says its batch is still to come: a
view is in its window as soon as it is counted, and the window reads the same before and
after the flush that stores it.

Trending ranks rows by the totals the flush keeps (engine/buckets.py) plus every
unapplied bucket delta of the window, without summing buckets: the ``limit`` best stored
totals and the rows that have unapplied deltas are the only rows that can make the top
``limit`` (any other row has no more than the last of those stored totals, and nothing
pending).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from .buffer import Buffer, RoundTrip, Unapplied, _load
from .errors import redis_errors, sql_errors
from .keys import BUCKET_SEP, bucket_field, field
from .lineage import Base, Ledger
from .live import READ_ATTEMPTS, snapshot_consistent, unapplied_delta
from .registry import Counter
from .sqlarrays import int_array
from .windows import Window, hour_start

LEDGERS = sa.text(
    """SELECT shard, applied_seq, gen, base_seq, past_gens FROM counter_shards
    WHERE scope = :scope AND shard = ANY(CAST(:shards AS int[]))"""
)
HOURLY = sa.text(
    """SELECT (extract(epoch FROM hour) / 3600)::bigint, n FROM counter_hourly
    WHERE scope = :scope AND tbl = :tbl AND col = :col AND row_id = :id
      AND hour >= to_timestamp(:first * 3600)"""
)
DAILY = sa.text(
    """SELECT (day - date '1970-01-01') * 24, n FROM counter_daily
    WHERE scope = :scope AND tbl = :tbl AND col = :col AND row_id = :id
      AND day >= date '1970-01-01' + :first / 24"""
)
EDGE = sa.text(
    """SELECT (extract(epoch FROM edge) / 3600)::bigint FROM counter_window_edges
    WHERE scope = :scope AND tbl = :tbl AND col = :col AND win = :win"""
)


def _top(table: str) -> sa.TextClause:
    # walks counter_window_rank in order; rows deleted since are skipped
    return sa.text(
        f"""SELECT w.row_id, w.n FROM counter_window_totals w
        WHERE w.scope = :scope AND w.tbl = :tbl AND w.col = :col AND w.win = :win
          AND EXISTS (SELECT 1 FROM {table} t WHERE t.id = w.row_id)
        ORDER BY w.n DESC, w.row_id DESC LIMIT :limit"""
    )


def _totals_of(table: str) -> sa.TextClause:
    return sa.text(
        f"""SELECT t.id, coalesce(w.n, 0) FROM {table} t
        LEFT JOIN counter_window_totals w ON w.scope = :scope AND w.tbl = :tbl
         AND w.col = :col AND w.win = :win AND w.row_id = t.id
        WHERE t.id = ANY(CAST(:ids AS bigint[]))"""
    )


def _exists(table: str) -> sa.TextClause:
    return sa.text(f"SELECT 1 FROM {table} WHERE id = :id")


@dataclass(frozen=True)
class Series:
    """A row's counts per bucket of a window, oldest first, unflushed ones included."""

    window: str
    step: str  # "hour" or "day"
    buckets: list[tuple[datetime, int]]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.buckets)


def _ledgers(conn: sa.Connection, scope: str, shards: Iterable[int]) -> dict[int, Ledger]:
    rows = conn.execute(LEDGERS, {"scope": scope, "shards": int_array(shards)})
    return {r[0]: Ledger(r[1], r[2], r[3], tuple(r[4] or ())) for r in rows}


def _ledger(ledgers: dict[int, Ledger], shard: int) -> Ledger:
    return ledgers.get(shard, Ledger(0))


class WindowReader:
    def __init__(self, buffer: Buffer, sql: sa.Engine, scope: str) -> None:
        self.buffer = buffer
        self.sql = sql
        self.scope = scope
        self._buckets_script = buffer.redis.register_script(_load("buckets.lua"))

    def _snapshot(self) -> sa.Connection:
        """A connection whose transaction reads one snapshot (REPEATABLE READ)."""
        return self.sql.connect().execution_options(isolation_level="REPEATABLE READ")

    def series(self, counter: Counter, row_id: int, win: Window, now_hour: int) -> Series | None:
        """``counter`` of row ``row_id`` per bucket of ``win``; None if the row is gone."""
        shard = self.buffer.keys.shard_of(row_id)
        first = win.first_hour(now_hour)
        hours = list(range(first, now_hour + 1))
        names = [field(row_id, counter.code)]  # anchors the shard's snapshot
        names += [bucket_field(row_id, counter.code, h) for h in hours]
        where = {"scope": self.scope, "tbl": counter.table, "col": counter.column}
        where |= {"id": row_id, "first": first}
        for attempt in range(READ_ATTEMPTS):
            snap = self.buffer.unapplied({shard: names})[shard]
            with sql_errors(f"window of {counter.name}"), self._snapshot() as conn, conn.begin():
                if conn.execute(_exists(counter.table), {"id": row_id}).first() is None:
                    return None
                ledger = _ledger(_ledgers(conn, self.scope, [shard]), shard)
                stored = dict(conn.execute(HOURLY, where).all())
                if win.step == "day":
                    for hour, n in conn.execute(DAILY, where):
                        stored[hour] = stored.get(hour, 0) + n
            if snapshot_consistent(snap, ledger.applied_seq) or attempt == READ_ATTEMPTS - 1:
                break
        per_hour = dict(stored)
        for h in hours:
            late = unapplied_delta(snap, bucket_field(row_id, counter.code, h), ledger)
            if late:
                per_hour[h] = per_hour.get(h, 0) + late
        step = win.step_hours
        totals = dict.fromkeys(range(first, now_hour + 1, step), 0)
        for h, n in per_hour.items():
            start = h - h % step
            if start in totals:
                totals[start] += n
        return Series(win.name, win.step, [(hour_start(h), n) for h, n in totals.items()])

    def _unapplied_buckets(self, counter: Counter) -> dict[int, Unapplied]:
        """Per shard, every pending and inflight bucket delta of ``counter``."""
        marker = f":{counter.code}{BUCKET_SEP}"
        shards = range(self.buffer.keys.shards)
        with redis_errors("read buckets"):
            trip = RoundTrip(self.buffer.redis)
            for s in shards:
                trip.script(self._buckets_script, self.buffer.keys.shard_keys(s), [marker])
            replies = trip.execute()
        out = {}
        for s, (pending, inflight, iseq, last, pbase, ibase) in zip(shards, replies, strict=True):
            out[s] = Unapplied(
                pending=_pairs(pending),
                inflight=_pairs(inflight),
                inflight_seq=int(iseq) if iseq is not None else None,
                last_seq=int(last) if last is not None else None,
                pending_base=Base.parse(pbase),
                inflight_base=Base.parse(ibase),
            )
        return out

    def trending(
        self, counter: Counter, win: Window, limit: int, now_hour: int
    ) -> list[tuple[int, int]]:
        """The ``limit`` rows with the most ``counter`` in ``win``: ``[(id, count)]``,
        most first, then the highest id (the newest)."""
        where = {"scope": self.scope, "tbl": counter.table, "col": counter.column}
        where |= {"win": win.name, "limit": limit}
        keys = self.buffer.keys
        for attempt in range(READ_ATTEMPTS):
            snaps = self._unapplied_buckets(counter)
            with sql_errors(f"trending {counter.name}"), self._snapshot() as conn, conn.begin():
                ledgers = _ledgers(conn, self.scope, range(keys.shards))
                edge = conn.execute(EDGE, where).scalar()
                top = dict(conn.execute(_top(counter.table), where).all())
                first = win.first_hour(now_hour) if edge is None else edge
                late = self._late(snaps, ledgers, first)
                others = sorted(set(late) - set(top))
                if others:
                    params = {**where, "ids": int_array(others)}
                    top.update(conn.execute(_totals_of(counter.table), params).all())
            if attempt == READ_ATTEMPTS - 1 or all(
                snapshot_consistent(snaps[s], _ledger(ledgers, s).applied_seq) for s in snaps
            ):
                break
        ranked = [(row_id, n + late.get(row_id, 0)) for row_id, n in top.items()]
        ranked = [r for r in ranked if r[1] > 0]
        ranked.sort(key=lambda r: (-r[1], -r[0]))
        return ranked[:limit]

    def _late(self, snaps: dict[int, Unapplied], ledgers, first: int) -> dict[int, int]:
        """``{row id: unapplied deltas of hours from ``first`` on}``."""
        out: dict[int, int] = {}
        for shard, snap in snaps.items():
            ledger = _ledger(ledgers, shard)
            for name in set(snap.pending) | set(snap.inflight):
                row, _, hour = name.partition(":")
                if int(hour.rpartition(BUCKET_SEP)[2]) < first:
                    continue
                n = unapplied_delta(snap, name, ledger)
                if n:
                    out[int(row)] = out.get(int(row), 0) + n
        return out


def _pairs(flat: list) -> dict[str, int]:
    out = {}
    for i in range(0, len(flat), 2):
        name = flat[i].decode() if isinstance(flat[i], bytes) else flat[i]
        out[name] = int(flat[i + 1])
    return out
