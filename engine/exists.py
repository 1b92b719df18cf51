"""Existence index: one Redis bitmap per table and shard, so the hot path can refuse
increments for rows that do not exist without asking Postgres.

Bit 0 of every shard's bitmap means "loaded". After a Redis reset the bitmaps are
gone, increments report ``Outcome.NOT_LOADED`` and callers fall back to Postgres
until :meth:`Existence.load` has rebuilt them from the table.

The index can also come back OLDER than Postgres (Redis restarted from a dump): rows
created since then are not marked. So "not in the index" is never the last word:
``Counters.view`` confirms a miss with a primary-key lookup
(:meth:`Existence.stored`) and marks the row again when it does exist.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from .buffer import MAX_BIT_OFFSET
from .errors import redis_errors, sql_errors
from .keys import Keys
from .sqlarrays import int_array

LOAD_CHUNK_ROWS = 10_000


class Existence:
    def __init__(self, redis, sql: sa.Engine, keys: Keys) -> None:
        self.redis = redis
        self.sql = sql
        self.keys = keys

    def _set(self, table: str, ids: Iterable[int], bit: int) -> None:
        with redis_errors("existence index"):
            pipe = self.redis.pipeline(transaction=False)
            for row_id in ids:
                offset = self.keys.exists_offset(row_id)
                if offset <= MAX_BIT_OFFSET:
                    pipe.setbit(self.keys.exists(self.keys.shard_of(row_id), table), offset, bit)
            pipe.execute()

    def mark(self, table: str, ids: Iterable[int]) -> None:
        """Record rows as existing (call after their INSERT committed)."""
        self._set(table, ids, 1)

    def unmark(self, table: str, ids: Iterable[int]) -> None:
        """Record rows as gone (call after their DELETE committed)."""
        self._set(table, ids, 0)

    def stored(self, table: str, ids: Iterable[int]) -> set[int]:
        """The ``ids`` that are rows of ``table`` in Postgres (one primary-key lookup)."""
        query = sa.text(f"SELECT id FROM {table} WHERE id = ANY(CAST(:ids AS bigint[]))")
        with sql_errors(f"look up {table} ids"), self.sql.connect() as conn:
            return {r[0] for r in conn.execute(query, {"ids": int_array(ids)})}

    def drop(self, table: str) -> None:
        """Forget the index of ``table``: increments say NOT_LOADED until it is loaded."""
        with redis_errors("existence index"):
            pipe = self.redis.pipeline(transaction=False)
            for s in range(self.keys.shards):
                pipe.delete(self.keys.exists(s, table))
            pipe.execute()

    def loaded(self, table: str) -> bool:
        """True when every shard's bitmap of ``table`` carries its 'loaded' bit."""
        with redis_errors("existence index"):
            pipe = self.redis.pipeline(transaction=False)
            for s in range(self.keys.shards):
                pipe.getbit(self.keys.exists(s, table), 0)
            return all(pipe.execute())

    def load(self, table: str) -> int:
        """Mark every row of ``table`` (keyset-paginated), then set the 'loaded' bits.

        A row deleted while this runs may stay marked; its deltas are then dropped
        and counted by the flush like any delta for a deleted row.
        """
        after, total = 0, 0
        query = sa.text(f"SELECT id FROM {table} WHERE id > :after ORDER BY id LIMIT :n")
        while True:
            with sql_errors(f"load {table} ids"), self.sql.connect() as conn:
                ids = [r[0] for r in conn.execute(query, {"after": after, "n": LOAD_CHUNK_ROWS})]
            if not ids:
                break
            self.mark(table, ids)
            total += len(ids)
            after = ids[-1]
        with redis_errors("existence index"):
            pipe = self.redis.pipeline(transaction=False)
            for s in range(self.keys.shards):
                pipe.setbit(self.keys.exists(s, table), 0, 1)
            pipe.execute()
        return total

    def ensure_loaded(self, tables: Iterable[str]) -> dict[str, int]:
        """Load the index of each table whose index is missing; returns rows marked."""
        return {t: self.load(t) for t in tables if not self.loaded(t)}
