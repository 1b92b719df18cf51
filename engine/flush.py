"""Apply a shard's claimed batch to Postgres exactly once.

Protocol, per shard:

1. claim (Lua): pending -> inflight under a fresh random token, or resume the
   inflight batch a crashed flush left (its token, and its seq if it has one).
2. number: a new batch takes ``seq = nextval('counter_batch_seq')`` (Postgres, so
   seqs survive a Redis reset) and stores it with the batch (Lua; the first one
   stored wins, and only while the batch still carries our token); a resumed batch
   keeps its seq.
3. ONE transaction: upsert ``counter_shards.applied_seq = seq`` only where it is
   below ``seq``; no row back means the batch is already in Postgres, so apply
   nothing. The same statement judges the batch's lineage (engine/lineage.py): a
   batch that Redis handed out again after coming back older than Postgres is
   dropped and counted. Otherwise one ``UPDATE ... FROM unnest(...)`` per table,
   rows locked in id order; rows that no longer exist are dropped and counted.
4. release (Lua): delete inflight, only if it still carries our token (and, after a
   rollback, give the shard the lineage the ledger now holds).

A small flush runs these steps for every dirty shard at once, in one transaction
(engine/flush_combined.py); each batch is still fenced by its own ledger row.

Step 2 also waits for Redis to fsync (``WAITAOF``, Redis >= 7.2 with AOF on), on the
connection of the numbering script, even for a batch resumed with its seq: a Redis
crash that rolled back a claim or a seq after Postgres committed the batch would
otherwise hand the same deltas out again (the lineage check would still drop them,
engine/lineage.py, but this keeps them from coming back at all).

Races closed: a worker killed after claim or inside the transaction leaves the
inflight batch, which the next flush resumes; killed after commit, the next flush
finds ``applied_seq >= seq`` and only releases. Two flushes of one shard (a
redelivered task, two beats) both resume the same batch and seq and serialise on
the ``counter_shards`` row: the second sees its seq applied. A stalled flusher
that wakes after newer batches committed is fenced by ``applied_seq`` (or by its
token, if it never numbered its batch). Numbering after the claim is what makes
"applied_seq >= seq" mean "applied": a seq taken before a claim could be older
than a batch another flusher committed meanwhile, and would pass fresh deltas off
as already applied.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import sqlalchemy as sa

from . import buckets, flush_combined, lineage, windows
from .batch import Batch, decoded, split
from .buffer import FLUSH_LOCK_TTL_MS, Buffer, Claim, now_ms
from .errors import BufferUnavailable, CounterError, StoreUnavailable, sql_errors
from .lineage import LEDGER_GEN, MARK_APPLIED
from .registry import Registry
from .sqlarrays import int_array
from .uniques import Uniques

log = logging.getLogger(__name__)

# Plan shape of update_statement (see there); JIT compiles cost more than these short
# statements take to run.
APPLY_SETTINGS = sa.text(
    "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off"
)
NEXT_SEQ = sa.text("SELECT nextval('counter_batch_seq')")

# Shards flushed at once by one flush call: two overlap one shard's Redis and Python
# work with another's Postgres work, using at most two connections.
FLUSH_THREADS = 2
DRAIN_BATCHES = 1_000  # batches of one shard per flush call, at most (claim_max_fields each)

Hook = Callable[[str, int], None]  # (stage, shard): claimed, numbered, applied, committed


@dataclass
class ShardFlush:
    """What one shard's batch did; ``as_dict()`` is its log record."""

    shard: int
    seq: int
    counters: int = 0
    rows: int = 0
    rows_missing: int = 0
    buckets: int = 0  # time buckets written (engine/buckets.py)
    deltas_dropped: int = 0  # every reason: deleted rows, unknown codes, rollback
    dropped_rollback: int = 0  # fields of a batch Postgres already held (lineage)
    rolled_back: str | None = None  # lineage.STALE / lineage.PAST when dropped so
    resumed: bool = False
    partial: bool = False  # a bounded claim: the shard had more behind this batch
    already_applied: bool = False
    lag_s: float | None = None
    duration_s: float = 0.0  # claim to release (a combined flush: its round's, for each)
    missing: list[tuple[str, int]] = field(default_factory=list)
    discarded: dict[str, int] = field(default_factory=dict)  # {field: delta} rolled back

    @property
    def applied(self) -> bool:
        """True when this flush applied the batch's deltas (what it could)."""
        return not self.already_applied and self.rolled_back is None

    def as_dict(self) -> dict:
        """JSON-ready, without the lists of what was dropped."""
        record = {k: v for k, v in self.__dict__.items() if k not in ("missing", "discarded")}
        record["duration_s"] = round(self.duration_s, 6)
        return record


