"""``Counters``: the engine's one entry point, built from clients the caller owns."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import activity, durability, lineage, report, writes
from .buffer import CLAIM_MAX_FIELDS, FLUSH_LOCK_TTL_MS, Buffer, Outcome
from .errors import BufferUnavailable, CounterError, UnknownCounter, redis_errors
from .exists import Existence
from .flush import FLUSH_THREADS, Flusher, FlushSummary, Hook, ShardFlush
from .flush_combined import COMBINE_MAX_FIELDS
from .forks import forget_pool_after_fork
from .keys import DEFAULT_SCOPE, DEFAULT_SHARDS, DRAINING, Keys
from .layout import Layout
from .live import LiveReader
from .policy import DEDUPE, DEDUPE_BUCKETS, MODES, RAW, WINDOW_S, Rule, Visit
from .readmodel import DEFAULT_TTL_S as DEFAULT_READ_MODEL_TTL_S
from .readmodel import ReadModel
from .reconcile import Reconciler, ReconcileResult
from .registry import Registry
from .retention import CHUNK_ROWS, HOURLY_RETENTION_DAYS, Retention, RetentionResult
from .stats import DURABLE, Stats
from .window_read import Series, WindowReader
from .windows import current_hour, window

log = logging.getLogger(__name__)

# Row ids are Postgres bigints. A delta for an id outside them could never be applied and
# would fail its whole batch, so no such id is ever written; reads treat it as missing.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def _bigint(row_id: int) -> bool:
    return BIGINT_MIN <= row_id <= BIGINT_MAX


def _checked_id(row_id: int) -> int:
    if not _bigint(row_id):
        raise ValueError(f"row id {row_id} is not a Postgres bigint")
    return row_id


# A rebuild that dies holds its table's lock this long; a live one takes ~1 s per 1M rows.
REBUILD_LOCK_TTL_MS = 600_000
RESHARD_FLUSH_ROUNDS = 200  # flushes of the draining shards before a reshard gives up


class Counters:
    """Batched write-behind counters: the engine's one door.

    ``redis`` is a ``redis.Redis`` or ``redis.cluster.RedisCluster`` (build it with
    ``engine.clients.redis_client``: no command retries, so an increment is never sent
    twice), ``sql`` a SQLAlchemy engine on Postgres, ``registry`` the counters; nothing
    is created at import time. ``scope`` names the Redis keys and the ledger rows, so
    several sites can share servers. ``hook(stage, shard)`` is called at each flush stage
    (claimed, numbered, applied, committed), from the flushing thread (fault tests use
    it). ``flush_lock_ttl_ms`` bounds how long a flusher that died holds its shard back
    from the next flush. ``flush_threads`` shards flush at once, each on its own SQL
    connection, unless together they hold at most ``combine_max_fields`` fields: then
    they flush in one transaction (engine/flush_combined.py; 0: never). A batch holds at
    most ``claim_max_fields`` deltas: a larger backlog drains in several transactions.
    ``view_policy`` (``"dedupe"`` or ``"raw"``), ``view_window_s`` and ``dedupe_buckets``
    govern the counters that have a ``ViewPolicy`` (engine/policy.py): with ``"raw"``
    every view counts, as if they had none. ``read_model_ttl_s`` (0: off) keeps what a
    page shows of a row in Redis, exact (engine/readmodel.py), for that long after it
    was last read from Postgres.
    """

    def __init__(
        self,
        redis,
        sql: sa.Engine,
        registry: Registry,
        *,
        shards: int = DEFAULT_SHARDS,
        scope: str = DEFAULT_SCOPE,
        hook: Hook | None = None,
        flush_lock_ttl_ms: int = FLUSH_LOCK_TTL_MS,
        flush_threads: int = FLUSH_THREADS,
        claim_max_fields: int = CLAIM_MAX_FIELDS,
        combine_max_fields: int = COMBINE_MAX_FIELDS,
        view_policy: str = DEDUPE,
        view_window_s: int = WINDOW_S,
        dedupe_buckets: int = DEDUPE_BUCKETS,
        read_model_ttl_s: int = DEFAULT_READ_MODEL_TTL_S,
    ) -> None:
        if view_policy not in MODES:
            raise ValueError(f"view_policy must be one of {MODES}, not {view_policy!r}")
        if view_window_s < 1 or dedupe_buckets < 1:
            raise ValueError("view_window_s and dedupe_buckets must be at least 1")
        self.view_policy = view_policy
        self.view_window_s = int(view_window_s)
        self.dedupe_buckets = dedupe_buckets
        self.registry = registry
        self.sql = sql
        if sql is not None:
            forget_pool_after_fork(sql)
        self.keys = Keys(scope=scope, shards=shards)
        self.layout = Layout(redis, sql, self.keys)
        # without Postgres (a Redis-only benchmark), a shard takes this process' count
        setup = self.layout.check if sql is not None else None
        self.buffer = Buffer(
            redis,
            self.keys,
            setup,
            claim_max_fields,
            registry.bucketed_codes(),
            [x for c in registry for x in (c.code, c.table)],
        )
        self.read_model = ReadModel(self.buffer, read_model_ttl_s)
        self.existence = Existence(self.buffer, sql)
        self.flusher = Flusher(
            self.buffer,
            sql,
            registry,
            scope,
            hook,
            flush_lock_ttl_ms,
            flush_threads,
            combine_max_fields,
        )  # the flush also stores the unique-viewer estimates (engine/uniques.py)
        self.live = LiveReader(self.buffer, sql, registry, scope, self.read_model)
        self.reconciler = Reconciler(self.buffer, sql, registry, scope, model=self.read_model)
        self.windows = WindowReader(self.buffer, sql, scope)
        self.retention = Retention(sql, registry, scope, hook)
        self.stats = Stats(redis, self.keys, self.buffer.wire)
        self.activity_series = activity.Activity(redis, self.keys)

    @property
    def scope(self) -> str:
        return self.keys.scope

    @property
    def shards(self) -> int:
        return self.keys.shards

    @property
    def flush_threads(self) -> int:
        return self.flusher.threads

    # -- counting ---------------------------------------------------------------

    def incr(self, name: str, row_id: int, n: int = 1, *, check_exists: bool = False) -> Outcome:
        """Add ``n`` to a counter in one Redis round trip; Postgres gets it at the next flush.

        With ``check_exists`` nothing is written unless the row is in the existence
        index (``Outcome.MISSING``); ``Outcome.NOT_LOADED`` means the index is gone.
        Either may be wrong about a row the index has not caught up with:
        :meth:`view` asks Postgres then.
        """
        counter = self.registry.get(name)
        table = counter.table if check_exists else None
        if check_exists and not _bigint(row_id):
            return Outcome.MISSING
        return self.buffer.add(_checked_id(row_id), [(counter.code, n)], table)

    def incr_many(self, items: Iterable[tuple[str, int, int]]) -> None:
        """Add ``(name, id, n)`` deltas in one pipelined round trip, without existence checks."""
        rows: dict[int, list[tuple[str, int]]] = {}
        for name, row_id, n in items:
            rows.setdefault(_checked_id(row_id), []).append((self.registry.get(name).code, n))
        self.buffer.add_many(rows.items())

    def incr_checked(self, items: Sequence[tuple[str, int, int]]) -> list[Outcome]:
        """``incr(name, id, n, check_exists=True)`` for each ``(name, id, n)``, in one
        pipelined round trip; the outcomes in the same order."""
        rows, out = [], []
        for name, row_id, n in items:
            counter = self.registry.get(name)
            if _bigint(row_id):
                rows.append((row_id, [(counter.code, n)], counter.table))
            out.append(_bigint(row_id))
        outcomes = iter(self.buffer.add_checked(rows))
        return [next(outcomes) if ok else Outcome.MISSING for ok in out]

    def view(self, name: str, row_id: int, n: int = 1, visit: Visit | None = None) -> bool:
        """Count ``n`` views (or any event) of a row that exists; False, writing nothing,
        when it does not.

        With ``visit`` and a counter that has a ``ViewPolicy``, the policy decides in the
        same script whether the view counts (a repeat within the window, a crawler, the
        author's own view do not; see engine/policy.py); True either way when the row
        exists.

        One Redis round trip and no SQL when the existence index knows the row. When the
        index says the row is missing, or is not loaded, Postgres decides (one
        primary-key lookup): the index may be older than the table (Redis restarted from
        a dump) or gone, and a row that exists must never read as missing. A row found
        that way is counted, and marked again in a stale index; a lost index is left for
        :meth:`ensure_index` (a background task) to rebuild.
        """
        counter = self.registry.get(name)
        if not _bigint(row_id):
            return False
        pairs, rule = self._plan(counter, row_id, n, visit)
        outcome = self.buffer.add(row_id, pairs, counter.table, rule)
        if outcome.found:
            return True
        return self._add_if_stored(counter, row_id, pairs, rule, outcome)

    def view_many(self, views: Iterable[tuple[str, int, Visit | None]]) -> list[Outcome]:
        """Count ``(name, id, visit)`` views, each under its counter's view policy, in one
        pipelined round trip, without existence checks (rows the caller knows exist:
        an import, a benchmark); ``Outcome.COUNTED`` or ``HELD_BACK`` for each."""
        calls = []
        for name, row_id, visit in views:
            counter = self.registry.get(name)
            pairs, rule = self._plan(counter, _checked_id(row_id), 1, visit)
            calls.append((self.buffer._incr, *self.buffer._incr_call(row_id, pairs, None, rule)))
        return [Outcome(reply) for reply in self.buffer.run(calls)]

    def _plan(
        self, counter, row_id: int, n: int, visit: Visit | None
    ) -> tuple[list[tuple[str, int]], Rule | None]:
        """The pairs one view adds, and the rule the script applies to them."""
        policy = counter.policy
        if visit is None or policy is None or self.view_policy == RAW:
            return [(counter.code, n)], None
        window_s = policy.window_s or self.view_window_s
        rule = Rule.build(
            self.keys, row_id, counter.code, visit, time.time(), window_s, self.dedupe_buckets
        )
        if visit.own:
            return [], rule
        if visit.bot:
            bots = self.registry.bots_of(counter)
            return ([(bots.code, n)] if bots is not None else []), rule
        return [(counter.code, n)], rule

    def _add_if_stored(self, counter, row_id: int, pairs, rule, outcome: Outcome) -> bool:
        if not self.existence.stored(counter.table, [row_id]):
            return False
        self.buffer.add(row_id, pairs, None, rule)
        if outcome is Outcome.MISSING:
            # created after the index's snapshot; if it is deleted meanwhile, the flush
            # drops its deltas like any for a deleted row
            self.existence.mark(counter.table, [row_id])
        return True

    def exists(self, table: str, row_id: int) -> bool:
        """Whether Postgres has the row (a primary-key lookup)."""
        table = self.registry.checked_table(table)
        return _bigint(row_id) and bool(self.existence.stored(table, [row_id]))

    def counted_write(
        self,
        name: str,
        target_id: int,
        statement: sa.Executable,
        delta: int,
        *,
        session: Session,
    ) -> sa.Row | None:
        """Change a counter's source rows and the counter together, so that a reconcile
        never counts the change twice (see ``engine.writes``).

        In ``session``'s transaction: lock the target row, run ``statement`` (an INSERT or
        DELETE … RETURNING of the source row: a like, a comment), add ``delta`` to
        counter ``name`` of ``target_id`` if it returned a row, commit. Returns the row,
        or None when nothing changed; raises TargetMissing when the target is gone.
        """
        table = self.registry.get(name).table
        return writes.counted_write(
            session, table, target_id, statement, delta, lambda d: self.incr(name, target_id, d)
        )

    # -- the existence index ----------------------------------------------------

    def created(self, table: str, ids: Iterable[int]) -> None:
        """Record new rows in the existence index (call before or right after their
        INSERT commits: before, a rolled-back insert only leaves a mark whose deltas the
        flush drops; after, views in between ask Postgres)."""
        self.existence.mark(table, [i for i in ids if _bigint(i)])

    def deleted(self, table: str, ids: Iterable[int]) -> None:
        """Record deleted rows (after their DELETE committed); their pending deltas are
        dropped by the next flush, their read models now."""
        ids = [i for i in ids if _bigint(i)]
        self.existence.unmark(table, ids)
        self.read_model.forget(table, ids)

    def read_model_stats(self) -> dict[str, int]:
        """The read model's reads (``hit``, ``miss``) and fills (``filled``, ``fenced``)
        across every process (engine/readmodel.py), from Redis."""
        return self.read_model.stats()

    def changed(self, table: str, ids: Iterable[int]) -> None:
        """Forget the read models of rows whose columns changed (after the UPDATE
        committed): a page reads them from Postgres again. Counter columns changed
        other than through the engine need it too."""
        self.read_model.forget(self.registry.checked_table(table), [i for i in ids if _bigint(i)])

    def missing_indexes(self) -> list[str]:
        """Indexed tables whose existence index Redis has lost (one round trip each)."""
        return [t for t in self.registry.indexed_tables() if not self.existence.loaded(t)]

    def ensure_index(self, tables: Iterable[str] | None = None) -> dict[str, int]:
        """Load the existence index of each table (default: every indexed table) that
        lacks one; returns rows marked per table loaded. For a background task: a table
        another process is loading (its lock held) is left to that process."""
        done = {}
        for table in tables if tables is not None else self.registry.indexed_tables():
            if self.existence.loaded(table):
                continue
            lock, token = self.keys.rebuilding(table), uuid.uuid4().hex
            with redis_errors("index rebuild lock"):
                if not self.buffer.redis.set(lock, token, nx=True, px=REBUILD_LOCK_TTL_MS):
                    continue
            try:
                done[table] = self.existence.load(table)
                record = {"event": "index_rebuilt", "table": table, "rows": done[table]}
                log.info("%s", json.dumps(record))
            finally:
                with redis_errors("index rebuild lock"):
                    self.buffer._unlock(keys=[lock], args=[token])  # only if still ours
        return done

    def rebuild_index(self, table: str) -> int:
        """Drop and reload the existence index of ``table``: after rows were inserted
        behind the engine's back (a bulk load), or after Redis came back from an old dump
        (clears rows deleted since); returns the rows marked."""
        table = self.registry.checked_table(table)
        self.existence.drop(table)
        return self.existence.load(table)

    # -- reading ----------------------------------------------------------------

    def read(self, table: str, ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Live counts (Postgres + unapplied deltas) of existing rows among ``ids``."""
        return self.live.read(table, [i for i in ids if _bigint(i)])[1]

    def read_rows(
        self, table: str, ids: Sequence[int], columns: Sequence[str]
    ) -> dict[int, tuple[dict[str, int], dict]]:
        """``{id: (live counts, {column: value})}`` of existing rows among ``ids``, counting
        nothing: one Redis round trip and one SQL statement for rows and counts together
        (what a page needs to show a row)."""
        ids = [i for i in ids if _bigint(i)]
        _, counts, rows = self.live.read(self.registry.checked_table(table), ids, columns=columns)
        return {row_id: (counts[row_id], rows[row_id]) for row_id in counts}

    def bump_and_read(
        self, name: str, row_id: int, columns: Sequence[str] = (), visit: Visit | None = None
    ) -> tuple[Outcome, dict[str, int] | None, dict | None]:
        """Count one event on an existing row (under its view policy, given ``visit``);
        return its live counts (including it) and its ``columns``, fetched by the same
        SQL statement (one Redis round trip, one statement). Counts and row are None
        when the row is gone.

        ``Outcome.MISSING`` is confirmed by Postgres (see :meth:`view`): a
        row the index lacks but the table has is counted and read like any other.
        ``Outcome.NOT_LOADED`` means the index is gone and nothing was written.
        """
        counter = self.registry.get(name)
        if not _bigint(row_id):
            return Outcome.MISSING, None, None
        pairs, rule = self._plan(counter, row_id, 1, visit)
        outcome, counts, rows = self.live.read(
            counter.table, [row_id], bump=(pairs, rule), columns=columns
        )
        if outcome is Outcome.MISSING and self._add_if_stored(
            counter, row_id, pairs, rule, outcome
        ):
            outcome = Outcome.COUNTED
            _, counts, rows = self.live.read(counter.table, [row_id], columns=columns)
        return outcome, counts.get(row_id), rows.get(row_id)

    def view_and_read(
        self, name: str, row_id: int, columns: Sequence[str] = (), visit: Visit | None = None
    ) -> tuple[dict[str, int], dict] | None:
        """Count one view of a row (under its view policy, given ``visit``) and return
        ``(live counts including it, {column: value})``, or None when the row does not
        exist (nothing is counted then).

        One Redis round trip and one SQL statement in the normal case; when Redis lost
        the existence index, or it has not caught up with the row, Postgres is asked (as
        in :meth:`view`).
        """
        outcome, counts, row = self.bump_and_read(name, row_id, columns, visit)
        if outcome is Outcome.MISSING:
            return None
        if outcome is Outcome.NOT_LOADED:
            counter = self.registry.get(name)
            pairs, rule = self._plan(counter, row_id, 1, visit)
            if not self._add_if_stored(counter, row_id, pairs, rule, outcome):
                return None
            _, found, rows = self.live.read(counter.table, [row_id], columns=columns)
            counts, row = found.get(row_id), rows.get(row_id)
        if row is None or counts is None:  # deleted meanwhile: its view is dropped at flush
            return None
        return counts, row

    # -- time windows -----------------------------------------------------------

    def window_series(
        self, name: str, row_id: int, window_name: str, *, now: float | None = None
    ) -> Series | None:
        """Counter ``name`` (one with ``buckets``) of a row per bucket of a window
        (``"24h"``, ``"7d"``: per hour; ``"30d"``: per UTC day), oldest first, empty
        buckets included, the current one last; unflushed increments included. None
        when the row does not exist. ``now`` (s since the epoch) picks the current
        bucket; default the clock. UnknownWindow / UnknownCounter for bad names."""
        counter = self.registry.bucketed(name)
        win = window(window_name)
        if not _bigint(row_id):
            return None
        return self.windows.series(counter, row_id, win, current_hour(now))

    def trending(
        self, name: str, window_name: str, limit: int = 20, *, now: float | None = None
    ) -> list[tuple[int, int]]:
        """The ``limit`` existing rows with the most of counter ``name`` (one with
        ``trending``) in window ``"24h"`` or ``"7d"``, unflushed increments included:
        ``[(id, count)]``, most first, ties by highest id first. Rows with none are
        left out. Costs one Redis round trip and one short Postgres snapshot reading
        the kept totals, not the buckets."""
        counter = self.registry.bucketed(name)
        if not counter.trending:
            raise UnknownCounter(f"{name} keeps no trending totals")
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be 1..1000")
        win = window(window_name, trending=True)
        return self.windows.trending(counter, win, limit, current_hour(now))

    def retain(
        self,
        hourly_days: int = HOURLY_RETENTION_DAYS,
        *,
        now: float | None = None,
        chunk_rows: int = CHUNK_ROWS,
    ) -> RetentionResult:
        """Move the trending windows forward, roll hourly buckets older than
        ``hourly_days`` into daily ones, drop daily ones past 400 days (engine/
        retention.py). Safe to run twice, at once, or to kill midway: every chunk is
        one transaction (of at most ``chunk_rows`` buckets) and moves exactly once. ``now``
        (s since the epoch) as in :meth:`window_series`. ``hook`` stages, after each
        commit: windows, hours, days."""
        started = time.perf_counter()
        result = self.retention.run(current_hour(now), hourly_days, chunk_rows)
        record = {"event": "counter_retention", "scope": self.scope, **result.as_dict()}
        record["duration_s"] = round(time.perf_counter() - started, 6)
        log.info("%s", json.dumps(record))
        return result

    # -- flushing and reconciling ------------------------------------------------

    def dirty_shards(self) -> list[int]:
        """Shards holding deltas that Postgres does not have yet (one round trip)."""
        return self.buffer.dirty_shards()

    def flush_shard(self, shard: int) -> ShardFlush | None:
        """Claim and apply one shard's batch, without its flush lock (tests, tools)."""
        return self.flusher.flush_shard(shard)

    def flush_all(self) -> FlushSummary:
        """Flush every dirty shard (see :meth:`flush_shards`)."""
        return self._recorded(self.flusher.flush_all)

    def flush_shards(self, shards: Iterable[int]) -> FlushSummary:
        """Flush a group of shards, each under its flush lock (a shard another flush
        holds is ``skipped``), exactly once. The outcome goes into the shared stats and
        one log line; on failure the error (with ``.summary``) is raised after that."""
        return self._recorded(lambda: self.flusher.flush_shards(shards))

    def _recorded(self, flush) -> FlushSummary:
        try:
            summary = flush()
        except CounterError as exc:
            partial = getattr(exc, "summary", None)
            if partial is not None:
                self._keep(self.stats.record_flush, partial)
            self._log_flush(partial.as_dict() if partial is not None else {"errors": [str(exc)]})
            raise
        record = summary.as_dict()
        self._keep(self.stats.record_flush, summary, record)
        self._log_flush(record)
        return summary

    def _log_flush(self, record: dict) -> None:
        # one line per flush; idle flushes (every couple of seconds) only at DEBUG
        level = logging.INFO if record.get("flushed") or record.get("errors") else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "%s", json.dumps({"event": "flush", "scope": self.scope, **record}))

    def reconcile(
        self, names: Iterable[str] | None = None, ids: Sequence[int] | None = None
    ) -> ReconcileResult:
        """Recount ``names`` (default: every counter with a recount query) for ``ids``
        (default: every row) and correct the drift (see engine.reconcile); kept in the
        shared stats and logged as one line."""
        started = time.perf_counter()
        names = list(names) if names is not None else None
        result = self.reconciler.reconcile(names, ids)
        self._keep(self.stats.record_reconcile, result)
        record = {
            "event": "counter_reconcile",
            "scope": self.scope,
            "counters": names,  # None: every counter
            "rows": None if ids is None else len(ids),  # None: every row
            "duration_s": round(time.perf_counter() - started, 6),
            **result.as_dict(limit=20),
        }
        log.info("%s", json.dumps(record))
        return result

    @staticmethod
    def _keep(record, *outcome) -> None:
        # stats are advisory: losing them must not turn a done flush into a failed one
        try:
            record(*outcome)
        except BufferUnavailable as exc:
            log.warning("could not record counter stats: %s", exc)

    # -- observing --------------------------------------------------------------

    def backlog(self) -> list[dict]:
        """Per shard: pending and inflight counters, inflight seq, oldest delta (ms)."""
        return self.buffer.backlog()

    def buffer_memory(self) -> list[dict]:
        """Per shard: ``bytes`` (MEMORY USAGE), ``encoding`` and ``fields`` of the pending
        hash; what the buffer costs Redis (one round trip)."""
        with redis_errors("buffer memory"):
            pipe = self.buffer.redis.pipeline(transaction=False)
            for s in range(self.shards):
                key = self.keys.pending(s)
                pipe.memory_usage(key, samples=0)
                pipe.object("encoding", key)
                pipe.hlen(key)
            raw = pipe.execute()
        out = []
        for s in range(self.shards):
            usage, encoding, fields = raw[3 * s : 3 * s + 3]
            encoding = encoding.decode() if isinstance(encoding, bytes) else encoding
            out.append({"shard": s, "bytes": usage or 0, "encoding": encoding, "fields": fields})
        return out

    def report(self) -> dict:
        """Backlog, last flush and reconcile, running totals and increments accepted, as
        every process sees them (engine.report)."""
        return report.build(self.registry, self.backlog(), self.shared_stats(), time.time())

    def recent_runs(self, limit: int = 20) -> dict[str, list[dict]]:
        """``{"flush": [...], "reconcile": [...]}``: the last busy flushes and reconciles,
        newest first, as the shared stats recorded them (the last 20 of each are kept)."""
        return self.stats.runs(limit)

    def _sample(self) -> activity.Sample:
        now_s = time.time()
        shared = self.stats.snapshot()
        built = report.build(self.registry, self.backlog(), shared, now_s)
        lag_s = built["oldest_pending_age_s"]
        return activity.Sample(int(now_s * 1000), shared["accepted"], built["pending"], lag_s)

    def record_activity(self) -> bool:
        """Take this minute's sample for :meth:`activity`, unless a process already has
        (one round trip then); for a periodic task: the engine's flush task calls it.
        True when this call took it."""
        if self.activity_series.has_minute(int(time.time() * 1000)):
            return False
        sample = self._sample()
        return any(s == sample for s in self.activity_series.record(sample))

    def activity(self, minutes: int = 60) -> dict:
        """The last ``minutes``, minute by minute, as every process sees it: ``t`` (epoch
        s), ``pending`` counters, ``lag_s`` (age of the oldest pending delta, None when
        nothing is pending) and ``accepted`` ``{"table.column": [increments per minute]}``;
        the last point is now, its increments those of the minute so far (see
        engine.activity). Samples the current minute if no process has yet."""
        now = self._sample()
        kept = self.activity_series.record(now)
        columns = activity.series(kept, now, minutes)
        columns["accepted"] = {
            report.counter_name(self.registry, code): values
            for code, values in columns["accepted"].items()
        }
        return columns

    def shared_stats(self) -> dict:
        """The raw shared totals (engine.stats.Stats.snapshot): what metrics export. What
        rollbacks dropped comes from the ledger; while Postgres is down it is left out."""
        return self.stats.snapshot(self._durable_totals())

    def _durable_totals(self) -> dict[str, int] | None:
        if self.sql is None:
            return None
        try:
            with self.sql.connect() as conn:
                row = conn.execute(lineage.ROLLBACK_TOTALS, {"scope": self.scope}).one()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("stats: the ledger's rollback totals are unavailable: %s", exc)
            return None
        return dict(zip(DURABLE, map(int, row), strict=True))

    def ping(self) -> None:
        """Raise BufferUnavailable unless Redis answers."""
        with redis_errors("ping"):
            self.buffer.redis.ping()

    def close(self) -> None:
        """Close the Redis client's connections (the SQL engine is the caller's)."""
        if self.buffer.wire is not None:
            self.buffer.wire.close()
        self.buffer.redis.close()

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
        target = Buffer(self.buffer.redis, Keys(self.keys.scope, new_shards))
        existence = Existence(target, self.existence.sql)
        index = {}
        for table in self.registry.tables():
            existence.drop(table, span)
            index[table] = existence.load(table)
        self.layout.switch(old, new_shards)
        ReadModel(target).forget_all()  # rows move shards: no read model is kept
        self.layout.set_all(span, str(new_shards))
        result = {"from": old, "to": new_shards, "batches": batches, "index": index}
        log.warning(
            "%s", json.dumps({"event": "counter_reshard", "scope": self.keys.scope, **result})
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
