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

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from .buffer import Buffer, RoundTrip, Unapplied, _load
from .errors import redis_errors, sql_errors
from .keys import BUCKET_SEP, bucket_field, field
from .lineage import Base, Ledger
from .live import READ_ATTEMPTS, snapshot_consistent, unapplied_delta, unapplied_parts
from .registry import Counter
from .sqlarrays import int_array
from .windows import SERIES, Window, hour_start, total_column

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
TOP_MARGIN = 5  # stored totals read per row asked for


@functools.lru_cache(maxsize=64)
def _ranking(table: str, win: str) -> sa.TextClause:
    """One statement, so one snapshot: the window's edge ("e"), the scope's ledger rows
    ("l"), the ``:limit`` best stored totals of rows that exist ("t": walks the window's
    index of counter_trending_totals in order) and the stored totals of the rows ``:ids``
    that exist ("o")."""
    n = total_column(win)
    return sa.text(
        f"""SELECT 'e', (extract(epoch FROM edge) / 3600)::bigint, NULL::bigint, NULL::text,
               NULL::bigint, NULL::text[]
          FROM counter_window_edges
         WHERE scope = :scope AND tbl = :tbl AND col = :col AND win = :win
        UNION ALL
        SELECT 'l', shard, applied_seq, gen, base_seq, past_gens
          FROM counter_shards WHERE scope = :scope
        UNION ALL
        (SELECT 't', w.row_id, w.{n}, NULL, NULL, NULL FROM counter_trending_totals w
          WHERE w.series = {SERIES}
            AND EXISTS (SELECT 1 FROM {table} t WHERE t.id = w.row_id)
          ORDER BY w.{n} DESC, w.row_id DESC LIMIT :limit)
        UNION ALL
        SELECT 'o', t.id, coalesce(w.{n}, 0), NULL, NULL, NULL FROM {table} t
          LEFT JOIN counter_trending_totals w ON w.series = {SERIES} AND w.row_id = t.id
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
        self._edges: dict[tuple[str, str], int] = {}  # last edge seen per trending window

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

    def _unapplied_sums(self, counter: Counter, first: int) -> dict[int, Unapplied]:
        """Per shard, ``counter``'s pending and inflight bucket deltas of the hours from
        ``first`` on, summed per row (``{"<id>": n}``)."""
        marker = f":{counter.code}{BUCKET_SEP}"
        shards = range(self.buffer.keys.shards)
        with redis_errors("read buckets"):
            trip = RoundTrip(self.buffer.redis)
            for s in shards:
                keys = self.buffer.keys.shard_keys(s)
                trip.script(self._buckets_script, keys, [marker, first])
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
        # more stored totals than asked for: the gap below the ``limit``-th then keeps
        # the rows with only a few pending views from having to be looked up
        fetch = limit * TOP_MARGIN
        where |= {"win": win.name, "limit": fetch}
        edge_key = (counter.name, win.name)
        edge = self._edges.get(edge_key, win.first_hour(now_hour))
        ids: list[int] = []
        for _ in range(READ_ATTEMPTS + 2):
            # Redis before Postgres, as for live counts: a batch released in between is
            # in Postgres' snapshot. Pending hours count from the edge of the stored
            # totals: the last one seen (it moves once an hour); read again if it moved.
            snaps = self._unapplied_sums(counter, edge)
            with sql_errors(f"trending {counter.name}"), self.sql.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                ranking = _ranking(counter.table, win.name)
                rows = conn.execute(ranking, {**where, "ids": int_array(ids)})
                rows = rows.all()
            stored_edge = next((r[1] for r in rows if r[0] == "e"), edge)
            ledgers = {
                r[1]: Ledger(r[2], r[3], r[4], tuple(r[5] or ())) for r in rows if r[0] == "l"
            }
            top = {r[1]: r[2] for r in rows if r[0] == "t"}
            others = {r[1]: r[2] for r in rows if r[0] == "o"}
            late = _late(snaps, ledgers)
            needed = _contenders(top, late, limit, fetch)
            consistent = all(
                snapshot_consistent(snaps[s], _ledger(ledgers, s).applied_seq) for s in snaps
            )
            if stored_edge != edge:
                edge = self._edges[edge_key] = stored_edge
            elif set(needed) <= set(others) and consistent:
                break
            ids = needed
        top.update((i, n) for i, n in others.items() if i in late)
        ranked = [(row_id, n + late.get(row_id, 0)) for row_id, n in top.items()]
        ranked = [r for r in ranked if r[1] > 0]
        ranked.sort(key=lambda r: (-r[1], -r[0]))
        return ranked[:limit]


def _late(snaps: dict[int, Unapplied], ledgers) -> dict[int, int]:
    """``{row id: its unapplied deltas}`` given each shard's ledger."""
    out: dict[int, int] = {}
    for shard, snap in snaps.items():
        pending, inflight = unapplied_parts(snap, _ledger(ledgers, shard))
        for part, live in ((snap.pending, pending), (snap.inflight, inflight)):
            if live:
                for row, n in part.items():
                    out[int(row)] = out.get(int(row), 0) + n
    return out


def _contenders(top: dict[int, int], late: dict[int, int], limit: int, fetch: int) -> list[int]:
    """Rows outside ``top`` (the best ``fetch`` stored totals, or all of them when fewer)
    whose unapplied deltas may lift them into the best ``limit``: such a row has at most
    the lowest total of a full ``top`` stored (none, when ``top`` holds them all), so it
    needs at least the gap between that and the ``limit``-th live count of ``top``."""
    outside = [i for i in late if i not in top]
    if len(top) < limit:
        return sorted(outside)
    floor = min(top.values()) if len(top) >= fetch else 0
    live = sorted((n + late.get(i, 0) for i, n in top.items()), reverse=True)
    gap = live[limit - 1] - floor
    return sorted(i for i in outside if late[i] >= gap)


def _pairs(flat: list) -> dict[str, int]:
    out = {}
    for i in range(0, len(flat), 2):
        name = flat[i].decode() if isinstance(flat[i], bytes) else flat[i]
        out[name] = int(flat[i + 1])
    return out
