"""Existence index: one Redis bitmap per table and shard, so the hot path can refuse
increments for rows that do not exist without asking Postgres. A bitmap addresses
2**32 bits (ids up to ~6.9e10 with 16 shards); a row beyond that is kept in a set of
ids per table and shard instead, checked by the same increment script.

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

from .buffer import Buffer
from .errors import redis_errors, sql_errors
from .sqlarrays import int_array

LOAD_CHUNK_ROWS = 10_000


class Existence:
    """Writes go through a script that checks the shard layout (engine/layout.py): a
    process counting with another shard count would set the wrong bits."""

    def __init__(self, buffer: Buffer, sql: sa.Engine) -> None:
        self.buffer = buffer
        self.redis = buffer.redis
        self.sql = sql
        self.keys = buffer.keys

    def _set(self, table: str, ids: Iterable[int], bit: int) -> None:
        k = self.keys
        bits: dict[int, list[int]] = {}
        sparse: dict[int, list[int]] = {}
        for row_id in ids:
            if k.in_bitmap(row_id):
                bits.setdefault(k.shard_of(row_id), []).append(k.exists_offset(row_id))
            else:
                sparse.setdefault(k.shard_of(row_id), []).append(row_id)
        self._write(table, bit, bits, sparse)

    def _write(self, table: str, bit: int, bits: dict, sparse: dict | None = None) -> None:
        """One round trip: per shard, bit offsets of its bitmap and ids of its set."""
        k, mark = self.keys, self.buffer.mark_script
        calls = [
            (mark, [k.layout(s), k.exists(s, table)], [k.shards, bit, "bits", *offsets])
            for s, offsets in sorted(bits.items())
        ]
        calls += [
            (mark, [k.layout(s), k.exists_sparse(s, table)], [k.shards, bit, "set", *ids])
            for s, ids in sorted((sparse or {}).items())
        ]
        self.buffer.run(calls, "existence index")

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

    def drop(self, table: str, span: int | None = None) -> None:
        """Forget the index of ``table`` (of shards ``0 .. span - 1``, default: this
        layout's): increments say NOT_LOADED until it is loaded again."""
        with redis_errors("existence index"):
            pipe = self.redis.pipeline(transaction=False)
            for s in range(span or self.keys.shards):
                pipe.delete(self.keys.exists(s, table))  # one key per DEL: cluster pipelines
                pipe.delete(self.keys.exists_sparse(s, table))
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
        self._write(table, 1, {s: [0] for s in range(self.keys.shards)})
        return total

    def ensure_loaded(self, tables: Iterable[str]) -> dict[str, int]:
        """Load the index of each table whose index is missing; returns rows marked."""
        return {t: self.load(t) for t in tables if not self.loaded(t)}
