"""Exact recount: correct each counter to its source-of-truth value, alongside pending deltas.

For one chunk of rows, in one transaction:

1. lock the rows ``FOR UPDATE`` in id order and read their stored values V;
2. snapshot their pending and inflight deltas in Redis, and read each shard's
   ledger; the unapplied delta P is what a flush will still apply of pending and
   inflight (engine/live.py ``unapplied_delta``: not a batch Postgres already holds);
3. run each counter's recount query, giving the exact value E;
4. add ``E - (V + P)`` to the column, so the deltas still in Redis land on top of
   the correction and nothing pending is counted twice.

The race this closes: an action row committed while its delta is not yet in Redis
would be counted by E and then again by its delta. Writers therefore take
``FOR KEY SHARE`` on the target row (``lock_target``), insert the action row and
add its delta before they commit; our ``FOR UPDATE`` waits for them and they wait
for us, so E and P always agree on every action. A flush of these rows blocks on
the lock too, so an inflight batch cannot land between steps 1 and 4, and one that
landed before step 1 is recognised by ``applied_seq``. Increments arriving while
this runs are deltas in Redis that we never overwrite: only the drift is added.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from .buffer import Buffer
from .errors import sql_errors
from .flush import APPLY_SETTINGS, add_deltas
from .keys import field as delta_field
from .lineage import Ledger
from .live import ledger_of, unapplied_delta
from .readmodel import ReadModel
from .registry import Counter, Registry
from .sqlarrays import int_array

CHUNK_ROWS = 1_000
NO_LEDGER = Ledger(applied_seq=0)  # a shard that never flushed


@dataclass(frozen=True)
class Fix:
    entity: str
    id: int
    counter: str
    was: int
    now: int


@dataclass
class ReconcileResult:
    checked: int = 0
    fixes: list[Fix] = field(default_factory=list)

    def as_dict(self, limit: int = 100) -> dict:
        return {
            "checked": self.checked,
            "fixed": len(self.fixes),
            "fixes": [f.__dict__ for f in self.fixes[:limit]],
        }


def lock_target(conn: sa.Connection, table: str, row_id: int) -> bool:
    """Take ``FOR KEY SHARE`` on a target row inside the caller's transaction.

    Call it before inserting or deleting an action row whose counter delta you add
    before commit; returns False when the row does not exist.
    """
    query = sa.text(f"SELECT 1 FROM {table} WHERE id = :id FOR KEY SHARE")
    return conn.execute(query, {"id": row_id}).first() is not None


class Reconciler:
    def __init__(
        self,
        buffer: Buffer,
        sql: sa.Engine,
        registry: Registry,
        scope: str,
        chunk_rows: int = CHUNK_ROWS,
        model: ReadModel | None = None,
    ) -> None:
        self.model = model
        self.buffer = buffer
        self.sql = sql
        self.registry = registry
        self.scope = scope
        self.chunk_rows = chunk_rows

    def reconcile(
        self, names: Iterable[str] | None = None, ids: Sequence[int] | None = None
    ) -> ReconcileResult:
        """Recount ``names`` (default: every counter with a recount query) for ``ids``
        (default: every row, keyset-paginated) and correct the drift."""
        chosen = [self.registry.get(n) for n in names] if names is not None else list(self.registry)
        result = ReconcileResult()
        for table in sorted({c.table for c in chosen if c.recount}):
            counters = [c for c in chosen if c.table == table and c.recount]
            for chunk in self._chunks(table, ids):
                self._chunk(table, counters, chunk, result)
        return result

    def _chunks(self, table: str, ids: Sequence[int] | None):
        if ids is not None:
            unique = sorted(set(ids))
            for i in range(0, len(unique), self.chunk_rows):
                yield unique[i : i + self.chunk_rows]
            return
        query = sa.text(f"SELECT id FROM {table} WHERE id > :after ORDER BY id LIMIT :n")
        after = 0
        while True:
            with sql_errors(f"page {table}"), self.sql.connect() as conn:
                chunk = [r[0] for r in conn.execute(query, {"after": after, "n": self.chunk_rows})]
            if not chunk:
                return
            yield chunk
            after = chunk[-1]

    def _chunk(
        self, table: str, counters: list[Counter], ids: list[int], result: ReconcileResult
    ) -> None:
        cols = ", ".join(c.column for c in counters)
        keys = self.buffer.keys
        with sql_errors(f"reconcile {table}"), self.sql.begin() as conn:
            locked = conn.execute(
                sa.text(
                    f"SELECT id, {cols} FROM {table} WHERE id = ANY(CAST(:ids AS bigint[])) "
                    "ORDER BY id FOR UPDATE"
                ),
                {"ids": int_array(ids)},
            ).all()
            if not locked:
                return
            stored = {r[0]: r[1:] for r in locked}
            by_shard: dict[int, list[str]] = {}
            for row_id in stored:
                by_shard.setdefault(keys.shard_of(row_id), []).extend(
                    delta_field(row_id, c.code) for c in counters
                )
            snaps = self.buffer.unapplied(by_shard)
            ledgers = {
                r[0]: ledger_of(r[1:])
                for r in conn.execute(
                    sa.text(
                        "SELECT shard, applied_seq, gen, base_seq, past_gens FROM counter_shards "
                        "WHERE scope = :scope AND shard = ANY(CAST(:shards AS bigint[]))"
                    ),
                    {"scope": self.scope, "shards": int_array(by_shard)},
                )
            }
            exact = {
                c.column: dict(conn.execute(sa.text(c.recount), {"ids": int_array(stored)}).all())
                for c in counters
            }
            drift: dict[int, dict[str, int]] = {}
            for row_id, values in stored.items():
                shard = keys.shard_of(row_id)
                for c, value in zip(counters, values, strict=True):
                    result.checked += 1
                    pending = unapplied_delta(
                        snaps[shard], delta_field(row_id, c.code), ledgers.get(shard, NO_LEDGER)
                    )
                    truth = int(exact[c.column].get(row_id, 0))
                    if truth != value + pending:
                        drift.setdefault(row_id, {})[c.column] = truth - value - pending
                        result.fixes.append(Fix(table, row_id, c.column, value + pending, truth))
            if drift:
                conn.execute(APPLY_SETTINGS)
                add_deltas(conn, table, drift)
                # before the commit too: a Redis lost between the commit and the second
                # call then leaves only fills that raced this very transaction
                self._forget(table, drift)
        if drift:
            self._forget(table, drift)

    def _forget(self, table: str, ids) -> None:
        """The corrected rows' read models are void (engine/readmodel.py)."""
        if self.model is not None:
            self.model.forget(table, ids)
