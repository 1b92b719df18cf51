"""Batch lineage: whether a batch is new to Postgres, or a copy of what it already holds
because Redis came back older than Postgres.

Redis can lose its recent past without losing everything: a restart from an RDB dump,
an AOF that missed its last writes, a replica promoted with lag. Deltas that were
claimed and applied after that point come back as pending (or as an inflight batch
without a seq), and a fresh seq would pass the ``applied_seq`` fence. So every batch
names its place in the shard's history:

* ``gen``: a token per Redis lineage and shard, written by the first increment of a
  shard that has none. A wiped Redis gets a new one; a rolled-back one keeps the old.
* ``base = "<gen>:<seq>"`` on every pending hash: the seq of the batch just before it.
  Set when the hash is created (the shard's last seq) and, when the inflight batch
  ahead of it gets its seq, rewritten to that seq. A batch is claimed only after the
  one before it is applied, so in normal operation ``base seq == applied_seq``.

The ledger keeps, per shard, ``gen`` (lineage of the last batch), ``base_seq`` (that
batch's base) and ``past_gens`` (lineages seen before). A flush decides with one upsert
(:data:`MARK_APPLIED`); the rules (:func:`fate` is the same in Python, for reads):

* no ledger row, or a batch without a base (written before bases existed): apply;
* base gen == ledger gen: apply if base seq >= applied_seq, else it is ``stale``:
  Postgres holds a later batch, so this one (or its contents) was applied before;
* base gen among the past ones: ``past``, a Redis restored from before a wipe: drop;
* base gen unknown: a new Redis (wiped or fresh); apply, and remember the old gen.

A dropped batch still moves ``applied_seq`` to its seq: the next batch, based on it,
applies. Unless that next batch existed before Redis came back, when it may hold deltas
Postgres has too: the pending hash behind a stale batch that was already inflight then
(``resumed``), or the rest of a pending hash a bounded claim split the stale batch off
(``split``). Both were rebased onto the seq this flush just made up. So the flush mints
a new gen for the shard, in the same transaction, and Redis takes it at release: that
successor keeps the old gen (a rebase keeps a hash's gen) and is dropped as ``past``,
and what is written after it applies. A resumed batch is spared this when the ledger
shows it was exactly the last one applied (same base seq): it is a copy of that batch,
and what followed it never reached Postgres.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

PAST_GENS = 32  # lineages the ledger remembers per shard

APPLIED = "applied"  # applied (also: a batch without a base, the first of a new Redis)
NEW_GEN = "new_gen"  # applied; the first batch of a Redis the ledger did not know
STALE = "stale"  # dropped: Postgres holds a later batch of the same lineage
PAST = "past"  # dropped: the batch comes from a lineage Postgres left behind
DROPPED = (STALE, PAST)


@dataclass(frozen=True)
class Base:
    """Where a batch sits in its shard's history: its lineage and the seq before it."""

    gen: str
    seq: int

    @classmethod
    def parse(cls, raw) -> Base | None:
        if raw is None:
            return None
        if isinstance(raw, bytes):
            raw = raw.decode()
        gen, _, seq = raw.rpartition(":")
        return cls(gen, int(seq))

    def __str__(self) -> str:
        return f"{self.gen}:{self.seq}"


@dataclass(frozen=True)
class Ledger:
    """A shard's row of ``counter_shards``, as far as lineage goes."""

    applied_seq: int
    gen: str | None = None
    base_seq: int | None = None
    past_gens: tuple[str, ...] = ()


def fate(base: Base | None, ledger: Ledger | None) -> str:
    """What a flush will do with a batch of this base, given the ledger (see above)."""
    if base is None or ledger is None:
        return APPLIED
    if base.gen == ledger.gen:
        return APPLIED if base.seq >= ledger.applied_seq else STALE
    if base.gen in ledger.past_gens:
        return PAST
    return NEW_GEN


def successor_fate(base: Base | None, ledger: Ledger | None) -> str:
    """The fate of the batch that follows an unnumbered inflight batch of this base (a
    pending hash created after that claim carries the same base until the seq comes)."""
    ahead = fate(base, ledger)
    if ahead == STALE and ledger.base_seq == base.seq:
        return APPLIED  # the batch ahead is a copy of the last one applied, not later
    return ahead


_VERDICT = f"""(CASE
        WHEN EXCLUDED.gen IS NULL THEN '{APPLIED}'
        WHEN EXCLUDED.gen = c.gen THEN
            CASE WHEN EXCLUDED.base_seq >= c.applied_seq THEN '{APPLIED}' ELSE '{STALE}' END
        WHEN EXCLUDED.gen = ANY(c.past_gens) THEN '{PAST}'
        ELSE '{NEW_GEN}' END)"""
