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
# hour already behind the edge (a flush that waited out an outage) stays in the buckets
# only. Only counters with edges (trending ones) get totals.
TOTALS_UPSERT = sa.text(
    """INSERT INTO counter_window_totals AS t (scope, tbl, col, win, row_id, n)
    SELECT :scope, u.tbl, u.col, e.win, u.id, sum(u.d)
      FROM unnest(CAST(:tbls AS text[]), CAST(:cols AS text[]), CAST(:ids AS bigint[]),
                  CAST(:hours AS bigint[]), CAST(:deltas AS bigint[])) AS u(tbl, col, id, h, d)
      JOIN counter_window_edges e
        ON e.scope = :scope AND e.tbl = u.tbl AND e.col = u.col
       AND to_timestamp(u.h * 3600) >= e.edge
     GROUP BY u.tbl, u.col, e.win, u.id
     ORDER BY u.tbl, u.col, e.win, u.id
    ON CONFLICT (scope, tbl, col, win, row_id) DO UPDATE SET n = t.n + EXCLUDED.n"""
)


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
