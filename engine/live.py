"""Live counts: the Postgres value plus every delta Postgres does not hold yet.

A read takes one Redis round trip (an atomic snapshot per shard) and then one SQL
statement that returns the row values with their shard's ledger (``applied_seq`` and
lineage) from the same snapshot. The inflight batch is added only while
``applied_seq`` is below its seq, so the window between a flush's commit and its
release never counts twice. A batch whose base the ledger has moved past
(engine/lineage.py) is not added either: Postgres holds it already, either because
a whole claim-and-commit slipped in between the two reads, or because Redis came
back older than Postgres. Batches written before bases existed fall back to the
older check: when ``applied_seq`` is above every seq the Redis snapshot knew, the
read is retried.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import sqlalchemy as sa

from .buffer import LAYOUT_UNKNOWN, Buffer, Outcome, RoundTrip, Unapplied
from .errors import BufferUnavailable, redis_errors, sql_errors
from .keys import field
from .lineage import APPLIED, NEW_GEN, Ledger, fate, successor_fate
from .policy import Rule
from .readmodel import ReadModel
from .registry import IDENT, Counter, Registry
from .sqlarrays import int_array

log = logging.getLogger(__name__)

READ_ATTEMPTS = 3


@functools.lru_cache(maxsize=256)
def stored_query(
    table: str, counted: tuple[str, ...], columns: tuple[str, ...], shard_of: str
) -> str:
    """Rows' counters and ``columns`` with their shard's ledger (applied_seq, gen,
    base_seq, past_gens); ``shard_of`` is ``Keys.shard_sql("t.id")``. psycopg2
    ``%(name)s`` parameters: scope, ids."""
    cols = ", ".join(f"t.{c}" for c in counted + columns)
    return f"""SELECT t.id, {cols},
            coalesce(s.applied_seq, 0), s.gen, s.base_seq, coalesce(s.past_gens, '{{}}')
        FROM {table} t LEFT JOIN counter_shards s
          ON s.scope = %(scope)s AND s.shard = {shard_of.replace("%", "%%")}
        WHERE t.id = ANY(CAST(%(ids)s AS bigint[]))"""


LEDGER_COLUMNS = 4  # what stored_query adds after the columns: a Ledger


def ledger_of(values: Sequence) -> Ledger:
    applied_seq, gen, base_seq, past = values
    return Ledger(applied_seq, gen, base_seq, tuple(past))


def unapplied_parts(snap: Unapplied, ledger: Ledger) -> tuple[bool, bool]:
    """Whether the pending and the inflight deltas of a shard are still to be applied."""
    live = (APPLIED, NEW_GEN)
    inflight = fate(snap.inflight_base, ledger) in live
    # an inflight batch without a seq cannot have been applied: seqs come before commits
    if snap.inflight_seq is not None and ledger.applied_seq >= snap.inflight_seq:
        inflight = False
    if (
        snap.inflight_seq is None
        and snap.pending_base is not None
        and snap.pending_base == snap.inflight_base
    ):
        # pending came after a claim not yet numbered: its base is that batch's, to be
        pending = successor_fate(snap.inflight_base, ledger) in live
    else:
        pending = fate(snap.pending_base, ledger) in live
    return pending, inflight


def unapplied_delta(snap: Unapplied, name: str, ledger: Ledger) -> int:
    """Deltas of one field that are not yet in Postgres, given the shard's ledger."""
    pending, inflight = unapplied_parts(snap, ledger)
    return snap.pending.get(name, 0) * pending + snap.inflight.get(name, 0) * inflight


def snapshot_consistent(snap: Unapplied, applied_seq: int) -> bool:
    """False when Postgres holds a batch claimed after the Redis snapshot was taken and
    the snapshot has no base to tell (batches written before bases existed)."""
    if snap.pending_base is not None or snap.inflight_base is not None:
        return True
    known = snap.inflight_seq if snap.inflight_seq is not None else snap.last_seq
    return known is None or applied_seq <= known


