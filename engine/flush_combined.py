"""Small flushes in one transaction: the claimed batches of every shard, applied together.

Flushed one by one (engine/flush.py), each shard pays fixed costs: its own claim,
seq, ledger fence, commit and release. For a thousand counters spread over sixteen
shards those cost several times the ``UPDATE … FROM unnest`` of the rows themselves.
``Flusher.flush_shards`` takes the flush locks of the dirty shards and their sizes in
one round trip (lock_dirty.lua). When together they hold few fields (at most
``COMBINE_MAX_FIELDS``, pending and inflight), it flushes them all at once:

1. claim every shard (claim.lua, one round trip for all); in the transaction of step
   2, take one seq per new batch (one ``nextval`` query for all, with the planner
   settings) and store them (assign.lua, one round trip with one ``WAITAOF`` behind
   it, per Redis node);
2. ONE transaction: each batch is fenced by its own ledger row (MARK_APPLIED_MANY, one
   statement, rows locked in shard order), exactly as alone: already applied,
   ``stale`` or ``past`` (dropped and counted per shard) or applied. The batches that
   apply are merged into one ``UPDATE … FROM unnest`` per table, then their unique
   viewers and time buckets are saved; one commit;
3. release every batch (release.lua with each shard's own arguments) and drop the flush
   locks, one round trip.

Per shard these are the steps of engine/flush.py, in the same order, and the stage
hooks fire per shard at the same points, so its guarantees hold: a flusher killed
after the claims leaves inflight batches that the next flush resumes, each fenced by
its own ledger row; killed after the commit, the next flush finds every seq applied and
only releases. Merging is sound because a row belongs to one shard; should two batches
still carry the same row (a layout change), its deltas are summed first.

A shard whose batch was resumed, or that a bounded claim left more in, gets another
round (engine/flush.py drains the same way); when what is left is no longer small, the
per-shard path takes the rest. A transaction that fails on a statement, not on the
connection, is retried shard by shard, so one bad batch cannot hold the others back.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from typing import TYPE_CHECKING

import sqlalchemy as sa

from . import buckets, lineage
from .batch import Batch, ColumnDeltas, TableDeltas, split
from .buffer import Claim, now_ms
from .errors import BufferUnavailable, CounterError, StoreUnavailable, sql_errors

if TYPE_CHECKING:
    from .flush import Flusher, ShardFlush

log = logging.getLogger(__name__)

# Fields (deltas, time buckets, bookkeeping) the shards to flush may hold at most to go
# in one transaction (the default of Flusher.combine_max_fields). Below it the fixed
# costs per shard outweigh the rows; above it two shards' transactions at once
# (flush.FLUSH_THREADS) keep two cores busy, which one statement cannot
# (benchmarks/flush_bench.py measures both ways at 10k and 100k counters).
COMBINE_MAX_FIELDS = 20_000

NEXT_SEQS = "SELECT nextval('counter_batch_seq') FROM generate_series(1, :n)"

Outcome = tuple[list["ShardFlush"], bool, CounterError | None]  # flush._flush_locked's


@functools.cache
def settings_and_seqs() -> sa.TextClause:
    """flush.APPLY_SETTINGS, then ``:n`` seqs: one round trip, whose result is the seqs."""
    from .flush import APPLY_SETTINGS

    return sa.text(f"{APPLY_SETTINGS.text}; {NEXT_SEQS}")


def flush_together(flusher: Flusher, shards: list[int], token: str) -> dict[int, Outcome]:
    """Flush ``shards``, whose flush locks are held under ``token``, in shared
    transactions, and drop the locks; per shard (batches flushed, False, error)."""
    from .flush import DRAIN_BATCHES

    buffer = flusher.buffer
    done: dict[int, list[ShardFlush]] = {s: [] for s in shards}
    errors: dict[int, CounterError] = {}
    held = set(shards)  # each lock is dropped with the shard's last release
    active, rounds = shards, 0
    try:
        while active and rounds < DRAIN_BATCHES:
            if rounds and sum(buffer.sizes(active)) > flusher.combine_max_fields:
                _per_shard(flusher, active, token, done, errors, DRAIN_BATCHES - rounds)
                break
            try:
                results = _round(flusher, active, token, held)
            except StoreUnavailable as exc:
                if len(active) > 1 and not _lost_connection(exc):
                    _per_shard(flusher, active, token, done, errors, DRAIN_BATCHES - rounds)
                else:
                    errors.update((s, exc) for s in active)
                break
            except BufferUnavailable as exc:
                errors.update((s, exc) for s in active)
                break
            rounds += 1
            for result in results:
                done[result.shard].append(result)
            more = [r.shard for r in results if r.resumed or r.partial]
            active = buffer.relock_many(more, token, flusher.lock_ttl_ms) if more else []
    except BufferUnavailable as exc:  # sizing or relocking
        errors.update((s, exc) for s in active if s not in errors)
    finally:
        if held:
            try:
                buffer.unlock_many(sorted(held), token)
            except BufferUnavailable as exc:
                log.warning("could not drop the flush locks of shards %s: %s", held, exc)
    return {s: (done[s], False, errors.get(s)) for s in shards}


def _lost_connection(exc: StoreUnavailable) -> bool:
    cause = exc.__cause__
    return isinstance(cause, sa.exc.DBAPIError) and (
        cause.connection_invalidated or isinstance(cause, sa.exc.OperationalError)
    )


def _per_shard(flusher, shards, token, done, errors, limit: int) -> None:
    """The rest of ``shards`` the per-shard way (engine/flush.py), under our locks, at most
    ``limit`` batches each."""

    def drain(shard: int):
        try:
            return flusher._drain(shard, token, limit), None
        except (StoreUnavailable, BufferUnavailable) as exc:
            return [], exc

    for shard, (results, error) in zip(shards, flusher._map(drain, shards), strict=True):
        done[shard].extend(results)
        if error is not None:
            errors[shard] = error


def _round(flusher: Flusher, shards: list[int], token: str, held: set[int]) -> list[ShardFlush]:
    """Claim, number, apply (one transaction) and release the batches of ``shards``; the
    flush locks (``token``) of those that need no other round go with the releases, and
    leave ``held``."""
    from .flush import APPLY_SETTINGS, ShardFlush

    started = time.perf_counter()
    flusher._ensure_edges()
    buffer = flusher.buffer
    claims = [c for c in buffer.claim_many({s: uuid.uuid4().hex for s in shards}).values() if c]
    if not claims:
        return []
    for claim in claims:
        flusher._stage("claimed", claim.shard)
    work: list[tuple[Claim, Batch, ShardFlush]] = []
    gens: dict[int, str | None] = {}
    with sql_errors(f"apply shards {shards}"), flusher.sql.begin() as conn:
        # nextval() is not transactional: these seqs are taken now, after the claims,
        # whatever becomes of this transaction
        n = sum(c.seq is None for c in claims)
        fresh = iter(conn.execute(settings_and_seqs(), {"n": n}).scalars().all() if n else ())
        if not n:
            conn.execute(APPLY_SETTINGS)
        seqs = buffer.number_many(
            [(c.shard, c.token, next(fresh) if c.seq is None else None) for c in claims]
        )
        for claim, seq in zip(claims, seqs, strict=True):
            # None: another flush finished that batch while we were numbering it
            if seq is not None:
                result = ShardFlush(claim.shard, seq, resumed=claim.resumed, partial=claim.partial)
                work.append((claim, split(flusher.registry, claim.fields), result))
        if not work:
            return []
        for claim, batch, result in work:
            flusher._stage("numbered", claim.shard)
            result.counters = batch.size
            if batch.oldest_ms is not None:
                result.lag_s = max(0.0, (now_ms() - batch.oldest_ms) / 1000)
        apply = []
        for (claim, batch, result), (verdict, gen) in zip(
            work, mark_many(flusher, conn, [(c, r.seq) for c, _, r in work]), strict=True
        ):
            gens[claim.shard] = gen
            if verdict is None:
                result.already_applied = True
            elif verdict in lineage.DROPPED:
                flusher._roll_back(conn, claim, batch, result, verdict, gen)
            else:
                apply.append((batch, result))
        apply_merged(flusher, conn, apply)
        for claim, _, _ in work:
            flusher._stage("applied", claim.shard)
    for claim, _, _ in work:
        flusher._stage("committed", claim.shard)
    releases = []
    for claim, _, _ in work:
        gen = gens[claim.shard]
        # a rollback leaves this Redis on a lineage the ledger has left: take the ledger's
        moved = claim.base is not None and gen is not None and gen != claim.base.gen
        releases.append((claim.shard, claim.token, gen if moved else None))
    again = {c.shard for c, _, _ in work if c.resumed or c.partial}
    last = [s for s in shards if s not in again]
    buffer.release_many(releases, last, token)
    held.difference_update(last)
    took = time.perf_counter() - started
    for _, _, result in work:
        result.duration_s = took
        flusher._log(result)
    return [result for _, _, result in work]


def mark_many(flusher: Flusher, conn: sa.Connection, batches: list[tuple[Claim, int]]) -> list:
    """``Flusher._mark`` of each ``(claim, seq)``, in one statement (MARK_APPLIED_MANY):
    ``[(verdict, gen), …]`` in the same order; the claims in shard order."""
    params = [flusher._mark_params(claim, seq) for claim, seq in batches]
    many = {"scope": flusher.scope}
    for name, key in (("shards", "shard"), ("seqs", "seq"), ("bgens", "bgen"), ("bseqs", "bseq")):
        many[name] = [p[key] for p in params]
    many["mints"] = [p["mint"] for p in params]
    many["splits"] = [p["split"] for p in params]
    marked = {row[0]: (row[1], row[2]) for row in conn.execute(lineage.MARK_APPLIED_MANY, many)}
    return [
        marked[claim.shard] if claim.shard in marked else flusher._unmarked(conn, claim)
        for claim, _ in batches
    ]


def merged(parts: list[TableDeltas]) -> TableDeltas:
    """One table's deltas of several batches as one: per column, their ids and deltas
    joined (summed per id, should an id come twice)."""
    table = TableDeltas(parts[0].table)
    for column in sorted({c.column for p in parts for c in p.columns}):
        cols = [c for p in parts for c in p.columns if c.column == column]
        ids = tuple(i for c in cols for i in c.ids)
        deltas = tuple(d for c in cols for d in c.deltas)
        if len(cols) > 1 and len(set(ids)) < len(ids):
            sums: dict[int, int] = {}
            for i, d in zip(ids, deltas, strict=True):
                sums[int(i)] = sums.get(int(i), 0) + int(d)
            ids = tuple(str(i).encode() for i in sums)
            deltas = tuple(str(d).encode() for d in sums.values())
        table.columns.append(ColumnDeltas(column, ids, deltas))
    return table


def apply_merged(flusher: Flusher, conn: sa.Connection, work: list) -> None:
    """``Flusher._apply`` for several batches ``[(batch, result), …]``: one UPDATE per
    table for all, what is dropped (rows gone, unknown codes) counted per batch."""
    from .flush import add_columns, drop_missing

    gone_by_table: dict[str, set[int]] = {}
    for batch, result in work:
        result.deltas_dropped += batch.unknown
    for table in sorted({t for batch, _ in work for t in batch.tables}):
        parts = [(batch.tables[table], result) for batch, result in work if table in batch.tables]
        deltas = merged([p for p, _ in parts])
        applied = add_columns(conn, table, [(c.column, *c.arrays()) for c in deltas.columns])
        gone: set[int] = set()
        if applied.rowcount < deltas.row_count():
            updated = {r[0] for r in applied}
            for part, result in parts:
                drop_missing(table, part, updated, result, gone)
        for part, result in parts:
            lost = sum(1 for m in result.missing if m[0] == table) if gone else 0
            result.rows += part.row_count() - lost
        gone_by_table[table] = gone
        flusher._save_uniques(conn, table, deltas, gone)
    kept = []
    for batch, result in work:
        # a bucket goes where its counter's delta went: rows gone drop both
        mine = [b.without(gone_by_table.get(b.table, set())) for b in batch.buckets]
        result.buckets = sum(len(b.ids) for b in mine)
        kept += mine
    if kept:
        buckets.apply(conn, flusher.scope, kept, flusher.trending)