# a stale batch that was resumed, unless the ledger's last batch had its very base (then
# it is a copy of that batch); or a stale batch that a bounded claim split off
_MINT = """(EXCLUDED.gen = c.gen AND EXCLUDED.base_seq < c.applied_seq
        AND CAST(:mint AS text) IS NOT NULL
        AND (CAST(:split AS boolean) OR c.base_seq IS DISTINCT FROM EXCLUDED.base_seq))"""

# Locks the shard's ledger row and records the batch, in one statement: no row back
# means the batch (its seq) is already in Postgres; else ``verdict`` says whether to
# apply it and ``gen`` is the lineage Redis must carry from now on. Parameters: scope,
# shard, seq, bgen/bseq (the batch's base, or NULL), mint (a new gen, or NULL unless the
# batch was resumed or split off), split (claimed now, and split off a larger hash).
# The verdict is spelled out in each SET expression: a sub-select computing it once
# costs Postgres more planning than the repeats cost evaluating.
MARK_APPLIED = sa.text(
    f"""INSERT INTO counter_shards AS c (scope, shard, applied_seq, gen, base_seq)
    VALUES (:scope, :shard, :seq, CAST(:bgen AS text), CAST(:bseq AS bigint))
    ON CONFLICT (scope, shard) DO UPDATE SET
        applied_seq = EXCLUDED.applied_seq,
        applied_at = now(),
        base_seq = EXCLUDED.base_seq,
        verdict = {_VERDICT},
        gen = CASE WHEN {_VERDICT} = '{NEW_GEN}' THEN EXCLUDED.gen
                   WHEN {_MINT} THEN CAST(:mint AS text)
                   ELSE c.gen END,
        past_gens = CASE WHEN c.gen IS NOT NULL AND ({_VERDICT} = '{NEW_GEN}' OR {_MINT})
                         THEN (c.gen || c.past_gens)[1:{PAST_GENS}]
                         ELSE c.past_gens END
    WHERE c.applied_seq < EXCLUDED.applied_seq
    RETURNING verdict, gen"""
)

# MARK_APPLIED for the batches of several shards in one statement (engine/flush_combined.py),
# with the same verdicts: its rows come from arrays, one element per batch (shards,
# seqs, bgens, bseqs, mints, splits), ledger rows locked in shard order, and each
# batch's mint and split are looked up by its shard. A NULL seq is a batch that has none
# yet: it takes a fresh one from counter_batch_seq here (above every seq applied), which
# RETURNING gives back with the shard. A batch with no row back is already in Postgres.
_AT = "array_position(CAST(:shards AS integer[]), EXCLUDED.shard)"
MARK_APPLIED_MANY = sa.text(
    MARK_APPLIED.text.replace(
        "VALUES (:scope, :shard, :seq, CAST(:bgen AS text), CAST(:bseq AS bigint))",
        """SELECT :scope, u.shard, coalesce(u.seq, nextval('counter_batch_seq')), u.bgen, u.bseq
      FROM unnest(CAST(:shards AS integer[]), CAST(:seqs AS bigint[]),
                  CAST(:bgens AS text[]), CAST(:bseqs AS bigint[])) AS u(shard, seq, bgen, bseq)
     ORDER BY u.shard""",
    )
    .replace("CAST(:mint AS text)", f"(CAST(:mints AS text[]))[{_AT}]")
    .replace("CAST(:split AS boolean)", f"(CAST(:splits AS boolean[]))[{_AT}]")
    .replace("RETURNING verdict, gen", "RETURNING shard, verdict, gen, applied_seq")
)

# What a dropped batch cost, added to the ledger row in the transaction that dropped it
# (schema step 0004): these totals outlive the Redis they are about (engine/stats.py).
COUNT_ROLLBACK = sa.text(
    """UPDATE counter_shards SET batches_rolled_back = batches_rolled_back + 1,
        deltas_dropped_rollback = deltas_dropped_rollback + :deltas
    WHERE scope = :scope AND shard = :shard"""
)
ROLLBACK_TOTALS = sa.text(
    """SELECT COALESCE(SUM(batches_rolled_back), 0), COALESCE(SUM(deltas_dropped_rollback), 0)
    FROM counter_shards WHERE scope = :scope"""
)

LEDGER_GEN = sa.text("SELECT gen FROM counter_shards WHERE scope = :scope AND shard = :shard")
