"""Prometheus metrics of the counter engine, read from Redis at scrape time
(``pip install 'counter-engine[prometheus]'``).

The engine keeps its totals (flushes, batches, reconciles, increments accepted, the
flush-duration histogram) in Redis, not in process memory: a scrape of any gunicorn
worker reads the same numbers, whichever web process counted the increments and
whichever Celery worker flushed them. Nothing here counts anything itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401 - re-exported
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .counters import Counters
from .errors import CounterError
from .report import counter_name

log = logging.getLogger(__name__)

# (stats total, metric name without _total, help)
TOTALS = (
    ("flushes", "counter_flush_runs", "Flushes of all shards (flush_all calls) recorded."),
    ("batches", "counter_flush_batches", "Shard batches applied to Postgres."),
    (
        "batches_already_applied",
        "counter_flush_batches_already_applied",
        "Shard batches found already committed (a redelivered or concurrent flush).",
    ),
    (
        "counters_applied",
        "counter_flush_counters_applied",
        "Counter deltas (one row's column) applied to Postgres.",
    ),
    (
        "claims_resumed",
        "counter_flush_claims_resumed",
        "Inflight batches left by a crashed flush and resumed by a later one.",
    ),
    (
        "rows_missing",
        "counter_flush_rows_missing",
        "Rows deleted before their deltas were flushed.",
    ),
    (
        "deltas_dropped",
        "counter_flush_deltas_dropped",
        "Deltas dropped because their row was deleted (or their counter is unknown); "
        "what rollbacks dropped is counted apart.",
    ),
    (
        "batches_rolled_back",
        "counter_flush_batches_rolled_back",
        "Batches Redis handed out again after coming back older than Postgres (a dump, "
        "a short AOF, a lagging replica): dropped, never applied twice. Counted in the "
        "ledger (Postgres), so another rollback does not take the count back.",
    ),
    (
        "deltas_dropped_rollback",
        "counter_flush_deltas_dropped_rollback",
        "Deltas of those batches: already in Postgres, or lost with Redis' recent past.",
    ),
    ("flush_errors", "counter_flush_errors", "Shards whose flush failed (retried later)."),
    ("reconciles", "counter_reconcile_runs", "Reconcile runs (full or targeted recounts)."),
    ("reconcile_checked", "counter_reconcile_checked", "Counters compared with a recount."),
    ("reconcile_fixed", "counter_reconcile_fixed", "Counters corrected by reconcile."),
    (
        "reconcile_drift_abs",
        "counter_reconcile_drift",
        "Sum of |recount - stored| over the counters reconcile corrected.",
    ),
    (
        "views_unknown",
        "counter_views_unknown",
        "Coalesced views whose push lost its replies: maybe counted, never sent twice.",
    ),
)


def _bucket_bound(bound) -> str:
    return "+Inf" if bound == "inf" else repr(float(bound))


class CountersCollector:
    """A custom collector: every metric is built from ``Counters.shared_stats()`` and
    ``Counters.backlog()`` at collect time; without Redis only ``counter_buffer_up 0``.

    Register it on any ``prometheus_client`` registry, or serve :func:`exposition`."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "counter_buffer_up", "1 when the counter buffer (Redis) answered this scrape."
        )
        try:
            snap = self.counters.shared_stats()
            backlog = self.counters.backlog()
            durability = self.counters.durability()
            read_model = self.counters.read_model_stats()
        except CounterError as exc:
            log.warning("metrics: counter buffer unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now_s = time.time()
        yield from self._durability(durability)
        yield from self._read_model(read_model)
        yield self._accepted(snap["accepted"])
        yield self._held(snap["held"])
        for key, name, doc in TOTALS:
            if key in snap["totals"]:  # the ledger's totals are missing while it is down
                yield CounterMetricFamily(name, doc, value=snap["totals"][key])
        buckets = [(_bucket_bound(b), n) for b, n in snap["flush_buckets"]]
        yield HistogramMetricFamily(
            "counter_flush_duration_seconds",
            "Duration of each shard batch flush (claim, apply in Postgres, release).",
            buckets=buckets,
            sum_value=snap["flush_seconds_sum"],
        )
        yield from self._backlog(backlog, now_s)
        for what, last in (("flush", snap["last_flush"]), ("reconcile", snap["last_reconcile"])):
            if last is not None:
                yield GaugeMetricFamily(
                    f"counter_last_{what}_timestamp_seconds",
                    f"Unix time the last {what} finished.",
                    value=last["at_ms"] / 1000,
                )
        if snap["last_flush"] is not None:
            yield GaugeMetricFamily(
                "counter_last_flush_counters",
                "Counter deltas applied by the last flush.",
                value=snap["last_flush"].get("flushed", 0),
            )

    @staticmethod
    def _durability(report: dict) -> Iterator[Metric]:
        """What each Redis primary of the buffer keeps across a crash (engine.durability)."""
        info = GaugeMetricFamily(
            "counter_redis_info",
            "1 per primary of the counter buffer, with its version and persistence settings.",
            labels=["node", "version", "appendfsync", "maxmemory_policy"],
        )
        flags = {
            "aof": ("counter_redis_aof_enabled", "1 when the primary keeps an append-only file."),
            "waitaof": (
                "counter_redis_waitaof_available",
                "1 when the primary has WAITAOF (a flush waits for its claim's fsync).",
            ),
            "evicts": (
                "counter_redis_may_evict",
                "1 when the primary's maxmemory-policy may evict keys without a TTL.",
            ),
        }
        families = {k: GaugeMetricFamily(n, d, labels=["node"]) for k, (n, d) in flags.items()}
        for node in report["nodes"]:
            policy = str(node["maxmemory_policy"])
            labels = [node["node"], node["version"], str(node["appendfsync"]), policy]
            info.add_metric(labels, 1)
            families["aof"].add_metric([node["node"]], int(node["aof"]))
            families["waitaof"].add_metric([node["node"]], int(node["waitaof"]))
            families["evicts"].add_metric([node["node"]], int(policy.startswith("allkeys")))
        yield info
        yield from families.values()

    @staticmethod
    def _read_model(stats: dict[str, int]) -> Iterator[Metric]:
        reads = CounterMetricFamily(
            "counter_read_model_reads",
            "Row reads that found the row in the read model (hit) or asked Postgres (miss).",
            labels=["result"],
        )
        fills = CounterMetricFamily(
            "counter_read_model_fills",
            "Rows read from Postgres and put in the read model (filled), or not because a "
            "flush or an invalidation raced the read (fenced).",
            labels=["result"],
        )
        for name in ("hit", "miss"):
            reads.add_metric([name], stats[name])
        for name in ("filled", "fenced"):
            fills.add_metric([name], stats[name])
        yield reads
        yield fills

    def _accepted(self, accepted: dict[str, int]) -> Metric:
        family = CounterMetricFamily(
            "counter_increments_accepted",
            "Increments (deltas, +1 or -1) accepted into the buffer, per counter.",
            labels=["counter"],
        )
        for code, n in sorted(accepted.items()):
            family.add_metric([counter_name(self.counters.registry, code)], n)
        return family

    def _held(self, held: dict[str, int]) -> Metric:
        family = CounterMetricFamily(
            "counter_views_held_back",
            "Views the view policy did not count, per counter and reason (deduped: a "
            "repeat within the window, bot: a crawler's, counted apart, self: the author's).",
            labels=["counter", "reason"],
        )
        for name, n in sorted(held.items()):
            code, _, reason = name.rpartition(":")
            family.add_metric([counter_name(self.counters.registry, code), reason], n)
        return family

    @staticmethod
    def _backlog(backlog: list[dict], now_s: float) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "counter_pending_counters",
            "Counters with a delta waiting for the next flush, per shard.",
            labels=["shard"],
        )
        inflight = GaugeMetricFamily(
            "counter_inflight_counters",
            "Counters claimed by a flush and not yet committed, per shard.",
            labels=["shard"],
        )
        for shard in backlog:
            pending.add_metric([str(shard["shard"])], shard["pending"])
            inflight.add_metric([str(shard["shard"])], shard["inflight"])
        oldest = [s["oldest_ms"] for s in backlog if s["oldest_ms"] is not None]
        lag_s = max(0.0, now_s - min(oldest) / 1000) if oldest else 0.0
        yield pending
        yield inflight
        yield GaugeMetricFamily(
            "counter_flush_lag_seconds",
            "Age of the oldest delta not yet in Postgres (pending or inflight); 0 when none.",
            value=lag_s,
        )


def exposition(counters: Counters) -> bytes:
    """The Prometheus text of one scrape.

    A registry per scrape holds only this collector: per-process metrics (CPU, GC) would
    differ from one gunicorn worker to the next, while these never do.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountersCollector(counters))
    return generate_latest(registry)