class LiveReader:
    def __init__(
        self,
        buffer: Buffer,
        sql: sa.Engine,
        registry: Registry,
        scope: str,
        model: ReadModel | None = None,
    ) -> None:
        self.buffer = buffer
        self.sql = sql
        self.registry = registry
        self.scope = scope
        self.model = model if model is not None and model.enabled else None

    def _fields(self, counters: list[Counter], ids: Sequence[int]) -> dict[int, list[str]]:
        by_shard: dict[int, list[str]] = {}
        for row_id in ids:
            names = by_shard.setdefault(self.buffer.keys.shard_of(row_id), [])
            names.extend(field(row_id, c.code) for c in counters)
        return by_shard

    def _stored(self, table: str, counters: list[Counter], ids: Sequence[int], columns=()):
        """``{id: (counter values, Ledger, other column values)}`` in one snapshot."""
        shard_of = self.buffer.keys.shard_sql("t.id")
        query = stored_query(table, tuple(c.column for c in counters), tuple(columns), shard_of)
        params = {"scope": self.scope, "ids": int_array(ids)}
        n, k = len(counters), LEDGER_COLUMNS
        # One statement is its own snapshot: no BEGIN before it, no ROLLBACK after it.
        # Sent as plain driver SQL: on a page view, compiling a text() construct cost
        # more Python than the rest of the read.
        with sql_errors(f"read {table}"), self.sql.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            rows = conn.exec_driver_sql(query, params)
            return {r[0]: (r[1 : n + 1], ledger_of(r[-k:]), r[n + 1 : -k]) for r in rows}

    def read(
        self,
        table: str,
        ids: Sequence[int],
        bump: tuple[list, Rule | None] | None = None,
        columns: Sequence[str] = (),
    ) -> tuple[Outcome, dict[int, dict[str, int]], dict[int, dict]]:
        """Live counts of ``ids`` (rows that do not exist are left out), and the values
        of ``columns`` of those rows, read by the same statement.

        With ``bump`` (``(pairs, rule)``), first adds those pairs to ``ids[0]`` (under the
        view policy's rule) if the existence index says the row exists, in the same
        Redis round trip as the snapshot; the outcome says whether it counted.

        A view counter's unique-viewer estimate (engine/uniques.py) is the larger of its
        column and the row's HyperLogLog (``PFCOUNT``, in the same round trip): after a
        Redis wipe the column holds what the flush stored until the flush merges it back.

        With the read model (engine/readmodel.py), the rows' stored values and columns
        come from Redis in the same round trip; Postgres is asked only when a row is not
        there, and that row is then filled.
        """
        for name in columns:
            if not IDENT.match(name):
                raise ValueError(f"not a plain column name: {name!r}")
        counters = self.registry.of_table(table)
        uniques = self.registry.uniques_of(table)
        unique_columns = tuple(c.policy.uniques for c in uniques)
        columns = tuple(columns)
        by_shard = self._fields(counters, ids)
        outcome = Outcome.COUNTED
        pending_bump = bump is not None
        layout_set_up = False
        for attempt in range(READ_ATTEMPTS):
            shards = sorted(s for s, f in by_shard.items() if f)
            with redis_errors("live read"):
                # the buffer's lean connection when it has one (engine/wire.py)
                trip = RoundTrip(self.buffer.redis, self.buffer.wire)
                if pending_bump:
                    self.buffer.queue_add(trip, ids[0], bump[0], table, bump[1])
                for c in uniques:
                    for row_id in ids:
                        trip.command("PFCOUNT", self.buffer.keys.uniques(row_id, c.code))
                estimates = len(uniques) * len(ids)
                self.buffer.unapplied(by_shard, trip=trip)
                cached = self.model.fields(counters, columns + unique_columns) if self.model else []
                for row_id in ids if self.model else ():
                    self.model.queue(trip, table, row_id, cached)
                replies = trip.execute()
            if pending_bump:
                reply = replies.pop(0)
                if reply == LAYOUT_UNKNOWN and not layout_set_up:
                    # Redis lost the layout: set it up and count again (nothing was written)
                    self.buffer.on_unknown_layout()
                    layout_set_up = True
                    continue
                outcome = self.buffer.outcome(reply)
                if not outcome.found:
                    return outcome, {}, {}
                pending_bump = False
            counted, replies = replies[:estimates], replies[estimates:]
            models = [self.model.parse(r, len(counters)) for r in replies[len(shards) :]]
            snaps = self.buffer.parse_unapplied(shards, by_shard, replies[: len(shards)])
            if models and all(m[1] is not None for m in models):
                return outcome, *self._from_model(counters, ids, columns, models, snaps, counted)
            stored = self._stored(table, counters, ids, columns + unique_columns)
            if attempt < READ_ATTEMPTS - 1 and not all(
                snapshot_consistent(snaps[self.buffer.keys.shard_of(i)], ledger.applied_seq)
                for i, (_, ledger, _) in stored.items()
            ):
                continue
            out, rows = {}, {}
            position = {row_id: i for i, row_id in enumerate(ids)}
            for row_id, (values, ledger, extra) in stored.items():
                snap = snaps[self.buffer.keys.shard_of(row_id)]
                out[row_id] = {
                    c.column: v + unapplied_delta(snap, field(row_id, c.code), ledger)
                    for c, v in zip(counters, values, strict=True)
                }
                rows[row_id] = dict(zip(columns, extra[: len(columns)], strict=True))
                for k, (c, value) in enumerate(zip(uniques, extra[len(columns) :], strict=True)):
                    redis_count = counted[k * len(ids) + position[row_id]]
                    out[row_id][c.policy.uniques] = max(value, redis_count)
            if models:
                self._fill(table, ids, stored, cached, models)
            return outcome, out, rows
        raise AssertionError("unreachable")

    def _from_model(self, counters, ids, columns, models, snaps, counted):
        """Live counts and columns of rows all found in the read model: stored values
        plus pending and inflight deltas (a release folds a batch in as it drops it)."""
        uniques = self.registry.uniques_of(counters[0].table)
        out, rows = {}, {}
        for i, (row_id, (_, stored, extra)) in enumerate(zip(ids, models, strict=True)):
            snap = snaps[self.buffer.keys.shard_of(row_id)]
            counts = {}
            for c, value in zip(counters, stored, strict=True):
                name = field(row_id, c.code)
                counts[c.column] = value + snap.pending.get(name, 0) + snap.inflight.get(name, 0)
            for k, c in enumerate(uniques):
                counts[c.policy.uniques] = max(extra[len(columns) + k], counted[k * len(ids) + i])
            out[row_id] = counts
            rows[row_id] = dict(zip(columns, extra[: len(columns)], strict=False))
        return out, rows

    def _fill(self, table, ids, stored, fields, models) -> None:
        """Fill the read models of the rows Postgres gave that Redis lacked."""
        calls = []
        for row_id, (version, cached, _) in zip(ids, models, strict=True):
            if cached is not None or row_id not in stored:
                continue
            values, ledger, extra = stored[row_id]
            call = self.model.fill_call(
                table, row_id, version, ledger.applied_seq, fields, [*values, *extra]
            )
            if call is not None:
                calls.append(call)
        try:
            self.model.fill(calls)
        except BufferUnavailable as exc:  # the answer stands; the next read fills it
            log.info("read model fill failed: %s", exc)
