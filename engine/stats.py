"""Flush and reconcile totals kept in Redis, so every process (web, workers) reads the
same numbers: a Prometheus exporter in any process can report them.

What a Redis rollback dropped (``DURABLE``) cannot be counted in the Redis that rolled
back: a second restart from an older dump would take the count back. The flush adds it
to the shard's ledger row in Postgres, in the transaction that drops the batch, and
:meth:`Stats.snapshot` reports the ledger's sums (engine/lineage.py ROLLBACK_TOTALS)."""

from __future__ import annotations

import json
from collections import Counter

from .buffer import RoundTrip, now_ms
from .errors import redis_errors
from .keys import Keys

# Upper bounds (s) of the flush-duration histogram buckets; +Inf is implied.
FLUSH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

TOTALS = (
    "flushes",
    "batches",
    "batches_already_applied",
    "claims_resumed",
    "counters_applied",
    "rows_missing",
    "deltas_dropped",  # deleted rows, unknown counters (rollbacks: DURABLE)
    "flush_errors",
    "reconciles",
    "reconcile_checked",
    "reconcile_fixed",
    "reconcile_drift_abs",
    "views_unknown",
)
DURABLE = ("batches_rolled_back", "deltas_dropped_rollback")  # kept in the ledger
RUNS_KEPT = 20  # summaries of the last busy flushes, and of the last reconciles, kept


class Stats:
    def __init__(self, redis, keys: Keys, wire=None) -> None:
        self.redis = redis
        self.wire = wire  # a flush's record goes on the lean connection (engine/wire.py)
        self.key = keys.stats()
        self.keys = keys
        self.runs_key = {kind: keys.runs(kind) for kind in ("flush", "reconcile")}

    def _keep_run(self, trip: RoundTrip, kind: str, record: str) -> None:
        trip.command("LPUSH", self.runs_key[kind], record)
        trip.command("LTRIM", self.runs_key[kind], 0, RUNS_KEPT - 1)

    def record_flush(self, summary, record: dict | None = None) -> None:
        """Add one flush's totals to the running ones and keep its record
        (``summary.as_dict()``, given or made here) as the last."""
        incr = summary.totals()
        last = json.dumps({"at_ms": now_ms(), **(record or summary.as_dict())})
        with redis_errors("record flush stats"):
            trip = RoundTrip(self.redis, self.wire)
            for name, n in incr.items():
                if n:
                    trip.command("HINCRBY", self.key, name, n)
            batches = Counter(
                next((b for b in FLUSH_BUCKETS_S if shard.duration_s <= b), "inf")
                for shard in summary.shards
            )
            for bucket, n in batches.items():
                trip.command("HINCRBY", self.key, f"flush_le_{bucket}", n)
            if summary.shards:
                seconds = sum(shard.duration_s for shard in summary.shards)
                trip.command("HINCRBYFLOAT", self.key, "flush_seconds_sum", seconds)
            if summary.shards or summary.errors:  # an idle flush keeps the last busy one
                trip.command("HSET", self.key, "last_flush", last)
                self._keep_run(trip, "flush", last)
            trip.execute()

    def record_unknown(self, n: int) -> None:
        """``n`` increments that may or may not have been applied (a push whose replies
        were lost): never sent again, counted here so the loss shows."""
        with redis_errors("record unknown views"):
            self.redis.hincrby(self.key, "views_unknown", n)

    def record_reconcile(self, result) -> None:
        drift = sum(abs(f.now - f.was) for f in result.fixes)
        last = json.dumps({"at_ms": now_ms(), **result.as_dict(limit=20)})
        with redis_errors("record reconcile stats"):
            trip = RoundTrip(self.redis, self.wire)
            trip.command("HINCRBY", self.key, "reconciles", 1)
            trip.command("HINCRBY", self.key, "reconcile_checked", result.checked)
            trip.command("HINCRBY", self.key, "reconcile_fixed", len(result.fixes))
            trip.command("HINCRBY", self.key, "reconcile_drift_abs", drift)
            trip.command("HSET", self.key, "last_reconcile", last)
            self._keep_run(trip, "reconcile", last)
            trip.execute()

    def snapshot(self, durable: dict[str, int] | None = None) -> dict:
        """Totals, flush histogram (cumulative per bucket), last flush/reconcile, and
        increments accepted per counter code and views held back per ``"<code>:<reason>"``
        (summed over shards). ``durable``: the ledger's ``DURABLE`` totals; without them
        (no Postgres, or it is down) those totals are left out rather than reported as 0."""
        with redis_errors("read stats"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(self.key)
            for s in range(self.keys.shards):
                pipe.hgetall(self.keys.accepted(s))
            for s in range(self.keys.shards):
                pipe.hgetall(self.keys.held(s))
            raw, *by_shard = pipe.execute()
        accepted_by_shard, held_by_shard = (
            by_shard[: self.keys.shards],
            by_shard[self.keys.shards :],
        )
        raw = {k.decode(): v.decode() for k, v in raw.items()}
        accepted: dict[str, int] = {}
        for shard in accepted_by_shard:
            for code, n in shard.items():
                accepted[code.decode()] = accepted.get(code.decode(), 0) + int(n)
        held: dict[str, int] = {}  # "<code>:<reason>" -> views held back (engine/policy.py)
        for shard in held_by_shard:
            for name, n in shard.items():
                held[name.decode()] = held.get(name.decode(), 0) + int(n)
        buckets, running = [], 0
        for b in (*FLUSH_BUCKETS_S, "inf"):
            running += int(raw.get(f"flush_le_{b}", 0))
            buckets.append((b, running))
        return {
            "totals": {name: int(raw.get(name, 0)) for name in TOTALS} | (durable or {}),
            "flush_seconds_sum": float(raw.get("flush_seconds_sum", 0.0)),
            "flush_buckets": buckets,
            "last_flush": json.loads(raw["last_flush"]) if "last_flush" in raw else None,
            "last_reconcile": (
                json.loads(raw["last_reconcile"]) if "last_reconcile" in raw else None
            ),
            "accepted": accepted,
            "held": held,
        }

    def runs(self, limit: int = RUNS_KEPT) -> dict[str, list[dict]]:
        """``{"flush": [...], "reconcile": [...]}``: the last ``limit`` busy flushes and
        reconciles, newest first, each as recorded (``at_ms`` and its summary)."""
        with redis_errors("read runs"):
            pipe = self.redis.pipeline(transaction=False)
            for key in self.runs_key.values():
                pipe.lrange(key, 0, limit - 1)
            raw = pipe.execute()
        return {
            kind: [json.loads(r) for r in records]
            for kind, records in zip(self.runs_key, raw, strict=True)
        }
