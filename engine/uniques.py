"""Unique viewers: a HyperLogLog per row in Redis, kept in Postgres by the flush.

A counted view (engine/policy.py) adds its visitor to the row's HyperLogLog (``PFADD``,
in the increment's script). The flush, in the transaction that applies a batch, takes
every row whose views the batch holds and, per row: reads the HyperLogLog Postgres keeps
(``counter_uniques``, schema step 0005), merges it into Redis' (``PFMERGE``: a union,
so doing it twice changes nothing), and stores the union and its estimate back, and the
estimate into the row's ``uniques`` column, when the estimate changed. After a Redis
wipe the first flush of a row thus merges what Postgres kept back in before storing:
the estimate never goes backwards. Reads take the larger of the column and Redis'
``PFCOUNT`` (engine/live.py), so they do not either, in between.

Only rows whose HyperLogLog Redis has are merged: a row without one got no counted
visitor since it expired or Redis lost it (its views came with the policy off, ``raw``),
so Postgres already holds every visitor Redis knows of. One script call per shard, in
one round trip, tells which rows have one.

Cost: one round trip to find those rows; then, per such row, one ``counter_uniques``
read (up to 12 KB, the dense encoding) and one script call (all rows in one round trip),
and writes only for the rows whose estimate moved.
"""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa

from .buffer import RoundTrip
from .errors import redis_errors
from .policy import UNIQUES_TTL_S
from .registry import Counter
from .sqlarrays import int_array

STORED = sa.text(
    "SELECT row_id, hll, estimate FROM counter_uniques "
    "WHERE scope = :scope AND code = :code AND row_id = ANY(CAST(:ids AS bigint[]))"
)
STORE = sa.text(
    """INSERT INTO counter_uniques (scope, code, row_id, hll, estimate)
    SELECT :scope, :code, u.id, u.hll, u.n
      FROM unnest(CAST(:ids AS bigint[]), CAST(:hlls AS bytea[]), CAST(:ns AS bigint[]))
        AS u(id, hll, n)
    ON CONFLICT (scope, code, row_id)
    DO UPDATE SET hll = EXCLUDED.hll, estimate = EXCLUDED.estimate"""
)


def column_update(table: str, column: str) -> sa.TextClause:
    """Raise the rows' estimate column to the new estimates (never lower it)."""
    return sa.text(
        f"UPDATE {table} t SET {column} = greatest(t.{column}, u.n) "
        "FROM unnest(CAST(:ids AS bigint[]), CAST(:ns AS bigint[])) AS u(id, n) "
        "WHERE t.id = u.id"
    )


class Uniques:
    def __init__(self, buffer, scope: str) -> None:
        self.buffer = buffer
        self.scope = scope
        lua = resources.files(__package__).joinpath("lua")
        self._merge = buffer.redis.register_script(lua.joinpath("uniques.lua").read_text())
        self._present = buffer.redis.register_script(
            lua.joinpath("uniques_present.lua").read_text()
        )

    def present(self, counter: Counter, ids: list[int]) -> list[int]:
        """Those of ``ids`` whose HyperLogLog Redis has (one round trip)."""
        keys = self.buffer.keys
        by_shard: dict[int, list[int]] = {}
        for row_id in ids:
            by_shard.setdefault(keys.shard_of(row_id), []).append(row_id)
        with redis_errors("find unique viewers"):
            trip = RoundTrip(self.buffer.redis)
            for rows in by_shard.values():
                trip.script(self._present, [keys.uniques(i, counter.code) for i in rows], [])
            replies = trip.execute()
        rows = by_shard.values()
        return sorted(r[i - 1] for r, found in zip(rows, replies, strict=True) for i in found)

    def save(self, conn: sa.Connection, counter: Counter, ids: list[int]) -> int:
        """Merge and store the estimates of ``ids`` (rows that exist) of view counter
        ``counter``, in ``conn``'s transaction; returns the rows whose estimate moved."""
        ids = self.present(counter, ids) if ids else []
        if not ids:
            return 0
        params = {"scope": self.scope, "code": counter.code}
        stored = {
            r.row_id: (bytes(r.hll), r.estimate)
            for r in conn.execute(STORED, {**params, "ids": int_array(ids)})
        }
        keys = self.buffer.keys
        with redis_errors("merge unique viewers"):
            trip = RoundTrip(self.buffer.redis)
            for row_id in ids:
                shard = keys.shard_of(row_id)
                hll = stored.get(row_id, (b"", None))[0]
                trip.script(
                    self._merge,
                    [keys.uniques(row_id, counter.code), keys.uniques_scratch(shard)],
                    [hll, UNIQUES_TTL_S],
                )
            replies = trip.execute()
        moved = [
            (row_id, bytes(reply[0]), int(reply[1]))
            for row_id, reply in zip(ids, replies, strict=True)
            if reply and int(reply[1]) != stored.get(row_id, (None, None))[1]
        ]
        if not moved:
            return 0
        ids_moved, hlls, ns = (list(x) for x in zip(*moved, strict=True))
        conn.execute(STORE, {**params, "ids": int_array(ids_moved), "hlls": hlls, "ns": ns})
        update = column_update(counter.table, counter.policy.uniques)
        conn.execute(update, {"ids": int_array(ids_moved), "ns": int_array(ns)})
        return len(moved)