@dataclass
class FlushSummary:
    """What one flush call did. ``as_dict()`` is THE flush record: the admin API and
    the CLI print it, the flush log line carries it, the shared stats keep it as the
    last flush, and ``totals()`` (derived from the same shards) feeds the running
    totals behind the metrics."""

    shards: list[ShardFlush] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # shards another flush was busy with
    duration_s: float = 0.0

    @property
    def applied(self) -> list[ShardFlush]:
        """The batches this flush applied (not found applied already, nor rolled back)."""
        return [s for s in self.shards if s.applied]

    @property
    def counters(self) -> int:
        return sum(s.counters for s in self.applied)

    def totals(self) -> dict[str, int]:
        """Increments of the running totals kept in Redis (engine.stats.TOTALS) for this
        flush; what rollbacks dropped is counted in the ledger instead (stats.DURABLE)."""
        applied = self.applied
        return {
            "flushes": 1,
            "batches": len(applied),
            "batches_already_applied": sum(1 for s in self.shards if s.already_applied),
            "claims_resumed": sum(1 for s in self.shards if s.resumed),
            "counters_applied": self.counters,
            "rows_missing": sum(s.rows_missing for s in applied),
            "deltas_dropped": sum(s.deltas_dropped - s.dropped_rollback for s in self.shards),
            "flush_errors": len(self.errors),
        }

    def as_dict(self) -> dict:
        applied = self.applied
        return {
            "flushed": self.counters,
            "batches": len(applied),
            "rows": sum(s.rows for s in applied),
            "rows_missing": sum(s.rows_missing for s in applied),
            "deltas_dropped": sum(s.deltas_dropped for s in self.shards),
            "resumed": sum(1 for s in self.shards if s.resumed),
            "already_applied": sum(1 for s in self.shards if s.already_applied),
            "rolled_back": sum(1 for s in self.shards if s.rolled_back),
            "dropped_rollback": sum(s.dropped_rollback for s in self.shards),
            "max_lag_s": max((s.lag_s for s in self.shards if s.lag_s is not None), default=0.0),
            "duration_s": round(self.duration_s, 6),
            "errors": self.errors,
            "skipped": self.skipped,
            "shard_batches": [
                {
                    "shard": s.shard,
                    "seq": s.seq,
                    "counters": s.counters,
                    "resumed": s.resumed,
                    "already_applied": s.already_applied,
                }
                for s in self.shards
            ],
        }


