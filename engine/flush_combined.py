"""Small flushes in one transaction: the claimed batches of every shard, applied together.

Flushed one by one (engine/flush.py), each shard pays fixed costs: its own claim,
seq, ledger fence, commit and release. For a thousand counters spread over sixteen
shards those cost several times the ``UPDATE … FROM unnest`` of the rows themselves.
``Flusher.flush_shards`` takes the flush locks of the dirty shards and their sizes in
one round trip (lock_dirty.lua). When together they hold few fields (at most
``COMBINE_MAX_FIELDS``, pending and inflight), it flushes them all at once:

1. claim every shard (claim.lua, one round trip for all);
2. ONE transaction. Its first statement sets the planner settings and records every
   batch in its own ledger row (MARK_APPLIED_MANY: rows locked in shard order, a new
   batch taking its seq from ``nextval`` there), with the verdict it would get alone:
   already applied, ``stale`` or ``past`` (dropped and counted per shard) or applied.
   Redis then learns the new seqs (assign.lua, one round trip with one ``WAITAOF``
   behind it, per Redis node), before the commit can make them count; should a batch
   turn out numbered by another flush meanwhile (our locks lapsed), the transaction is
   rolled back and the batches left to that flush. The batches that apply are merged
   into one ``UPDATE … FROM unnest`` per table, then their unique viewers and time
   buckets are saved; one commit;
3. release every batch (release.lua with each shard's own arguments) and drop the flush
   locks, one round trip.

Two waits are overlapped with other work, on a helper thread of the round's own
(engine/helper_threads.py): the ledger statement runs there while the claims are split,
and the numbering round trip while the batches are applied; the transaction commits only
once both are back. The locks, claims and releases go on the calling thread's lean
Redis connection (engine/wire.py).

Per shard these are the steps of engine/flush.py, with the ledger record taken before
the seq reaches Redis rather than after (both inside the transaction, before its commit),
and the stage hooks fire per shard, so its guarantees hold: a flusher killed
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

from . import buckets, helper_threads, lineage
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


Outcome = tuple[list["ShardFlush"], bool, CounterError | None]  # flush._flush_locked's


@functools.cache
def settings_and_mark() -> sa.TextClause:
    """flush.APPLY_SETTINGS, then MARK_APPLIED_MANY: one round trip, whose result is the
    marks."""
    from .flush import APPLY_SETTINGS

    return sa.text(f"{APPLY_SETTINGS.text}; {lineage.MARK_APPLIED_MANY.text}")


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
    from .flush import ShardFlush

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
    try:
        with (
            sql_errors(f"apply shards {shards}"),
            flusher.sql.begin() as conn,
            helper_threads.borrowed() as helper,
        ):
            # One statement: the planner settings, then every batch recorded in its ledger
            # row, a new batch with a seq taken there (nextval() is not transactional: it
            # is taken now, after the claims, whatever becomes of this transaction). It
            # runs on the helper thread while this one splits the claims.
            marking = helper.submit(mark_many, flusher, conn, claims)
            batches = [split(flusher.registry, claim.fields) for claim in claims]
            marks = marking.result()
            # Redis learns the new seqs (on the helper thread) while this thread applies
            # the batches; both before the commit, which alone makes the seqs count.
            numbering = helper.submit(
                buffer.number_many,
                [(c.shard, c.token, seq if c.seq is None else None) for c, (seq, _, _) in marks],
            )
            # (an error leaves the block only once the helper is idle: helper_threads)
            for (claim, (seq, verdict, gen)), batch in zip(marks, batches, strict=True):
                result = ShardFlush(claim.shard, seq, resumed=claim.resumed, partial=claim.partial)
                work.append((claim, batch, result))
                result.counters = batch.size
                if batch.oldest_ms is not None:
                    result.lag_s = max(0.0, (now_ms() - batch.oldest_ms) / 1000)
                gens[claim.shard] = gen
                if verdict is None:
                    result.already_applied = True
                elif verdict in lineage.DROPPED:
                    flusher._roll_back(conn, claim, batch, result, verdict, gen)
            apply_merged(flusher, conn, [(b, r) for _, b, r in work if r.applied])
            seqs = numbering.result()
            if any(seq != got for (_, (seq, _, _)), got in zip(marks, seqs, strict=True)):
                # our locks lapsed and another flush numbered or finished a batch meanwhile:
                # this transaction's record of it would be wrong; leave them all to it
                raise _Raced
            for claim, _, _ in work:
                flusher._stage("numbered", claim.shard)
            for claim, _, _ in work:
                flusher._stage("applied", claim.shard)
    except _Raced:
        log.info("shards %s: another flush took over their batches", shards)
        return []
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


class _Raced(Exception):
    """A batch of the round is no longer ours to number: roll the transaction back."""


def mark_many(flusher: Flusher, conn: sa.Connection, claims: list[Claim]) -> list:
    """``Flusher._mark`` of each claimed batch, after the planner settings, in one round
    trip (MARK_APPLIED_MANY); a batch without a seq takes a fresh one there. ``[(claim,
    (seq, verdict, gen)), …]`` in the same order; the claims in shard order."""
    params = [flusher._mark_params(claim, claim.seq) for claim in claims]
    many = {"scope": flusher.scope}
    for name, key in (("shards", "shard"), ("seqs", "seq"), ("bgens", "bgen"), ("bseqs", "bseq")):
        many[name] = [p[key] for p in params]
    many["mints"] = [p["mint"] for p in params]
    many["splits"] = [p["split"] for p in params]
    rows = conn.execute(settings_and_mark(), many)
    marked = {row[0]: (row[3], row[1], row[2]) for row in rows}
    out = []
    for claim in claims:
        if claim.shard in marked:
            out.append((claim, marked[claim.shard]))
        else:  # already applied: only a batch that had its seq can be
            out.append((claim, (claim.seq, *flusher._unmarked(conn, claim))))
    return out


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
        updated = add_columns(conn, table, [(c.column, *c.arrays()) for c in deltas.columns])
        gone: set[int] = set()
        if updated < deltas.row_count():
            drop_missing(conn, table, parts, gone)
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
