"""Small flushes in one transaction: the claimed batches of every shard, applied together.

Flushed one by one (engine/flush.py), each shard pays fixed costs: its own claim,
seq, ledger fence, commit and release. For a thousand counters spread over sixteen
shards those cost several times the ``UPDATE … FROM unnest`` of the rows themselves.
So when the shards to flush hold few fields (at most ``COMBINE_MAX_FIELDS``, pending
and inflight together), ``Flusher.flush_shards`` takes them all at once:

1. lock every shard, claim every shard (claim.lua, one round trip for all), take one
   seq per new batch (one ``nextval`` query for all) and store them (assign.lua, one
   round trip with one ``WAITAOF`` behind it, per Redis node);
2. ONE transaction: each batch is fenced by its own ledger row (``MARK_APPLIED``, in
   shard order), exactly as alone: already applied, ``stale`` or ``past`` (dropped and
   counted per shard) or applied. The batches that apply are merged into one
   ``UPDATE … FROM unnest`` per table, then their unique viewers and time buckets are
   saved; one commit;
3. release every batch (release.lua with each shard's own arguments, one round trip),
   then unlock.

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

# Fields (deltas, time buckets, bookkeeping) all the shards to flush may hold for them to
# go in one transaction. Below it the fixed costs per shard outweigh the rows; above it
# two shards' transactions at once (flush.FLUSH_THREADS) keep two cores busy, which one
# statement cannot (benchmarks/flush_bench.py measures both at 10k and 100k counters).
COMBINE_MAX_FIELDS = 20_000

Outcome = tuple[list["ShardFlush"], bool, CounterError | None]  # flush._flush_locked's


def is_small(flusher: Flusher, shards: list[int]) -> bool:
    """True when ``shards`` hold few enough fields to flush in one transaction."""
    return sum(flusher.buffer.sizes(shards)) <= COMBINE_MAX_FIELDS


def flush_together(flusher: Flusher, shards: list[int]) -> list[Outcome]:
    """Flush ``shards`` under their flush locks in shared transactions; an outcome per
    shard, in order: (batches flushed, skipped for another flush's lock, error)."""
    from .flush import DRAIN_BATCHES

    token = uuid.uuid4().hex
    buffer = flusher.buffer
    done: dict[int, list[ShardFlush]] = {s: [] for s in shards}
    errors: dict[int, CounterError] = {}
    try:
        locked = buffer.lock_many(shards, token, flusher.lock_ttl_ms)
    except BufferUnavailable as exc:
        return [([], False, exc) for _ in shards]
    try:
        active, rounds = locked, 0
        while active and rounds < DRAIN_BATCHES:
            if rounds and not is_small(flusher, active):
                _per_shard(flusher, active, token, done, errors, DRAIN_BATCHES - rounds)
                break
            try:
                results = _round(flusher, active)
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
    except BufferUnavailable as exc:  # relocking
        errors.update((s, exc) for s in active if s not in errors)
    finally:
        try:
            buffer.unlock_many(locked, token)
        except BufferUnavailable as exc:
            log.warning("could not drop the flush locks of shards %s: %s", locked, exc)
    return [(done[s], s not in locked, errors.get(s)) for s in shards]


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


def _round(flusher: Flusher, shards: list[int]) -> list[ShardFlush]:
    """Claim, number, apply (one transaction) and release the batches of ``shards``."""
    from .flush import APPLY_SETTINGS, ShardFlush

    started = time.perf_counter()
    flusher._ensure_edges()
    buffer = flusher.buffer
    claims = [c for c in buffer.claim_many({s: uuid.uuid4().hex for s in shards}).values() if c]
    for claim in claims:
        flusher._stage("claimed", claim.shard)
    fresh = iter(flusher._next_seqs(sum(c.seq is None for c in claims)))
    seqs = buffer.number_many(
        [(c.shard, c.token, next(fresh) if c.seq is None else None) for c in claims]
    )
    # a batch finished by another flush while we were numbering it is not ours any more
    numbered = [(c, seq) for c, seq in zip(claims, seqs, strict=True) if seq is not None]
    if not numbered:
        return []
    for claim, _ in numbered:
        flusher._stage("numbered", claim.shard)
    work: list[tuple[Claim, Batch, ShardFlush]] = []
    for claim, seq in numbered:
        result = ShardFlush(claim.shard, seq, resumed=claim.resumed, partial=claim.partial)
        batch = split(flusher.registry, claim.fields)
        result.counters = batch.size
        if batch.oldest_ms is not None:
            result.lag_s = max(0.0, (now_ms() - batch.oldest_ms) / 1000)
        work.append((claim, batch, result))
    gens: dict[int, str | None] = {}
    names = [c.shard for c, _ in numbered]
    with sql_errors(f"apply shards {names}"), flusher.sql.begin() as conn:
        conn.execute(APPLY_SETTINGS)
        apply = []
        for claim, batch, result in work:  # in shard order: ledger rows locked in order
            verdict, gens[claim.shard] = flusher._mark(conn, claim, result.seq)
            if verdict is None:
                result.already_applied = True
            elif verdict in lineage.DROPPED:
                flusher._roll_back(conn, claim, batch, result, verdict, gens[claim.shard])
            else:
                apply.append((batch, result))
        apply_merged(flusher, conn, apply)
        for shard in names:
            flusher._stage("applied", shard)
    for shard in names:
        flusher._stage("committed", shard)
    releases = []
    for claim, _, _ in work:
        gen = gens[claim.shard]
        # a rollback leaves this Redis on a lineage the ledger has left: take the ledger's
        moved = claim.base is not None and gen is not None and gen != claim.base.gen
        releases.append((claim.shard, claim.token, gen if moved else None))
    buffer.release_many(releases)
    took = time.perf_counter() - started
    for _, _, result in work:
        result.duration_s = took
        flusher._log(result)
    return [result for _, _, result in work]


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
    from .flush import add_columns

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
                for row_id, fields in sorted(part.fields_per_row().items()):
                    if row_id not in updated:
                        gone.add(row_id)
                        result.rows_missing += 1
                        result.deltas_dropped += fields
                        result.missing.append((table, row_id))
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