@functools.lru_cache(maxsize=256)
def update_statement(table: str, columns: tuple[str, ...]) -> sa.TextClause:
    """One set-based UPDATE adding per-row deltas to ``columns``, rows locked in id order.

    Column ``k`` takes its own pair of arrays, ``:i<k>`` (ids) and ``:d<k>`` (deltas);
    with several columns they are summed per id first. Run under ``APPLY_SETTINGS``:
    with hash and merge joins off the plan is a nested loop over the id-sorted deltas,
    each row found by primary key and locked by the UPDATE itself in that order, so two
    transactions over overlapping rows (a flush and a reconcile) cannot deadlock, and no
    full scan of the table is made.
    """

    def unnest(k: int) -> str:
        return f"unnest(CAST(:i{k} AS bigint[]), CAST(:d{k} AS bigint[]))"

    names = [f"c{k}" for k in range(len(columns))]
    if len(columns) == 1:
        deltas = f"SELECT * FROM {unnest(0)} AS u(id, c0) ORDER BY id"
    else:  # one row per (id, column) delta, zeros elsewhere, summed per id
        parts = " UNION ALL ".join(
            f"SELECT id, {', '.join('c' if j == k else '0' for j in range(len(columns)))}"
            f" FROM {unnest(k)} AS u(id, c)"
            for k in range(len(columns))
        )
        sums = ", ".join(f"sum({n})::bigint AS {n}" for n in names)
        deltas = (
            f"SELECT id, {sums} FROM ({parts}) AS x(id, {', '.join(names)}) GROUP BY id ORDER BY id"
        )
    sets = ", ".join(f"{col} = t.{col} + d.{n}" for col, n in zip(columns, names, strict=True))
    return sa.text(f"UPDATE {table} t SET {sets} FROM ({deltas}) d WHERE t.id = d.id")


def add_columns(conn: sa.Connection, table: str, arrays: list[tuple[str, str, str]]) -> int:
    """Add ``[(column, ids literal, deltas literal), …]`` to ``table`` in one statement
    (under APPLY_SETTINGS); returns how many rows it updated (the ids of a flush's
    thousands of rows are not sent back: :func:`drop_missing` asks when some are gone)."""
    params = {}
    for k, (_, ids, deltas) in enumerate(arrays):
        params[f"i{k}"], params[f"d{k}"] = ids, deltas
    return conn.execute(update_statement(table, tuple(a[0] for a in arrays)), params).rowcount


def add_deltas(conn: sa.Connection, table: str, rows: dict[int, dict[str, int]]) -> int:
    """Add ``{id: {column: delta}}`` to ``table`` in one statement (under APPLY_SETTINGS);
    returns how many rows exist and were updated."""
    arrays = []
    for col in sorted({c for cols in rows.values() for c in cols}):
        ids = [r for r in sorted(rows) if col in rows[r]]
        arrays.append((col, int_array(ids), int_array(rows[r][col] for r in ids)))
    return add_columns(conn, table, arrays)


@functools.lru_cache(maxsize=64)
def _present(table: str) -> sa.TextClause:
    return sa.text(f"SELECT id FROM {table} WHERE id = ANY(CAST(:ids AS bigint[]))")


def drop_missing(conn: sa.Connection, table: str, parts: list, gone: set[int]) -> None:
    """After :func:`add_columns` updated fewer rows than ``parts`` (``[(TableDeltas,
    ShardFlush), …]``) touch: count the rows it did not find (deleted) into each part's
    result, and add them to ``gone``. Asked in the same transaction: the rows the UPDATE
    found are locked by it until the commit, and a row it did not find was deleted (ids
    are not reused), so the rows there now are the rows it updated."""
    ids = sorted({i for deltas, _ in parts for i in deltas.fields_per_row()})
    updated = {r[0] for r in conn.execute(_present(table), {"ids": int_array(ids)})}
    for deltas, result in parts:
        _count_missing(table, deltas, updated, result, gone)


def _count_missing(table: str, deltas, updated: set[int], result, gone: set[int]) -> None:
    for row_id, fields in sorted(deltas.fields_per_row().items()):
        if row_id not in updated:
            gone.add(row_id)
            result.rows_missing += 1
            result.deltas_dropped += fields
            result.missing.append((table, row_id))


