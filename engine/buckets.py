"""The flush's side of time buckets: a batch's hourly deltas, applied in its transaction.

A bucketed counter's increment also adds to ``"<id>:<code>@<hour>"`` in the same pending
hash (engine/lua/incr.lua), so the bucket deltas are claimed, numbered, fenced by the
ledger and released with the counter deltas: the transaction that adds a batch to the
counter columns adds its bucket deltas to ``counter_hourly`` (one upsert for every
bucketed counter of the batch) and, for trending counters, to the per-row window totals
(one upsert). A batch applied exactly once thus lands in its buckets exactly once, and
after a flush a row's buckets sum to its column (G9).
"""

from __future__ import annotations

import sqlalchemy as sa

from .batch import BucketDeltas
from .windows import TRENDING_WINDOWS, total_column

# One statement for every bucketed counter of a batch; a batch holds one field per
# (row, counter, hour), so no two input rows hit the same bucket. Rows in key order.
HOURLY_UPSERT = sa.text(
    """INSERT INTO counter_hourly AS b (scope, tbl, col, row_id, hour, n)
    SELECT :scope, u.tbl, u.col, u.id, to_timestamp(u.h * 3600), sum(u.d)
      FROM unnest(CAST(:tbls AS text[]), CAST(:cols AS text[]), CAST(:ids AS bigint[]),
                  CAST(:hours AS bigint[]), CAST(:deltas AS bigint[])) AS u(tbl, col, id, h, d)
     GROUP BY u.tbl, u.col, u.id, u.h
     ORDER BY u.tbl, u.col, u.id, u.h
    ON CONFLICT (scope, tbl, col, row_id, hour) DO UPDATE SET n = b.n + EXCLUDED.n"""
)

# The window edges are read under FOR SHARE: the retention task moves an edge (and takes
# the hours it passes out of the totals) under FOR UPDATE, so a batch is added to a
# window's totals either wholly before that move or after it, never half-counted.
LOCK_EDGES = sa.text(
    """SELECT tbl, col, win FROM counter_window_edges WHERE scope = :scope
     ORDER BY tbl, col, win FOR SHARE"""
)


# A delta counts in a window's total when its hour is at or after the window's edge; an
# hour already behind every edge (a flush that waited out an outage) stays in the buckets
# only. Only counters with edges (trending ones) get totals: one row per counted row,
# every trending window in it (engine/windows.py), keyed by its counter's series number.
def _totals_upsert() -> sa.TextClause:
    joins, sums, adds, edges = [], [], [], []
    for i, name in enumerate(TRENDING_WINDOWS):
        column = total_column(name)
        joins.append(
            f"""LEFT JOIN counter_window_edges e{i} ON e{i}.scope = :scope
        AND e{i}.tbl = u.tbl AND e{i}.col = u.col AND e{i}.win = '{name}'"""
        )
        sums.append(f"coalesce(sum(u.d) FILTER (WHERE to_timestamp(u.h * 3600) >= e{i}.edge), 0)")
        adds.append(f"{column} = t.{column} + EXCLUDED.{column}")
        edges.append(f"e{i}.edge")
    columns = ", ".join(total_column(name) for name in TRENDING_WINDOWS)
    return sa.text(
        f"""INSERT INTO counter_trending_totals AS t (series, row_id, {columns})
    SELECT s.series, u.id, {", ".join(sums)}
      FROM unnest(CAST(:tbls AS text[]), CAST(:cols AS text[]), CAST(:ids AS bigint[]),
                  CAST(:hours AS bigint[]), CAST(:deltas AS bigint[])) AS u(tbl, col, id, h, d)
      JOIN counter_series s ON s.scope = :scope AND s.tbl = u.tbl AND s.col = u.col
      {" ".join(joins)}
     WHERE to_timestamp(u.h * 3600) >= least({", ".join(edges)})
     GROUP BY s.series, u.id
     ORDER BY s.series, u.id
    ON CONFLICT (series, row_id) DO UPDATE SET {", ".join(adds)}"""
    )


TOTALS_UPSERT = _totals_upsert()


def _params(scope: str, buckets: list[BucketDeltas]) -> dict:
    tbls, cols, ids, hours, deltas = [], [], [], [], []
    for b in buckets:
        tbls += [b.table] * len(b.ids)
        cols += [b.column] * len(b.ids)
        ids += b.ids
        hours += b.hours
        deltas += b.deltas
    return {
        "scope": scope,
        "tbls": "{" + ",".join(tbls) + "}",  # plain identifiers (registry.IDENT)
        "cols": "{" + ",".join(cols) + "}",
        "ids": (b"{" + b",".join(ids) + b"}").decode(),
        "hours": (b"{" + b",".join(hours) + b"}").decode(),
        "deltas": (b"{" + b",".join(deltas) + b"}").decode(),
    }


def apply(conn: sa.Connection, scope: str, buckets: list[BucketDeltas], trending: bool) -> int:
    """Add a batch's bucket deltas (rows that exist only) to ``counter_hourly`` and, when
    the batch has a ``trending`` counter, to the window totals, in the caller's
    transaction; returns the buckets written."""
    buckets = [b for b in buckets if b.ids]
    if not buckets:
        return 0
    params = _params(scope, buckets)
    written = conn.execute(HOURLY_UPSERT, params).rowcount
    if trending:
        conn.execute(LOCK_EDGES, {"scope": scope}).all()
        conn.execute(TOTALS_UPSERT, params)
    return written
