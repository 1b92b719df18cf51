"""The engine's state as one JSON-ready report: what the admin API, the CLI and the
dashboard show. Built from the shared stats and the backlog, so every process gives the
same answer."""

from __future__ import annotations

from datetime import datetime, timezone

from .registry import Registry


def counter_name(registry: Registry, code: str) -> str:
    """``table.column`` of a counter code, as the registry knows it."""
    counter = registry.by_code(code)
    return counter.name if counter is not None else f"unknown:{code}"


def age_s(ms: int | None, now_s: float) -> float | None:
    return round(max(0.0, now_s - ms / 1000), 3) if ms is not None else None


def _when(last: dict | None, now_s: float) -> dict | None:
    """A last flush/reconcile record with its time as ISO 8601 and its age."""
    if last is None:
        return None
    at = datetime.fromtimestamp(last["at_ms"] / 1000, timezone.utc)
    return {
        **last,
        "at": at.isoformat(timespec="milliseconds"),
        "age_s": age_s(last["at_ms"], now_s),
    }


def build(registry: Registry, shards: list[dict], shared: dict, now_s: float) -> dict:
    """Counters waiting for Postgres (``pending`` includes the ``inflight`` ones), per
    shard with the age of their oldest delta, the last flush and reconcile, the running
    totals and the increments accepted per counter."""
    shards = [{**s, "oldest_age_s": age_s(s["oldest_ms"], now_s)} for s in shards]
    oldest = [s["oldest_ms"] for s in shards if s["oldest_ms"] is not None]
    flushes = shared["flush_buckets"][-1][1]
    accepted = {counter_name(registry, code): n for code, n in sorted(shared["accepted"].items())}
    held: dict[str, dict[str, int]] = {}  # views held back by the policy, per reason
    for name, n in sorted(shared.get("held", {}).items()):
        code, _, reason = name.rpartition(":")
        held.setdefault(counter_name(registry, code), {})[reason] = n
    return {
        "pending": sum(s["pending"] + s["inflight"] for s in shards),
        "inflight": sum(s["inflight"] for s in shards),
        "oldest_pending_age_s": age_s(min(oldest), now_s) if oldest else None,
        "shards": shards,
        "last_flush": _when(shared["last_flush"], now_s),
        "last_reconcile": _when(shared["last_reconcile"], now_s),
        "flush_batch_duration": {
            "count": flushes,
            "sum_s": round(shared["flush_seconds_sum"], 6),
            "mean_s": round(shared["flush_seconds_sum"] / flushes, 6) if flushes else None,
        },
        "totals": shared["totals"],
        "accepted": accepted,
        "held_back": held,
    }