class Flusher:
    def __init__(
        self,
        buffer: Buffer,
        sql: sa.Engine,
        registry: Registry,
        scope: str,
        hook: Hook | None = None,
        lock_ttl_ms: int = FLUSH_LOCK_TTL_MS,
        threads: int = FLUSH_THREADS,
        combine_max_fields: int = flush_combined.COMBINE_MAX_FIELDS,
    ) -> None:
        if threads < 1:
            raise ValueError("flush threads must be at least 1")
        self.threads = threads
        self.combine_max_fields = combine_max_fields  # 0: every shard on its own
        self.lock_ttl_ms = lock_ttl_ms
        self.buffer = buffer
        self.sql = sql
        self.registry = registry
        self.scope = scope
        self.hook = hook
        self.trending = any(c.trending for c in registry)
        self._edges_ready = False
        self.uniques = Uniques(buffer, scope)

    def _stage(self, stage: str, shard: int) -> None:
        if self.hook is not None:
            self.hook(stage, shard)

    def _next_seq(self) -> int:
        with sql_errors("next batch seq"), self.sql.begin() as conn:
            return conn.execute(NEXT_SEQ).scalar_one()

    def _apply(self, conn: sa.Connection, batch: Batch, result: ShardFlush) -> None:
        result.deltas_dropped += batch.unknown
        gone_by_table: dict[str, set[int]] = {}
        for table in sorted(batch.tables):
            deltas = batch.tables[table]
            arrays = [(c.column, *c.arrays()) for c in deltas.columns]
            updated = add_columns(conn, table, arrays)
            result.rows += updated
            gone: set[int] = set()
            if updated < deltas.row_count():
                drop_missing(conn, table, [(deltas, result)], gone)
            gone_by_table[table] = gone
            self._save_uniques(conn, table, deltas, gone)
        if batch.buckets:
            # a bucket goes where its counter's delta went: rows gone drop both
            kept = [b.without(gone_by_table.get(b.table, set())) for b in batch.buckets]
            result.buckets = buckets.apply(conn, self.scope, kept, self.trending)

    def _ensure_edges(self) -> None:
        """Trending windows get their edges once per process, committed before any flush
        adds to their totals (engine/windows.py)."""
        if self.trending and not self._edges_ready:
            with sql_errors("window edges"), self.sql.begin() as conn:
                windows.ensure_edges(conn, self.scope, self.registry, windows.current_hour())
            self._edges_ready = True

    def _save_uniques(self, conn: sa.Connection, table: str, deltas, gone: set[int]) -> None:
        """Store the unique-viewer estimates of the rows whose views the batch holds
        (engine/uniques.py), in the batch's transaction."""
        for counter in self.registry.uniques_of(table):
            for column in deltas.columns:
                if column.column == counter.column:
                    ids = sorted({int(i) for i in column.ids} - gone)
                    self.uniques.save(conn, counter, ids)

    def flush_shard(self, shard: int) -> ShardFlush | None:
        """Claim and apply one shard's batch; None when it had nothing to flush.

        Raises StoreUnavailable/BufferUnavailable with the claim left in place, so the
        next call resumes it.
        """
        started = time.perf_counter()
        self._ensure_edges()
        claim = self.buffer.claim(shard, uuid.uuid4().hex)
        if claim is None:
            return None
        self._stage("claimed", shard)
        fresh = self._next_seq() if claim.seq is None else None
        seq = self.buffer.number(shard, claim.token, fresh)
        if seq is None:  # finished by another flush while we were numbering it
            return None
        self._stage("numbered", shard)
        result = ShardFlush(shard=shard, seq=seq, resumed=claim.resumed, partial=claim.partial)
        batch = split(self.registry, claim.fields)
        result.counters = batch.size
        if batch.oldest_ms is not None:
            result.lag_s = max(0.0, (now_ms() - batch.oldest_ms) / 1000)
        with sql_errors(f"apply shard {shard}"), self.sql.begin() as conn:
            conn.execute(APPLY_SETTINGS)
            verdict, gen = self._mark(conn, claim, seq)
            if verdict is None:
                result.already_applied = True
            elif verdict in lineage.DROPPED:
                self._roll_back(conn, claim, batch, result, verdict, gen)
            else:
                self._apply(conn, batch, result)
            self._stage("applied", shard)
        self._stage("committed", shard)
        # a rollback leaves this Redis on a lineage the ledger has left: take the ledger's
        if claim.base is not None and gen is not None and gen != claim.base.gen:
            self.buffer.release(shard, claim.token, gen)
        else:
            self.buffer.release(shard, claim.token)
        result.duration_s = time.perf_counter() - started
        self._log(result)
        return result

    def _log(self, result: ShardFlush) -> None:
        if log.isEnabledFor(logging.INFO):  # a record per batch: skip building it unread
            record = {"event": "counter_flush", "scope": self.scope, **result.as_dict()}
            log.info("%s", json.dumps(record))
        if result.rows_missing:
            log.warning(
                "dropped deltas for %d deleted rows on shard %d: %s",
                result.rows_missing,
                result.shard,
                result.missing[:20],
            )

    def _mark(self, conn: sa.Connection, claim: Claim, seq: int) -> tuple[str | None, str | None]:
        """Record the batch in the ledger: (verdict, gen the ledger holds now), or
        (None, ledger gen) when Postgres already has this seq."""
        params = self._mark_params(claim, seq)
        row = conn.execute(MARK_APPLIED, params).first()
        if row is not None:
            return row[0], row[1]
        return self._unmarked(conn, claim)

    def _mark_params(self, claim: Claim, seq: int) -> dict:
        """MARK_APPLIED's parameters for this batch."""
        base = claim.base
        return {
            "scope": self.scope,
            "shard": claim.shard,
            "seq": seq,
            "bgen": base.gen if base else None,
            "bseq": base.seq if base else None,
            # only these can have a successor that existed before Redis came back and
            # was rebased onto the seq this flush just made up (engine/lineage.py)
            "mint": f"m{uuid.uuid4().hex[:12]}" if claim.resumed or claim.partial else None,
            "split": claim.partial and not claim.resumed,
        }

    def _unmarked(self, conn: sa.Connection, claim: Claim) -> tuple[None, str | None]:
        """``_mark``'s answer for a batch Postgres already has: (None, ledger gen)."""
        if claim.base is None:
            return None, None
        # A flush that dropped this batch may have died before its release: the lineage
        # it recorded must still reach Redis.
        params = {"scope": self.scope, "shard": claim.shard}
        return None, conn.execute(LEDGER_GEN, params).scalar()

    def _roll_back(
        self,
        conn: sa.Connection,
        claim: Claim,
        batch: Batch,
        result: ShardFlush,
        verdict: str,
        gen: str | None,
    ) -> None:
        """Drop a batch Postgres already holds (Redis came back older than Postgres), and
        count the drop in the ledger row, in the same transaction."""
        conn.execute(
            lineage.COUNT_ROLLBACK,
            {"scope": self.scope, "shard": claim.shard, "deltas": batch.size},
        )
        result.rolled_back = verdict
        result.dropped_rollback = batch.size
        result.deltas_dropped += batch.size
        result.discarded = decoded(claim.fields)
        log.warning(
            "dropped a batch of %d deltas on shard %d: Redis came back older than Postgres "
            "(%s; seq %d, base %s, ledger gen now %s)",
            batch.size,
            claim.shard,
            verdict,
            result.seq,
            claim.base,
            gen,
        )

    def _drain(self, shard: int, lock: str, limit: int = DRAIN_BATCHES) -> list[ShardFlush]:
        """Flush the shard's batch, then the next one while there is more: what piled up
        behind an orphaned batch, or the rest of a backlog a bounded claim left (``limit``
        batches at most)."""
        done = []
        while len(done) < limit:
            result = self.flush_shard(shard)
            if result is None:
                break
            done.append(result)
            if not (result.resumed or result.partial):
                break
            if not self.buffer.relock(shard, lock, self.lock_ttl_ms):
                break  # our lock lapsed and another flush has the shard now
        return done

    def _flush_locked(
        self, shard: int, token: str | None = None
    ) -> tuple[list[ShardFlush], bool, CounterError | None]:
        """(batches flushed, skipped because another flush holds the lock, error). With
        ``token`` the lock was taken under it already: it is renewed (or taken again, if
        it lapsed meanwhile and no other flush took it)."""
        try:
            if token is None:
                token = uuid.uuid4().hex
                held = self.buffer.lock(shard, token, self.lock_ttl_ms)
            else:
                held = self.buffer.relock(shard, token, self.lock_ttl_ms)
                held = held or self.buffer.lock(shard, token, self.lock_ttl_ms)
            if not held:
                return [], True, None
            try:
                return self._drain(shard, token), False, None
            finally:
                self._unlock(shard, token)
        except (StoreUnavailable, BufferUnavailable) as exc:
            return [], False, exc

    def flush_shards(self, shards: Iterable[int]) -> FlushSummary:
        """Flush these shards, each under its flush lock; a failing shard does not stop
        the others. A shard whose lock another flush holds is skipped (``skipped``): that
        flush applies what is there, the next one what comes after.

        One round trip takes the locks of the shards that hold deltas. When together they
        hold few fields (engine/flush_combined.py), their batches are applied in one
        transaction. Otherwise up to ``threads`` shards flush at once, each in its own
        transaction on its own connection, so one shard's Redis and Python work overlaps
        another's Postgres work. Shards own disjoint rows and every transaction locks rows
        in id order, so they cannot deadlock with each other or with a reconcile.

        Raises the first error after trying every shard, with the summary attached as
        ``exc.summary``.
        """
        return self._flush(list(shards), scan=False)

    def flush_all(self) -> FlushSummary:
        """Flush every shard that holds deltas (see :meth:`flush_shards`)."""
        return self._flush(list(range(self.buffer.keys.shards)), scan=True)

    def _flush(self, shards: list[int], scan: bool) -> FlushSummary:
        """Flush ``shards``; with ``scan``, only those that hold deltas (a Redis error while
        finding them is raised as such)."""
        started = time.perf_counter()
        if self.combine_max_fields <= 0:  # every shard on its own
            if scan:
                shards = self.buffer.dirty_shards()
            outcomes = self._map(self._flush_locked, shards)
        else:
            token = uuid.uuid4().hex
            try:
                found = self.buffer.lock_dirty(shards, token, self.lock_ttl_ms)
            except BufferUnavailable as exc:
                if scan:
                    raise
                found, outcomes = None, [([], False, exc) for _ in shards]
            if found is not None:
                mine = {s: n for s, n in zip(shards, found, strict=True) if n > 0}
                shards = [s for s, n in zip(shards, found, strict=True) if n]
                if sum(mine.values()) <= self.combine_max_fields:
                    by_shard = flush_combined.flush_together(self, list(mine), token)
                else:  # a backlog: shards apart, under the locks just taken
                    each = functools.partial(self._flush_locked, token=token)
                    by_shard = dict(zip(mine, self._map(each, list(mine)), strict=True))
                # the others hold deltas, but another flush holds their locks
                outcomes = [by_shard.get(s, ([], True, None)) for s in shards]
        summary = FlushSummary()
        first_error: CounterError | None = None
        for shard, (done, skipped, error) in zip(shards, outcomes, strict=True):
            summary.shards.extend(done)
            if skipped:
                summary.skipped.append(shard)
            if error is not None:
                summary.errors.append(f"shard {shard}: {error}")
                first_error = first_error or error
        summary.duration_s = time.perf_counter() - started
        if first_error is not None:
            first_error.summary = summary
            raise first_error
        return summary

    def _map(self, fn, shards: list[int]) -> list:
        """``[fn(shard) for shard in shards]``, up to ``threads`` at once."""
        workers = min(self.threads, len(shards))
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="counter-flush") as pool:
                return list(pool.map(fn, shards))
        return [fn(shard) for shard in shards]

    def _unlock(self, shard: int, token: str) -> None:
        try:
            self.buffer.unlock(shard, token)
        except BufferUnavailable as exc:
            log.warning("could not drop the flush lock of shard %d: %s", shard, exc)
