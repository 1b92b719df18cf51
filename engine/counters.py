"""``Counters``: the engine's one entry point, built from clients the caller owns."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from . import durability
from .buffer import CLAIM_MAX_FIELDS, FLUSH_LOCK_TTL_MS, Buffer, Outcome
from .errors import BufferUnavailable, CounterError
from .exists import Existence
from .flush import FLUSH_THREADS, Flusher, FlushSummary, Hook, ShardFlush
from .keys import DRAINING, Keys
from .layout import Layout
from .live import LiveReader
from .reconcile import Reconciler, ReconcileResult
from .registry import Registry
from .stats import Stats

log = logging.getLogger(__name__)

DEFAULT_SHARDS = 16
RESHARD_FLUSH_ROUNDS = 200  # flushes of the draining shards before a reshard gives up


class Counters:
    """Batched write-behind counters.

    ``redis`` is a ``redis.Redis`` or ``redis.cluster.RedisCluster`` (build it with
    ``engine.redis_client``: no command is ever sent twice), ``sql`` a SQLAlchemy
    engine on Postgres; nothing is created at import time. ``prefix``
    scopes the Redis keys and the ledger rows, so several apps can share servers.
    ``hook(stage, shard)`` is called at each flush stage (claimed, numbered, applied,
    committed), from the flushing thread. ``flush_lock_ttl_ms`` bounds how long a
    flusher that died holds its shard back from the next flush. ``flush_threads``
    shards flush at once, each on its own SQL connection. A batch holds at most
    ``claim_max_fields`` deltas: a larger backlog drains in several transactions.
    """

    def __init__(
        self,
        redis,
        sql: sa.Engine,
        registry: Registry,
        *,
        shards: int = DEFAULT_SHARDS,
        prefix: str = "ctr",
        hook: Hook | None = None,
        flush_lock_ttl_ms: int = FLUSH_LOCK_TTL_MS,
        flush_threads: int = FLUSH_THREADS,
        claim_max_fields: int = CLAIM_MAX_FIELDS,
    ) -> None:
        self.registry = registry
        self.keys = Keys(prefix=prefix, shards=shards)
        self.layout = Layout(redis, sql, self.keys)
        # without Postgres (a Redis-only benchmark), a shard takes this process' count
        setup = self.layout.check if sql is not None else None
        self.buffer = Buffer(redis, self.keys, setup, claim_max_fields)
        self.existence = Existence(self.buffer, sql)
        self.flusher = Flusher(
            self.buffer, sql, registry, prefix, hook, flush_lock_ttl_ms, flush_threads
        )
        self.live = LiveReader(self.buffer, sql, registry, prefix)
        self.reconciler = Reconciler(self.buffer, sql, registry, prefix)
        self.stats = Stats(redis, self.keys)

    def incr(self, name: str, row_id: int, n: int = 1, *, check_exists: bool = False) -> Outcome:
        """Add ``n`` to a counter in one Redis round trip; Postgres gets it at the next flush.

        With ``check_exists`` nothing is written unless the row is in the existence
        index (``Outcome.MISSING``); ``Outcome.NOT_LOADED`` means the index is gone and
        the caller must check Postgres itself.
        """
        counter = self.registry.get(name)
        table = counter.table if check_exists else None
        return self.buffer.add(row_id, [(counter.code, n)], table)

    def incr_if_exists(self, name: str, row_id: int, n: int = 1) -> bool:
        """Add ``n`` if the row exists; False (nothing written) when it does not.

        One Redis round trip when the existence index knows the row. When the index
        says the row is missing, or is not loaded, Postgres decides (one primary-key
        lookup): the index may be older than the table (Redis restarted from a dump) or
        gone, and a row that exists must never read as missing. A row found that way is
        counted, and marked again in a stale index; a lost index is left for
        :meth:`ensure_index` (a background task) to rebuild.
        """
        counter = self.registry.get(name)
        outcome = self.buffer.add(row_id, [(counter.code, n)], counter.table)
        if outcome is Outcome.COUNTED:
            return True
        return self._add_if_stored(counter, row_id, n, outcome)

    def _add_if_stored(self, counter, row_id: int, n: int, outcome: Outcome) -> bool:
        if not self.existence.stored(counter.table, [row_id]):
            return False
        self.buffer.add(row_id, [(counter.code, n)])
        if outcome is Outcome.MISSING:
            # created after the index's snapshot; if it is deleted meanwhile, the flush
            # drops its deltas like any for a deleted row
            self.existence.mark(counter.table, [row_id])
        return True

    def index_loaded(self, tables: Iterable[str] | None = None) -> bool:
        """True when the existence index of every table (default: the registry's) is loaded."""
        return all(self.existence.loaded(t) for t in tables or self.registry.tables())

    def ensure_index(self, tables: Iterable[str] | None = None) -> dict[str, int]:
        """Load the existence index of each table (default: the registry's) that lacks
        one; returns the rows marked per table loaded. For a background task."""
        return self.existence.ensure_loaded(tables or self.registry.tables())

    def rebuild_index(self, table: str) -> int:
        """Drop and reload the existence index of ``table`` (after Redis came back from
        an old dump: clears rows deleted since); returns the rows marked."""
        self.existence.drop(table)
        return self.existence.load(table)

    def incr_many(self, items: Iterable[tuple[str, int, int]]) -> None:
        """Add ``(name, id, n)`` deltas in one pipelined round trip, without existence checks."""
        rows: dict[int, list[tuple[str, int]]] = {}
        for name, row_id, n in items:
            rows.setdefault(row_id, []).append((self.registry.get(name).code, n))
        self.buffer.add_many(rows.items())

    def incr_checked(self, items: Sequence[tuple[str, int, int]]) -> list[Outcome]:
        """``incr(name, id, n, check_exists=True)`` for each ``(name, id, n)``, in one
        pipelined round trip; the outcomes in the same order."""
        rows = []
        for name, row_id, n in items:
            counter = self.registry.get(name)
            rows.append((row_id, [(counter.code, n)], counter.table))
        return self.buffer.add_checked(rows)

    def read(self, table: str, ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Live counts (Postgres + unapplied deltas) of existing rows among ``ids``."""
        return self.live.read(table, ids)[1]

    def bump_and_read(
        self, name: str, row_id: int, columns: Sequence[str] = ()
    ) -> tuple[Outcome, dict[str, int] | None, dict | None]:
        """Count one event on an existing row; return its live counts (including it) and
        its ``columns``, fetched by the same SQL statement (one Redis round trip, one
        statement). Counts and row are None when the row is gone.

        ``Outcome.MISSING`` is confirmed by Postgres (see :meth:`incr_if_exists`): a
        row the index lacks but the table has is counted and read like any other.
        ``Outcome.NOT_LOADED`` means the index is gone and nothing was written.
        """
        counter = self.registry.get(name)
        outcome, counts, rows = self.live.read(
            counter.table, [row_id], bump=counter, columns=columns
        )
        if outcome is Outcome.MISSING and self._add_if_stored(counter, row_id, 1, outcome):
            outcome = Outcome.COUNTED
            _, counts, rows = self.live.read(counter.table, [row_id], columns=columns)
        return outcome, counts.get(row_id), rows.get(row_id)

    def flush_shard(self, shard: int) -> ShardFlush | None:
        return self.flusher.flush_shard(shard)

    def flush_all(self) -> FlushSummary:
        """Flush every dirty shard and add the outcome to the shared stats.

        On failure the error (with ``.summary``) is raised after the stats are kept.
        """
        return self._recorded(self.flusher.flush_all)

    def flush_shards(self, shards: Iterable[int]) -> FlushSummary:
        """Flush a group of shards (one worker's share of a fanned-out flush), recorded
        in the shared stats like :meth:`flush_all`."""
        return self._recorded(lambda: self.flusher.flush_shards(shards))

    def _recorded(self, flush) -> FlushSummary:
        try:
            summary = flush()
        except CounterError as exc:
            if getattr(exc, "summary", None) is not None:
                self._keep(self.stats.record_flush, exc.summary)
            raise
        self._keep(self.stats.record_flush, summary)
        return summary

    def reconcile(
        self, names: Iterable[str] | None = None, ids: Sequence[int] | None = None
    ) -> ReconcileResult:
        """Recount and correct drift (see engine.reconcile); kept in the shared stats."""
        result = self.reconciler.reconcile(names, ids)
        self._keep(self.stats.record_reconcile, result)
        record = {"event": "counter_reconcile", "scope": self.keys.prefix}
        log.info("%s", json.dumps({**record, **result.as_dict(limit=20)}))
        return result

    @staticmethod
    def _keep(record, outcome) -> None:
        # stats are advisory: losing them must not turn a done flush into a failed one
        try:
            record(outcome)
        except BufferUnavailable as exc:
            log.warning("could not record counter stats: %s", exc)

    def backlog(self) -> list[dict]:
        return self.buffer.backlog()

    def check_layout(self) -> int:
        """Raise LayoutMismatch unless this Counters' shard count is the one recorded
        for its scope (the first process of a scope records its own); returns it. Call
        it at startup; increments of a process with another count are refused anyway."""
        return self.layout.check()

    def reshard(self, new_shards: int) -> dict:
        """Move the scope to ``new_shards`` shards (engine/layout.py): refuse every
        increment (LayoutMismatch, a 503) while every shard is flushed empty, rebuild
        the existence index for the new layout, record the new count.

        This Counters keeps its old count and is refused from then on: build a new one
        with ``shards=new_shards`` (and restart every process with it). Safe to run
        again after a failure. Returns ``{"from", "to", "batches", "index"}``.
        """
        old = self.keys.shards
        if new_shards < 1 or new_shards == old:
            raise ValueError(f"cannot reshard from {old} to {new_shards} shards")
        if self.layout.recorded() not in (None, old):
            self.layout.check()  # raises: this process is not on the recorded layout
        span = max(old, new_shards)
        self.layout.set_all(span, f"{DRAINING}{new_shards}")
        batches = self._flush_empty(span)
        target = Buffer(self.buffer.redis, Keys(self.keys.prefix, new_shards))
        existence = Existence(target, self.existence.sql)
        index = {}
        for table in self.registry.tables():
            existence.drop(table, span)
            index[table] = existence.load(table)
        self.layout.switch(old, new_shards)
        self.layout.set_all(span, str(new_shards))
        result = {"from": old, "to": new_shards, "batches": batches, "index": index}
        log.warning(
            "%s", json.dumps({"event": "counter_reshard", "scope": self.keys.prefix, **result})
        )
        return result

    def _flush_empty(self, span: int) -> int:
        """Flush shards ``0 .. span - 1`` until none holds a delta; returns the batches."""
        batches = 0
        for _ in range(RESHARD_FLUSH_ROUNDS):
            dirty = self.buffer.dirty_shards(span)
            if not dirty:
                return batches
            summary = self._recorded(lambda d=dirty: self.flusher.flush_shards(d))
            batches += len(summary.shards)
            if summary.skipped:  # another flush holds those shards: it empties them
                time.sleep(self.flusher.lock_ttl_ms / 1000 / 10)
        raise BufferUnavailable(f"shards still hold deltas after {RESHARD_FLUSH_ROUNDS} flushes")

    def durability(self) -> dict:
        """What the buffer's Redis keeps across a crash, per primary: version, AOF on/off,
        appendfsync, WAITAOF available, maxmemory-policy (see engine.durability)."""
        return durability.report(self.buffer.redis)

    def check_durability(self, allow_eviction: bool = False) -> dict:
        """:meth:`durability`, or UnsafeRedis when a primary may evict pending deltas
        (``maxmemory-policy allkeys-*``) and ``allow_eviction`` is False."""
        return durability.check(self.buffer.redis, allow_eviction)
